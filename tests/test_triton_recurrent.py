"""The Triton recurrence (`cell_impl=triton`) equals torch's layers: outputs, last states and
gradients, on a GPU and, on a CPU, in Triton's interpreter (numpy, one program at a time, so
the sizes stay small). Its kernels never read TRITON_INTERPRET when they are built: the
variable is set only for these tests, as the opt-in for CPU tensors."""

import logging
import os
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, compose, run_cli
from hydra.utils import instantiate
from omegaconf import open_dict
from test_kernels import NO_GPU, ragged_batch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from litlab.errors import LitlabError
from litlab.inference.export import exportable
from litlab.kernels import CompiledRecurrent
from litlab.kernels.recurrent import CELLS
from litlab.kernels.triton_recurrent import TritonRecurrent, fits_on_chip, precision
from litlab.nets import RecurrentClassifier

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=CUDA)])
def device(request, monkeypatch) -> torch.device:
    """Where a test runs: a CPU in the interpreter, a GPU natively; fp32 exact on both
    (cuDNN's TF32 off for the reference, torch's matmul precision "highest" for the kernels)."""
    if request.param == "cpu":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    assert precision() == "ieee"
    return torch.device(request.param)


def triton_twins(cell: str, device, **kwargs) -> tuple[RecurrentClassifier, RecurrentClassifier]:
    """A torch-cell net and a Triton net holding the same weights."""
    torch.manual_seed(0)
    options = dict(vocab_size=50, num_classes=3, embedding_dim=8, hidden_size=6, cell=cell)
    eager = RecurrentClassifier(**options, **kwargs).to(device)
    fast = RecurrentClassifier(**options, cell_impl="triton", **kwargs)
    assert all(isinstance(layer, TritonRecurrent) for layer in fast.layers)
    fast.load_state_dict(eager.state_dict())
    return eager, fast.to(device)


@pytest.mark.parametrize(
    "cell, bidirectional, hidden",
    [
        (cell, bidirectional, 10)
        for cell in ("lstm", "gru", "rnn")
        for bidirectional in (False, True)
    ]
    + [("lstm", True, 40)],  # the largest tile here: 64 units
)
def test_a_triton_layer_equals_torch_packed_sequences(cell, bidirectional, hidden, device):
    """Ragged lengths over two programs' batch tiles, hidden units not a power of two."""
    torch.manual_seed(0)
    batch, steps = 20, 7
    reference = CELLS[cell](6, hidden, batch_first=True, bidirectional=bidirectional)
    layer = TritonRecurrent(cell, 6, hidden, bidirectional=bidirectional)
    layer.load_state_dict(reference.state_dict())
    reference, layer = reference.to(device), layer.to(device)
    lengths = torch.randint(1, steps + 1, (batch,))
    lengths[0] = steps
    x = torch.randn(batch, steps, 6, device=device, requires_grad=True)
    real = (torch.arange(steps) < lengths[:, None])[..., None].to(device)
    out, last = layer(x, lengths)
    packed, state = reference(pack_padded_sequence(x, lengths, True, enforce_sorted=False))
    expected_out = pad_packed_sequence(packed, batch_first=True, total_length=steps)[0]
    expected_last = torch.cat(list(state[0] if cell == "lstm" else state), dim=-1)
    torch.testing.assert_close(out * real, expected_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last, expected_last, rtol=1e-5, atol=1e-6)
    weights = torch.randn_like(out)  # every output step weighs differently in the loss
    grads = torch.autograd.grad(
        (out * real * weights).sum() + last.square().sum(), [x, *layer.parameters()]
    )
    expected = torch.autograd.grad(
        (expected_out * weights).sum() + expected_last.square().sum(),
        [x, *reference.parameters()],
    )
    for grad, expected_grad in zip(grads, expected, strict=True):
        assert_close_to_scale(grad, expected_grad)


