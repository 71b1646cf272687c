"""A trained run's net for other runtimes: ONNX, TorchScript or a torch.export program, with a
metadata file saying how to feed it (input shapes, normalization, class names, tokenizer), as
the run's DataModule describes its inputs.

Image nets go out as they are: float images [batch, C, H, W], normalized as in training, to
logits. Recurrent text nets take (tokens [batch, length], lengths [batch]) through
`PaddedRecurrent`, one-directional ones only. Every artifact is loaded back in its runtime and
checked against PyTorch on a batch of another size (and lengths).
"""

import json
import logging
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from hydra.utils import instantiate
from torch import nn

from litlab.data.base import Modality, trained_data
from litlab.errors import LitlabError, first_line
from litlab.files import atomic_write
from litlab.inference.runs import load_run
from litlab.nets.recurrent import RecurrentClassifier

FILES = {"onnx": "model.onnx", "torchscript": "model.pt", "exported_program": "model.pt2"}
TOLERANCE = 1e-4


class PaddedRecurrent(nn.Module):
    """A one-directional `RecurrentClassifier` with `tokens` and `lengths` as two inputs.

    Its layers run over the padded batch and are read at each sequence's last real step,
    which the exporters trace; how a bidirectional net runs its reverse direction, they do not.
    """

    def __init__(self, net: RecurrentClassifier):
        super().__init__()
        if any(layer.bidirectional for layer in net.layers):
            raise LitlabError(
                "a bidirectional recurrent net cannot be exported: the exporters fail on its "
                "reverse direction (each sequence flipped within its length, through a "
                "one-directional layer lent its weights); train with "
                "model.net.bidirectional=false to export"
            )
        self.net = net

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.net((tokens, lengths))


def exportable(cfg, net: nn.Module, data: Modality | None = None) -> tuple[nn.Module, dict]:
    """The module to export (the net; recurrent ones fed by tokens and lengths), and how to feed
    it, as the run's DataModule (`data`, else built from `cfg.data`) describes its inputs."""
    spec = (data or instantiate(cfg.data)).export_signature()
    if not isinstance(net, RecurrentClassifier):
        return net.eval(), spec
    if net.compiled:  # the same weights through torch's cells, which the exporters know
        twin = instantiate(cfg.model.net, cell_impl="torch")
        twin.load_state_dict(net.state_dict())
        net = twin
    return PaddedRecurrent(net).eval(), spec


@contextmanager
def recurrences_as_loops():
    """torch.export traces LSTM and GRU layers as while loops, not unrolled over the example's
    length, so the sequence length stays dynamic. Its patch leaves the ops' dispatch caches
    alone: they are cleared so that it takes effect after an earlier export in this process."""
    from torch.export._patches import (
        register_gru_while_loop_decomposition,
        register_lstm_while_loop_decomposition,
    )

    ops = (torch.ops.aten.lstm.input, torch.ops.aten.gru.input)
    with register_lstm_while_loop_decomposition(), register_gru_while_loop_decomposition():
        for op in ops:
            op._dispatch_cache.clear()
        try:
            yield
        finally:
            for op in ops:
                op._dispatch_cache.clear()


def write_artifact(module: nn.Module, spec: dict, fmt: str, path: Path) -> None:
    example, dynamic = spec["example"], spec["dynamic"]
    if fmt == "onnx":
        for name in ("onnx_ir", "onnxscript"):  # a line per optimization pass otherwise
            logging.getLogger(name).setLevel(logging.WARNING)
        torch.onnx.export(
            module,
            example,
            str(path),
            dynamo=True,
            dynamic_shapes=dynamic,
            input_names=[i["name"] for i in spec["inputs"]],
            output_names=["logits"],
            external_data=False,  # one self-contained file
            verbose=False,
        )
    elif fmt == "torchscript":
        torch.jit.trace(module, example).save(str(path))
    else:
        with recurrences_as_loops():
            program = torch.export.export(module, example, dynamic_shapes=dynamic)
        torch.export.save(program, str(path))


def run_artifact(fmt: str, path: Path, inputs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """The logits the exported file gives for `inputs`, run in its own runtime."""
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
        feed = {name: x.numpy() for name, x in zip(names, inputs, strict=True)}
        return torch.from_numpy(session.run(None, feed)[0])
    if fmt == "torchscript":
        return torch.jit.load(str(path))(*inputs)
    return torch.export.load(str(path)).module()(*inputs)


def metadata(run, data, fmt: str, spec: dict, difference: float) -> dict:
    """What a runtime needs to know to feed the artifact and read its answer."""
    return {
        "format": fmt,
        "file": FILES[fmt],
        "run_dir": str(run.run_dir),
        "checkpoint": str(run.checkpoint),
        "net": run.config.model.net._target_,
        "inputs": spec["inputs"],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": ["batch", "classes"]}],
        "max_abs_difference_from_pytorch": difference,
        **data.export_metadata(),
    }


def export(
    run_dir=None, fmt: str = "onnx", ckpt_path=None, out_dir=None, trust_run: bool = False
) -> Path:
    """Write `<run>/export/<format>/` (or `out_dir`): the artifact, metadata.json and, for text,
    the tokenizer. Returns the artifact's path. `trust_run`: see load_run."""
    if fmt not in FILES:
        raise LitlabError(f"unknown format={fmt!r}; choose one of {', '.join(FILES)}")
    run = load_run(run_dir, ckpt_path, classifier=True, trust_run=trust_run)
    net = run.config.model.net._target_
    data = trained_data(run.config.data)
    module, spec = exportable(run.config, run.model.net, data)
    out = Path(out_dir) if out_dir else run.run_dir / "export" / fmt
    out.mkdir(parents=True, exist_ok=True)
    partial = out / f".partial.{FILES[fmt]}"  # a failed export leaves an earlier one alone
    try:
        with warnings.catch_warnings():  # the exporters' notes to PyTorch's own developers
            warnings.simplefilter("ignore")
            write_artifact(module, spec, fmt, partial)
            with torch.no_grad():
                expected = module(*spec["check"])
                got = run_artifact(fmt, partial, spec["check"])
        difference = float((got - expected).abs().max()) if got.shape == expected.shape else None
    except Exception as err:  # the exporters and runtimes raise many kinds
        partial.unlink(missing_ok=True)
        raise LitlabError(
            f"{net} does not export to {fmt} ({type(err).__name__}: {first_line(err)}); "
            "try another format="
        ) from err
    if difference is None or difference > TOLERANCE:
        partial.unlink()
        raise LitlabError(
            f"the {fmt} export of {net} does not reproduce PyTorch on another batch size or "
            f"sequence length (largest difference {difference}); try another format="
        )
    path = partial.replace(out / FILES[fmt])
    for file in data.export_files():
        shutil.copyfile(file, out / file.name)
    info = metadata(run, data, fmt, spec, difference)
    atomic_write(out / "metadata.json", json.dumps(info, indent=2) + "\n")
    return path
