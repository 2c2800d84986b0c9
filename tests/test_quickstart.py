"""The README's quick start and examples/quickstart.py run and give the shapes they promise."""

import json
import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_ENABLE_X64": "0"}


def _readme_block(after: str, lang: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(after)
    match = re.search(rf"```{lang}\n(.*?)```", text[start:], re.S)
    return match.group(1)


def test_readme_quick_start_runs_with_the_commented_shapes():
    code = _readme_block("## Quick start", "python")
    code += (
        "\nimport json\nprint(json.dumps({'test_train': nt_test_train.shape, "
        "'ntk': k.ntk.shape, 'nngp': k.nngp.shape, 'diag': nngp_diag.shape}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=ENV, capture_output=True, text=True, check=True
    )
    shapes = json.loads(out.stdout.strip().splitlines()[-1])
    assert shapes == {
        "test_train": [5, 20],
        "ntk": [5, 20, 10, 10],
        "nngp": [5, 20, 10, 10],
        "diag": [20],
    }
    assert "# (5, 20)" in code and "(5, 20, 10, 10)" in code and "# (20,)" in code


def test_example_script_prints_the_shapes():
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py")],
        env=ENV,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "ntk test-train: (5, 20)" in out
    assert "ntk, nngp with trace_axes=(): (5, 20, 10, 10) (5, 20, 10, 10)" in out
    assert "nngp diagonal: (20,)" in out


def test_readme_commands_are_the_ones_ci_runs():
    quick = _readme_block("<!-- ci:quickstart -->", "bash")
    test = _readme_block("<!-- ci:test -->", "bash")
    assert "bigntk build configs/" in quick and "pip install -e ." in quick
    assert "pytest" in test and "'.[dev]'" in test
    assert "ci:test" in (ROOT / ".ci" / "run").read_text()
