"""Every notebook in notebooks/ runs top to bottom in a real kernel, as a reader would run it."""

import json
from pathlib import Path

import pytest
from conftest import DATA_DIR, ROOT, need_data, run_cli

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
    need_data("MNIST")
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


# A notebook's own classes: a net, a callback and a data module defined in its cells.
OWN_CLASSES = [
    """\
import lightning.pytorch as L
from torch import nn

import litlab
from litlab.data import MNISTDataModule


class NbNet(nn.Sequential):
    def __init__(self, input_shape, num_classes, width: int = 32):
        pixels = input_shape[0] * input_shape[1] * input_shape[2]
        super().__init__(
            nn.Flatten(), nn.Linear(pixels, width), nn.ReLU(), nn.Linear(width, num_classes)
        )


EPOCHS_SEEN = []


class EpochsSeen(L.Callback):
    def on_train_epoch_end(self, trainer, module):
        EPOCHS_SEEN.append(trainer.current_epoch)


class FewLabels(MNISTDataModule):
    def __init__(self, *, keep: int = 2000, **settings):
        super().__init__(**settings | {"labelled": keep})
""",
    """\
overrides = [
    "model=classifier",
    "+model.net._target_=__main__.NbNet",
    "+model.net.input_shape=${data.input_shape}",
    "+model.net.num_classes=${data.num_classes}",
    "+model.net.width=24",
    "+callbacks.seen._target_=__main__.EpochsSeen",
    "data._target_=__main__.FewLabels",
    "+data.keep=3000",
    "trainer.max_epochs=1",
]
try:  # checked against the live class: a misspelt setting is one line
    litlab.train(litlab.compose("train", [*overrides, "+model.net.widht=3"]))
except litlab.LitlabError as err:
    print("refused:", err)
run = litlab.train(litlab.compose("train", overrides))
print("trained:", run.run_dir, run["test/acc"])
assert EPOCHS_SEEN == [0]
""",
]


def test_a_notebook_trains_the_classes_it_defines(tmp_path, monkeypatch, mnist):
    (tmp_path / "data").symlink_to(DATA_DIR)
    monkeypatch.setenv("LITLAB_ROOT", str(tmp_path))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in OWN_CLASSES])
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    )
    client.execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[1].outputs)
    refused = next(line for line in printed.splitlines() if line.startswith("refused:"))
    assert "model.net.widht is not a setting of __main__.NbNet" in refused
    assert "(it takes input_shape, num_classes, width)" in refused
    trained = next(line for line in printed.splitlines() if line.startswith("trained:"))
    run_dir, accuracy = trained.split()[1:]
    assert float(accuracy) > 0.5  # 3,000 labels, one epoch: a net that learns nothing gets 0.1

    # Another process knows nothing of the notebook's classes: one line says where they were.
    for tool, args in [
        ("litlab-train", ["resume=auto", f"hydra.run.dir={run_dir}"]),
        ("litlab-eval", [f"run_dir={run_dir}", f"hydra.run.dir={tmp_path / 'eval'}"]),
    ]:
        result = run_cli(tool, *args)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
        assert "__main__.NbNet" in lines[0] and "notebook or script" in lines[0], lines[0]
        assert "my_nets.py" in lines[0]
