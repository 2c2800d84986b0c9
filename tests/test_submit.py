"""``bigntk submit`` without a cluster: the job's config, requirements, shipped modules, CLI errors.

Submitting to a real multi-node cluster, following a job and resuming are in
``tests/test_multinode.py``.
"""

import importlib.metadata
import os
import pathlib
import subprocess

import pytest
import yaml

from bigntk.cli import main
from bigntk.config._submit import (
    _LAUNCHER,
    JOB_CONFIG,
    _copy_local_module,
    auth_token,
    default_pip,
    job_config,
)
from bigntk.errors import ConfigError

VERSION = importlib.metadata.version("bigntk")


def _write(path: pathlib.Path, config: dict) -> pathlib.Path:
    path.write_text(yaml.safe_dump(config))
    return path


def test_job_config_resolves_paths_here_and_joins_the_cluster(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.npy").write_bytes(b"")  # only its existence is checked here
    cfg = _write(
        tmp_path / "c.yaml",
        {
            "model": {"stax": ["Relu"]},
            "data": {"x1": "x.npy", "x2": "s3://bucket/x2.zarr"},
            "output": {"path": "out/k.zarr"},
            "ray": {"address": "ray://elsewhere:10001", "workers": 4},
        },
    )
    raw, parsed = job_config(cfg, ["tiling.block_size=64", "ray.num_gpus=0.5"])
    assert raw["data"]["x1"] == str(tmp_path / "x.npy") == parsed.x1
    assert raw["data"]["x2"] == "s3://bucket/x2.zarr"
    assert raw["output"]["path"] == str(tmp_path / "out" / "k.zarr")
    assert raw["ray"] == {"address": "auto", "workers": 4, "num_gpus": 0.5}
    assert raw["tiling"] == {"block_size": 64}
    assert parsed.worker_resources == {"num_gpus": 0.5}
    # what the job runs is a valid config in its own right
    _write(tmp_path / JOB_CONFIG, raw)
    from bigntk.config import load_config

    assert load_config(tmp_path / JOB_CONFIG).path == parsed.path


def test_job_config_is_checked_before_submitting(tmp_path):
    cfg = _write(
        tmp_path / "c.yaml",
        {"model": {"stax": ["Relu"]}, "data": {"x1": "nope.npy"}, "output": {"path": "k.zarr"}},
    )
    with pytest.raises(ConfigError, match=r"c\.yaml: data\.x1: expected an existing"):
        job_config(cfg)
    with pytest.raises(ConfigError, match="ray: num_gpus must be a fraction below 1"):
        job_config(
            _write(
                tmp_path / "d.yaml",
                {
                    "model": {"stax": ["Relu"]},
                    "data": {"x1": {"builtin": "digits"}},
                    "output": {"path": "k.zarr"},
                },
            ),
            ["ray.num_gpus=1.5"],
        )
    with pytest.raises(ConfigError, match="no such config file"):
        job_config(tmp_path / "missing.yaml")


def test_default_pip_pins_this_version_with_the_extras_urls_need():
    assert default_pip(["/shared/k.zarr"]) == [f"bigntk=={VERSION}"]
    assert default_pip(["s3://b/k.zarr", "gs://b/x.zarr", "/x.npy"]) == [
        f"bigntk[gcs,s3]=={VERSION}"
    ]


def test_entry_point_modules_in_the_current_directory_are_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mymodel.py").write_text("def model():\n    pass\n")
    (tmp_path / "mypkg" / "sub").mkdir(parents=True)
    (tmp_path / "mypkg" / "__init__.py").write_text("")
    (tmp_path / "mypkg" / "sub" / "nets.py").write_text("def model():\n    pass\n")
    staging = tmp_path / "staging"
    staging.mkdir()
    _copy_local_module("mymodel:model", staging)
    _copy_local_module("mypkg.sub.nets:model", staging)
    _copy_local_module("yaml:safe_load", staging)  # installed: the cluster provides it
    shipped = sorted(str(p.relative_to(staging)) for p in staging.rglob("*.py"))
    assert shipped == ["mymodel.py", "mypkg/__init__.py", "mypkg/sub/nets.py"]


def test_cli_errors_are_one_line_with_the_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("BIGNTK_NO_SUCH_VAR", raising=False)
    cfg = _write(
        tmp_path / "c.yaml",
        {"model": {"stax": ["Relu"]}, "data": {"x1": {"builtin": "digits"}},
         "output": {"path": str(tmp_path / "k.zarr")}},
    )  # fmt: skip
    assert main(["submit", str(cfg)]) == 2
    assert "--address http://HEAD:8265" in capsys.readouterr().err
    args = ["submit", str(cfg), "--address", "http://127.0.0.1:9"]
    assert main([*args, "--env", "BIGNTK_NO_SUCH_VAR"]) == 2
    assert "give --env BIGNTK_NO_SUCH_VAR=VALUE" in capsys.readouterr().err
    assert main([*args, "--set", "kernel.kinds=[x]"]) == 2  # checked before connecting
    assert "kernel.kinds" in capsys.readouterr().err
    assert main([*args, "--no-pip"]) == 1  # nothing listens on port 9
    err = capsys.readouterr().err
    assert err.startswith("bigntk: error:") and len(err.strip().splitlines()) == 1


def test_the_cluster_token_is_found_as_rays_clients_find_it(tmp_path):
    """RAY_AUTH_MODE unset is the case Ray's job SDK gets wrong: the token is still sent."""
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("home-token\n")
    (tmp_path / "other").write_text("path-token")
    home = {"HOME": str(tmp_path)}
    assert auth_token(home) == "home-token"
    assert auth_token({**home, "RAY_AUTH_TOKEN_PATH": str(tmp_path / "other")}) == "path-token"
    assert auth_token({**home, "RAY_AUTH_TOKEN": " env-token "}) == "env-token"
    assert auth_token({**home, "RAY_AUTH_MODE": "disabled"}) is None
    assert auth_token({**home, "RAY_AUTH_MODE": "token"}) == "home-token"
    assert auth_token({"HOME": str(tmp_path / "nowhere")}) is None


def test_the_job_script_finds_the_clusters_python_without_bigntk_on_path(tmp_path):
    """Run from a process that loaded Ray (as the job supervisor is), with a PATH holding no
    bigntk: the script finds this environment's Python through Ray's loaded library, and
    bigntk itself answers (a missing config: exit status 2, bigntk's message)."""
    import ray  # noqa: F401  (maps ray/_raylet.so into this process, the script's parent)

    script = tmp_path / "bigntk_job.sh"
    script.write_text(_LAUNCHER.replace("__CONFIG__", "missing.yaml"))
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "JAX_PLATFORMS": "cpu"}
    if "PYTHONPATH" in os.environ:  # a checkout other than the installed one
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    run = subprocess.run(["sh", str(script)], env=env, cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 2, run.stdout + run.stderr
    assert "no such config file" in run.stderr and "missing.yaml" in run.stderr

    # nothing to find: a clear message instead of "bigntk: not found"
    run = subprocess.run(["env", "-i", "PATH=/nonexistent", "/bin/sh", str(script)],
                         cwd=tmp_path, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "no Python with bigntk found" in run.stderr, run.stderr