def assert_close_to_scale(actual, expected, rel=1e-5, atol=1e-6):
    """Within `rel` of the tensor's largest entry (plus fp32 rounding, `atol`): gradients
    summed over steps in another order differ that much where terms cancel; torch's own fp32
    layers differ as much from float64, and so do these kernels."""
    scale = float(expected.detach().abs().max())
    torch.testing.assert_close(actual, expected, rtol=0, atol=atol + rel * scale)


@pytest.mark.parametrize(
    "cell, kwargs",
    [
        ("lstm", {"keras_compatible": True, "num_layers": 2}),
        ("lstm", {"bidirectional": True, "num_layers": 2}),
        ("gru", {"keras_compatible": True, "bidirectional": True}),
        ("rnn", {"keras_compatible": True, "num_layers": 2}),
    ],
)
def test_a_triton_net_equals_torch_cells_forward_and_gradients(cell, kwargs, device):
    assert_same_outputs_and_gradients(*triton_twins(cell, device, **kwargs), ragged_batch(device))


def assert_same_outputs_and_gradients(eager, fast, batch):
    expected, out = eager(batch), fast(batch)
    assert_close_to_scale(out, expected)
    expected.square().sum().backward()
    out.square().sum().backward()
    grads = dict(fast.named_parameters())
    for name, parameter in eager.named_parameters():
        assert_close_to_scale(grads[name].grad, parameter.grad)


def test_a_triton_net_compiles_as_one_full_graph(device):
    """fullgraph=True: a graph break anywhere (the kernels' ops included) would raise. On a
    CPU the interpreted kernels are opaque ops the compiled graph calls; on a GPU Inductor
    takes the Triton kernels into its own code."""
    eager, fast = triton_twins("lstm", device, keras_compatible=True, bidirectional=True)
    fast.compile(fullgraph=True)
    assert_same_outputs_and_gradients(eager, fast, ragged_batch(device))


def fake_cuda_net(mode: FakeTensorMode) -> RecurrentClassifier:
    """A two-layer bidirectional Triton net whose parameters are `mode`'s fake CUDA tensors:
    a GPU's shapes, devices and dtypes, without the GPU."""
    net = RecurrentClassifier(
        vocab_size=50,
        num_classes=3,
        embedding_dim=8,
        hidden_size=16,
        cell_impl="triton",
        bidirectional=True,
    )
    with mode:
        for module in net.modules():
            for name, parameter in list(module.named_parameters(recurse=False)):
                fake = mode.from_tensor(parameter.detach()).to("cuda")
                setattr(module, name, torch.nn.Parameter(fake))
    return net


def recurrences(graph: torch.fx.Graph) -> list[str]:
    return [str(node.target) for node in graph.nodes if "litlab" in str(node.target)]


def test_on_fake_cuda_tensors_a_compile_traces_one_graph_with_one_op_per_layer():
    """As a GPU would trace it: Dynamo, fullgraph=True (a graph break would raise), sees each
    layer's recurrence as one opaque op, both directions in it. (AOTAutograd and Inductor
    go on to ask the CUDA driver for a device: `bash benchmarks/gpu.sh --all` runs them.)"""
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    net, graphs = fake_cuda_net(mode), []

    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    with mode:
        tokens, lengths = torch.randint(1, 50, (4, 7), device="cuda"), torch.tensor([7, 3, 5, 1])
        out = torch.compile(net, fullgraph=True, backend=backend)((tokens, lengths))
    assert out.device.type == "cuda" and out.shape == (4, 3)
    (graph,) = graphs
    assert recurrences(graph.graph) == ["litlab.recurrence.default"] * len(net.layers)


def test_on_fake_cuda_tensors_export_keeps_one_opaque_op_per_layer():
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    net = fake_cuda_net(mode)

    class Tokens(torch.nn.Module):  # export takes tensors, not the net's (tokens, lengths)
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, tokens, lengths):
            return self.net((tokens, lengths))

    with mode:
        tokens, lengths = torch.randint(1, 50, (4, 7), device="cuda"), torch.tensor([7, 3, 5, 1])
        program = torch.export.export(Tokens(), (tokens, lengths))
    graph = program.graph_module.graph
    assert recurrences(graph) == ["litlab.recurrence.default"] * len(net.layers)
    assert not [node for node in graph.nodes if "triton_kernel" in str(node.target)]


