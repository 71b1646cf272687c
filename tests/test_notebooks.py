"""Every notebook in notebooks/ runs top to bottom in a real kernel, as a reader would run it."""

import json
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT

nbclient = pytest.importorskip("nbclient", reason="pip install 'litlab[notebooks]'")
nbformat = pytest.importorskip("nbformat", reason="pip install 'litlab[notebooks]'")

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_notebooks_are_kept_without_outputs():
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs(path: Path, tmp_path, monkeypatch):
    if not (DATA_DIR / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").is_file():
        pytest.skip("MNIST is missing: run `make data` (make test does) to fetch it")
    # The notebooks write their runs under LITLAB_ROOT: a fresh one, reading the fetched data.
    (tmp_path / "data").symlink_to(DATA_DIR)
    monkeypatch.setenv("LITLAB_ROOT", str(tmp_path))
    # Small nets on a shared machine: one thread, so OpenMP does not spin against other work.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": path.parent}}
    )
    client.execute()  # raises CellExecutionError, with the cell and its traceback, on failure

    for cell in notebook.cells:  # every picture shows (no backend switched away under it)
        if cell.cell_type == "code" and ("plt.show()" in cell.source or "Image(" in cell.source):
            shown = [o for o in cell.outputs if "image/png" in o.get("data", {})]
            assert shown, f"{path.name}: no picture from\n{cell.source}"

    logs = tmp_path / "logs" / "train"
    runs = sorted([*logs.glob("runs/*/metrics.json"), *logs.glob("multiruns/*/*/metrics.json")])
    assert runs, "the notebook trained nothing under LITLAB_ROOT"
    if path.stem == "01_quickstart":  # the real MNIST, as the notebook says
        assert json.loads(runs[-1].read_text())["metrics"]["test/acc"] >= 0.95
