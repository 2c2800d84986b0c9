"""Every notebook in notebooks/ runs top to bottom on CPU and saves its figures as PNG."""

import pathlib
import re
import shutil

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((pathlib.Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
# a notebook starts its own local Ray: keep it off the xdist worker that holds the test session's
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("notebooks")]


def test_there_are_notebooks():
    assert {p.name for p in NOTEBOOKS} >= {"quickstart.ipynb", "implementations.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_saves_its_figures(path, tmp_path, monkeypatch):
    # run a copy, so the committed notebook and figures are left as they are
    shutil.copy(path, tmp_path / path.name)
    notebook = nbformat.read(tmp_path / path.name, as_version=4)
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("PYTHONWARNINGS", "ignore")
    client = nbclient.NotebookClient(
        notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, on any error
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    figures = re.findall(r'savefig\("([^"]+\.png)"', source)
    assert figures, f"{path.name} saves no figure"
    for name in figures:
        png = tmp_path / name
        assert png.is_file() and png.stat().st_size > 5_000, f"{name} missing or empty"
        assert (path.parent / name).is_file(), f"{name} is not committed next to {path.name}"
    errors = [o for c in notebook.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
