"""The compiled recurrent path equals torch's cells (and those torch's packed sequences);
compiled nets equal eager ones."""

import copy
import math
import re
from functools import partial

import lightning.pytorch as L
import pytest
import torch
from conftest import compose, read_summary, run_cli
from hydra.utils import instantiate
from omegaconf import open_dict
from torch import nn
from torch._dynamo.utils import counters
from torch._inductor.utils import run_and_get_code
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence
from torch.utils.data import DataLoader, TensorDataset

import litlab
from litlab.config.resolvers import fastest_cpu_precision
from litlab.inference.export import exportable
from litlab.inference.runs import load_model
from litlab.kernels import MaxPool2d
from litlab.kernels.recurrent import CELLS, compiled_chunk
from litlab.models import Classifier
from litlab.nets import MLP, ConvDecoder, ConvEncoder, RecurrentClassifier, SeedCNN
from litlab.nets.recurrent import run_padded
from litlab.run.checkpoints import load_checkpoint
from litlab.speed import compile_update

CHUNK = 4  # short chunks compile fast
NO_GPU = "no CUDA GPU here; bash benchmarks/gpu.sh --all runs the GPU cases on one"


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
        ),
    ]
)
def device(request, monkeypatch) -> torch.device:
    """Where a numerics test runs; on a GPU in plain fp32 (cuDNN's TF32 off, as on the CPU)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    return torch.device(request.param)


def twins(cell: str, device="cpu", **kwargs) -> tuple[RecurrentClassifier, RecurrentClassifier]:
    """A torch-cell net and a compiled-cell net holding the same weights."""
    torch.manual_seed(0)
    options = dict(vocab_size=50, num_classes=3, embedding_dim=8, hidden_size=6, cell=cell)
    eager = RecurrentClassifier(**options, **kwargs).to(device)
    compiled = RecurrentClassifier(**options, cell_impl="compiled", chunk=CHUNK, **kwargs)
    compiled.load_state_dict(eager.state_dict())
    return eager, compiled.to(device)


def ragged_batch(device="cpu", batch=5, longest=2 * CHUNK + 3):
    torch.manual_seed(1)
    lengths = torch.tensor([longest, 1, CHUNK, CHUNK + 1, 7][:batch]).clamp(max=longest)
    tokens = torch.randint(1, 50, (batch, longest)) * (torch.arange(longest) < lengths[:, None])
    return tokens.to(device), lengths  # lengths stay on the CPU, as the datamodules give them


@pytest.mark.parametrize(
    "cell, kwargs",
    [
        ("lstm", {}),
        ("lstm", {"keras_compatible": True, "num_layers": 2}),
        ("lstm", {"bidirectional": True, "num_layers": 2}),
        ("gru", {"bidirectional": True}),
        ("gru", {"keras_compatible": True}),
        ("rnn", {"keras_compatible": True, "num_layers": 2}),
    ],
)
def test_compiled_cells_match_torch_forward_and_gradients(cell, kwargs, device):
    assert_same_outputs_and_gradients(*twins(cell, device, **kwargs), ragged_batch(device))


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_torch_layers_over_the_padded_batch_equal_packed_sequences(cell, bidirectional, device):
    """What torch cells run (`run_padded`), against torch's own packed sequences."""
    torch.manual_seed(0)
    layer = CELLS[cell](6, 5, batch_first=True, bidirectional=bidirectional).to(device)
    lengths = torch.tensor([9, 1, 4, 5, 7])
    x = torch.randn(5, 9, 6, device=device, requires_grad=True)
    real = (torch.arange(9) < lengths[:, None])[..., None].to(device)  # steps past the end: 0
    out, last = run_padded(layer, x, lengths)
    packed_out, state = layer(pack_padded_sequence(x, lengths, True, enforce_sorted=False))
    expected_out = pad_packed_sequence(packed_out, batch_first=True, total_length=9)[0]
    expected_last = torch.cat(list(state[0] if cell == "lstm" else state), dim=-1)
    torch.testing.assert_close(out * real, expected_out, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(last, expected_last, rtol=1e-5, atol=1e-6)
    inputs = [x, *layer.parameters()]
    grads = torch.autograd.grad((out * real).square().sum() + last.square().sum(), inputs)
    expected = torch.autograd.grad(
        expected_out.square().sum() + expected_last.square().sum(), inputs
    )
    for grad, expected_grad in zip(grads, expected, strict=True):
        torch.testing.assert_close(grad, expected_grad, rtol=1e-5, atol=1e-6)


def assert_same_outputs_and_gradients(eager, compiled, batch):
    out_eager, out_compiled = eager(batch), compiled(batch)
    torch.testing.assert_close(out_compiled, out_eager, rtol=1e-5, atol=1e-6)
    out_eager.square().sum().backward()
    out_compiled.square().sum().backward()
    grads = dict(compiled.named_parameters())
    for name, parameter in eager.named_parameters():
        torch.testing.assert_close(grads[name].grad, parameter.grad, rtol=1e-5, atol=1e-6)
        parameter.grad = grads[name].grad = None  # fresh for the next batch


def test_a_compiled_recurrent_net_runs_its_chunks_in_its_mode_and_equals_torch_cells(device):
    """On a GPU `reduce-overhead` replays each chunk as a CUDA graph (a CPU compiles it plainly)."""
    eager, compiled = twins("lstm", device, keras_compatible=True, num_layers=2)
    compiled.compile(mode="reduce-overhead")
    assert [layer.mode for layer in compiled.layers] == ["reduce-overhead"] * 2
    for longest in (2 * CHUNK + 3, CHUNK + 1, 2 * CHUNK + 3):  # graphs recorded, then replayed
        assert_same_outputs_and_gradients(eager, compiled, ragged_batch(device, longest=longest))


def test_a_recurrent_net_refuses_fullgraph_with_one_clear_error(tmp_path):
    result = run_cli(
        "litlab-train",
        "experiment=seed_rnn",
        "model.compile={fullgraph:true}",
        f"hydra.run.dir={tmp_path}",
    )
    last_line = result.stderr.strip().splitlines()[-1]
    assert result.returncode == 2
    assert last_line.startswith("error: model.compile.fullgraph=true cannot hold for a recurrent")
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("cell, gates", [("lstm", 4), ("gru", 3), ("rnn", 1)])
def test_each_step_of_a_chunk_is_one_product_and_one_fused_kernel(cell, gates):
    """On CPU: Inductor's C++ fuses a step's gates, state update and length mask into one kernel."""
    batch, hidden = 3, 5
    gx = torch.randn(CHUNK, batch, gates * hidden)
    keep = torch.ones(CHUNK, batch, 1, dtype=torch.bool)
    h, c = torch.randn(2, batch, hidden)
    w_hh_t, b_hh = torch.randn(hidden, gates * hidden), torch.randn(gates * hidden)
    with torch.no_grad():
        _, code = run_and_get_code(compiled_chunk(cell), gx, keep, h, c, w_hh_t, b_hh)
    wrapper = "\n".join(code)
    assert len(set(re.findall(r"cpp_fused_\w+", wrapper))) == CHUNK
    assert len(re.findall(r"extern_kernels\.(?:add)?mm\(", wrapper)) == CHUNK


def test_compiled_cells_state_dict_matches_torch_names():
    eager, compiled = twins("lstm", keras_compatible=True, num_layers=2)
    assert list(eager.state_dict()) == list(compiled.state_dict())


def test_padding_does_not_leak_through_compiled_cells(device):
    _, net = twins("lstm", device, keras_compatible=True, bidirectional=True)
    tokens, lengths = ragged_batch(device)
    together = net((tokens, lengths))
    for i in range(len(lengths)):
        alone = net((tokens[i : i + 1, : lengths[i]], lengths[i : i + 1]))
        torch.testing.assert_close(alone[0], together[i], rtol=1e-5, atol=1e-6)


def test_chunk_compiles_without_graph_breaks_and_once_for_all_lengths(device):
    """The chunks compile with fullgraph=True: a graph break in one would raise here."""
    _, net = twins("lstm", device, keras_compatible=True)
    torch.manual_seed(2)
    net((torch.randint(1, 50, (4, 9), device=device), torch.tensor([9, 3, 5, 1])))  # warm-up
    counters.clear()
    for length in torch.randint(1, 5 * CHUNK, (20,)).tolist():
        tokens = torch.randint(1, 50, (4, length), device=device)
        net((tokens, torch.tensor([length, max(1, length // 2), 1, length]))).sum().backward()
    assert counters["stats"]["unique_graphs"] == 0, "a new sequence length recompiled"


IMAGES, CODES = (8, 1, 28, 28), (8, 20)


@pytest.mark.parametrize(
    "net, shape",
    [
        (MLP(hidden=(32,)), IMAGES),
        (SeedCNN(), IMAGES),
        (ConvEncoder(out_features=40), IMAGES),
        (ConvDecoder(latent_dim=20), CODES),
    ],
    ids=["mlp", "seed_cnn", "conv_encoder", "conv_decoder"],
)
def test_compiled_nets_equal_eager_nets(net, shape, device):
    net = copy.deepcopy(net).to(device)
    x = torch.rand(shape, device=device)
    compiled = copy.deepcopy(net).to(memory_format=torch.channels_last)
    compiled.compile()
    out_eager = net(x)
    out_compiled = compiled(x.contiguous(memory_format=torch.channels_last) if x.ndim == 4 else x)
    torch.testing.assert_close(out_compiled, out_eager, rtol=1e-5, atol=1e-5)
    out_eager.square().sum().backward()
    out_compiled.square().sum().backward()
    for eager, fast in zip(net.parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(fast.grad, eager.grad, rtol=1e-5, atol=1e-5)


def test_a_compiled_run_checkpoint_loads_into_eager_and_back(tmp_path, mnist):
    fast = [
        "experiment=mlp_relu",
        "debug=limit",
        "model.compile=default",
        "model.channels_last=true",
    ]
    metrics = litlab.train(compose(tmp_path / "compiled", *fast))
    checkpoint = tmp_path / "compiled" / read_summary(tmp_path / "compiled")["best_checkpoint"]
    state = load_checkpoint(checkpoint)["state_dict"]
    assert not [key for key in state if "_orig_mod" in key]

    eager = ["experiment=mlp_relu", "debug=limit"]
    eager_cfg = compose(tmp_path / "eager", *eager)
    model = load_model(eager_cfg.model, checkpoint)  # checks every key and shape
    tested = litlab.train(
        compose(tmp_path / "eager", *eager, "train=false", f"ckpt_path={checkpoint}")
    )
    assert tested["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)

    back = compose(tmp_path / "back", *fast, "train=false", f"ckpt_path={checkpoint}")
    assert litlab.train(back)["test/acc"] == pytest.approx(metrics["test/acc"], abs=1e-6)
    assert model.net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize(
    "compile, fused, compiled",
    [(False, None, False), ("default", None, True), ("default", True, False)],
)
def test_compiling_compiles_the_optimizer_update_unless_it_is_fused(compile, fused, compiled):
    optimizer = partial(torch.optim.Adam, lr=0.1, fused=fused)
    model = Classifier(net=MLP(hidden=(8,)), optimizer=optimizer, compile=compile)
    assert model.speed.compiles_update(model) is compiled
    model.speed.setup(L.Trainer(logger=False), model, "fit")
    assert isinstance(model.configure_optimizers().param_groups[0]["lr"], torch.Tensor) is compiled


def test_the_compiled_update_equals_eager_and_a_scheduler_does_not_recompile_it(device):
    torch.manual_seed(0)
    nets = [MLP(hidden=(16,)).to(device), MLP(hidden=(16,)).to(device)]
    nets[1].load_state_dict(nets[0].state_dict())
    optimizers = [torch.optim.Adam(net.parameters(), lr=0.01) for net in nets]
    compile_update(optimizers[1])
    schedulers = [torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5) for o in optimizers]
    x, y = torch.rand(8, 1, 28, 28, device=device), torch.randint(0, 10, (8,), device=device)
    counters.clear()

    def backward(net):  # what Lightning's closure does: forward, backward, the loss
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss

    for _ in range(4):  # each epoch a new learning rate
        for net, optimizer, scheduler in zip(nets, optimizers, schedulers, strict=True):
            optimizer.zero_grad()
            assert optimizer.step(partial(backward, net)) is not None
            scheduler.step()
    assert counters["stats"]["unique_graphs"] == 1, "a new learning rate recompiled the update"
    for eager, compiled in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)


def test_an_unknown_compile_mode_is_one_clear_error(tmp_path):
    result = run_cli("litlab-train", f"hydra.run.dir={tmp_path}", "model.compile=fastest")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: model.compile='fastest'")


@pytest.mark.parametrize("experiment", ["seed_cnn", "seed_rnn"])
def test_the_cpu_speed_settings_train_each_kind_of_model(tmp_path, mnist, experiment):
    cfg = compose(tmp_path, f"experiment={experiment}", "speed=cpu", "debug=fdr")
    assert cfg.model.channels_last and cfg.model.optimizer.fused
    assert cfg.trainer.precision == fastest_cpu_precision()
    assert litlab.train(cfg)["test/loss"] < 2 * math.log(10)  # one step: about log(10)


def test_a_net_with_compiled_cells_exports_through_torch_cells(tmp_path):
    cfg = compose(tmp_path, "experiment=seed_rnn", "model.net.cell_impl=compiled")
    with open_dict(cfg):
        cfg.data.vocab_size, cfg.data.num_classes = 50, 5
    torch.manual_seed(0)
    net = instantiate(cfg.model.net).eval()
    module, spec = exportable(cfg, net)
    assert not module.net.compiled
    tokens, lengths = spec["check"]
    with torch.no_grad():
        torch.testing.assert_close(module(tokens, lengths), net((tokens, lengths)))


class GradientNorms(L.Callback):
    """The gradient norm each optimizer step was taken with (grads stay until the next zero)."""

    def __init__(self):
        self.norms = []

    def on_before_zero_grad(self, trainer, pl_module, optimizer):
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            self.norms.append(float(torch.nn.utils.get_total_norm(grads)))


def test_bf16_clips_the_gradients_of_a_fused_optimizer(tmp_path):
    torch.manual_seed(0)
    model = Classifier(
        net=SeedCNN(), optimizer=partial(torch.optim.Adam, lr=1e-3, fused=True), channels_last=True
    )
    data = TensorDataset(torch.rand(64, 1, 28, 28), torch.randint(10, (64,)))
    norms = GradientNorms()
    trainer = L.Trainer(
        precision="bf16-mixed",
        gradient_clip_val=1e-3,
        max_steps=4,
        callbacks=[norms],
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
    )
    trainer.fit(model, DataLoader(data, batch_size=16))
    assert len(norms.norms) == 3 and max(norms.norms) == pytest.approx(1e-3, rel=1e-3)


def test_a_compiled_run_resumed_from_an_eager_checkpoint_keeps_tensor_learning_rates(tmp_path):
    def fit(compile, epochs, ckpt_path=None):
        torch.manual_seed(0)
        model = Classifier(
            net=MLP(hidden=(8,)),
            optimizer=partial(torch.optim.SGD, lr=0.1),
            scheduler=partial(torch.optim.lr_scheduler.StepLR, step_size=1, gamma=0.5),
            compile=compile,
        )
        data = TensorDataset(torch.rand(32, 1, 28, 28), torch.randint(10, (32,)))
        trainer = L.Trainer(
            max_epochs=epochs,
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            limit_val_batches=0,
        )
        trainer.fit(model, DataLoader(data, batch_size=16), ckpt_path=ckpt_path)
        return trainer

    eager = fit(False, 1)
    checkpoint = tmp_path / "eager.ckpt"
    eager.save_checkpoint(checkpoint)
    assert isinstance(eager.optimizers[0].param_groups[0]["lr"], float)
    resumed = fit("default", 4, checkpoint)  # three epochs, three learning rates
    lr = resumed.optimizers[0].param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor), "a float rate recompiles the update when it changes"
    assert lr.item() == pytest.approx(0.1 / 2**4)  # the scheduler filled it in place


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_a_cpu_compile_pools_through_aten_with_eager_gradients(memory_format):
    pool, graphs = MaxPool2d(2), []

    def backend(graph, inputs):  # records what Dynamo hands the compiler, then runs eagerly
        graphs.append(graph.code)
        return graph.forward

    x = torch.randn(4, 8, 11, 11).round(decimals=1)  # ties in windows, as a blank image has
    x = x.contiguous(memory_format=memory_format)
    outputs = []
    for run in (torch.compile(pool, backend=backend), torch.compile(pool), nn.MaxPool2d(2)):
        leaf = x.clone().requires_grad_()
        out = run(leaf)
        out.backward(torch.arange(out.numel(), dtype=out.dtype).view_as(out))
        outputs.append((out, leaf.grad))
    assert "litlab.max_pool2d" in graphs[0]
    for out, grad in outputs[:2]:
        assert torch.equal(out, outputs[2][0]) and torch.equal(grad, outputs[2][1])