@CUDA
def test_bf16_autocast_on_cuda_runs_the_kernels_in_bf16_close_to_torch_cells():
    """On a GPU only: Triton's interpreter has no bf16 arithmetic."""
    eager, fast = triton_twins("lstm", "cuda", keras_compatible=True, num_layers=2)
    tokens, lengths = ragged_batch("cuda")
    with torch.autocast("cuda", torch.bfloat16):
        expected, out = eager((tokens, lengths)), fast((tokens, lengths))
    torch.testing.assert_close(out.float(), expected.float(), rtol=0.05, atol=0.02)
    out.float().square().sum().backward()
    assert all(p.grad is not None and p.grad.isfinite().all() for p in fast.parameters())


def test_tf32_only_where_torch_s_matmul_precision_allows_it(monkeypatch):
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: "high")
    assert precision() == "tf32"


def test_hidden_sizes_beyond_the_chip_fall_back_to_compiled_cells_with_a_note(caplog):
    assert fits_on_chip("lstm", 64) and not fits_on_chip("lstm", 128)
    with caplog.at_level(logging.WARNING, "litlab.nets.recurrent"):
        net = RecurrentClassifier(hidden_size=128, cell="lstm", cell_impl="triton")
    assert type(net.layers[0]) is CompiledRecurrent and net.cell_impl == "compiled"
    assert caplog.messages == [
        "cell_impl=triton: hidden_size=128 is over the 64 units its lstm kernels hold on chip; "
        "running compiled cells instead"
    ]


def test_a_triton_net_exports_through_torch_cells(tmp_path, monkeypatch):
    cfg = compose(tmp_path, "experiment=seed_rnn", "model.net.cell_impl=triton")
    with open_dict(cfg):
        cfg.data.vocab_size, cfg.data.num_classes = 50, 5
    torch.manual_seed(0)
    net = instantiate(cfg.model.net).eval()  # builds without a GPU: only running needs one
    module, spec = exportable(cfg, net)
    assert not module.net.compiled
    tokens, lengths = spec["check"]
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with torch.no_grad():
        assert_close_to_scale(module(tokens, lengths), net((tokens, lengths)))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU runs cell_impl=triton")
def test_triton_cells_on_a_cpu_without_the_interpreter_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(LitlabError, match="cell_impl=triton runs on a CUDA GPU"):
        TritonRecurrent("lstm", 4, 4)(torch.randn(2, 3, 4), torch.tensor([3, 1]))
    result = run_cli(
        "litlab-train",
        "experiment=seed_rnn",
        "model.net.cell_impl=triton",
        f"hydra.run.dir={tmp_path}",
    )
    assert result.returncode == 2
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("error: cell_impl=triton runs on a CUDA GPU")
    assert not (tmp_path / "checkpoints").exists()


def test_the_layer_benchmark_times_the_triton_layer_beside_torch_and_compiled_cells():
    """benchmarks/compile.py's Triton columns, run in the interpreter at a tiny size (a GPU
    runs them at full size: `bash benchmarks/gpu.sh`)."""
    code = (
        "import compile; print(compile.LAYER_HEADER); "
        "print(compile.recurrent_layers(16, 5, 8, cell='rnn')[0])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT / "benchmarks",
        # compiled cells from Inductor's cache where it has them: only the rows' form counts
        env={**os.environ, "TRITON_INTERPRET": "1", "TORCHINDUCTOR_FORCE_DISABLE_CACHES": "0"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    header, _, row = result.stdout.strip().splitlines()[-3:]
    assert header.endswith("| litlab triton | triton vs padded | triton vs compiled |")
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[0] == "RNN (16, 5, 8)" and len(cells) == header.count("|") - 1
    times = [float(cell.rstrip("x")) for cell in cells[1:]]  # each a figure
    assert min(times) >= 0 and times[-3] > 0  # the Triton layer's ms: the third column from the end
