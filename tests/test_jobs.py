"""The cluster definitions in jobs/: they parse, and every bigntk command in them is real.

Nothing is launched; the Ray cluster-launcher files are checked against the
schema of the installed Ray, the RayJob's entry point against bigntk's own
argument parser and its config against bigntk's config validation.
"""

import json
import pathlib
import re
import shlex
import subprocess

import pytest
import yaml

import bigntk.cli
from bigntk.config import parse_config
from bigntk.config._submit import job_config

ROOT = pathlib.Path(__file__).resolve().parent.parent
JOBS = ROOT / "jobs"
YAMLS = sorted(JOBS.glob("*.yaml"))
FILES = sorted(p for p in JOBS.iterdir() if p.is_file())
COMMANDS = {"build", "status", "info", "verify", "plan", "submit"}


def _docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _bigntk_commands(text: str) -> list[list[str]]:
    """Each `bigntk <command> ...` command line (continuations joined), split into arguments.

    A command line starts a line (after ``#`` or ``$`` in comments and docs) or an
    ``entrypoint:``; prose that mentions bigntk is not one.
    """
    lines = re.sub(r"\\\n\s*#?\s*", " ", text).splitlines()
    start = re.compile(r"^\s*(?:#\s*|\$\s*|entrypoint:\s*|-\s+)?bigntk ([a-z-]+)(.*)$")
    found = []
    for line in lines:
        match = start.match(line)
        if match:
            rest = re.split(r"\s+#|`|\|\||&&|;", match.group(2))[0]
            found.append([match.group(1), *shlex.split(rest)])
    return found


def test_the_expected_definitions_are_there():
    names = {p.name for p in FILES}
    assert {"README.md", "aws-gpu.yaml", "gcp-tpu.yaml", "kuberay-rayjob.yaml"} <= names
    assert "slurm-build.sh" in names
    for path in FILES:
        assert path.name == "README.md" or "FILL IN" in path.read_text(), path


@pytest.mark.parametrize("path", YAMLS, ids=lambda p: p.name)
def test_every_yaml_parses(path):
    assert _docs(path)


@pytest.mark.parametrize("name", ["aws-gpu.yaml", "gcp-tpu.yaml"])
def test_cluster_launcher_files_match_rays_schema(name):
    jsonschema = pytest.importorskip("jsonschema")
    import ray.autoscaler

    (config,) = _docs(JOBS / name)
    schema = json.loads(
        (pathlib.Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text()
    )
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    assert config["available_node_types"][config["head_node_type"]]["resources"] == {"CPU": 0}
    setup = " ".join(config["setup_commands"])
    assert "pip install" in setup and "bigntk[" in setup
    assert any("ray start --head" in c for c in config["head_start_ray_commands"])


def test_rayjob_runs_a_valid_build_config():
    config_map, job = _docs(JOBS / "kuberay-rayjob.yaml")
    assert (config_map["kind"], job["kind"], job["apiVersion"]) == (
        "ConfigMap",
        "RayJob",
        "ray.io/v1",
    )
    spec = job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[:2] == ["bigntk", "build"]
    bigntk.cli._parser().parse_args(argv[1:])  # a valid bigntk command line
    # the config file it names is the ConfigMap's key, mounted on the head (the driver)
    head = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    (mount,) = head["containers"][0]["volumeMounts"]
    (volume,) = [v for v in head["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    config_file = pathlib.PurePosixPath(argv[2])
    assert str(config_file.parent) == mount["mountPath"]
    raw = yaml.safe_load(config_map["data"][config_file.name])
    config = parse_config(raw, "kuberay-rayjob.yaml")
    assert config.address == "auto" and config.path.startswith("s3://")
    assert any(p.startswith("bigntk[s3]") for p in yaml.safe_load(spec["runtimeEnvYAML"])["pip"])


def test_slurm_script_is_valid_bash_starting_ray_then_building():
    script = (JOBS / "slurm-build.sh").read_text()
    subprocess.run(["bash", "-n", str(JOBS / "slurm-build.sh")], check=True)
    assert "#SBATCH --nodes" in script
    assert script.index("ray start --head") < script.index("ray start --address")
    assert script.index("ray start --address") < script.rindex("bigntk build")


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_bigntk_commands_are_real_and_name_existing_configs(path, monkeypatch):
    monkeypatch.chdir(ROOT)  # configs are named relative to the repository root
    text = path.read_text()
    commands = _bigntk_commands(text)
    assert commands, f"{path.name} shows no bigntk command"
    parser = bigntk.cli._parser()
    for argv in commands:
        assert argv[0] in COMMANDS, argv
        argv = [a.replace("$CONFIG", "configs/cifar_synthetic.yaml") for a in argv]
        args = parser.parse_args(argv)  # exits (SystemExit 2) on an unknown option
        config = getattr(args, "config", None)
        if config and not config.startswith("/"):  # the config, with the --set overrides
            job_config(config, args.set)  # raises ConfigError naming the field
    for name in re.findall(r"\bconfigs/[\w.-]+\.ya?ml", text):
        assert (ROOT / name).is_file(), f"{path.name} names {name}, which does not exist"
