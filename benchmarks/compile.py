"""torch.compile: train steps eager vs compiled, the compiled recurrent cells vs torch's, and
on a GPU the Triton recurrence (`cell_impl=triton`) vs both.

Every figure is a median over timed steps after warm-up, each variant run in the same process
on the same batches, the variants taking turns: real MNIST batches for the MLP and SeedCNN,
real bbc_news batches (the bucketing sampler's) for the seed LSTM and the GRU. A train step
is forward, loss, backward, Adam.
"""

import collections
import logging
import os
import re

# Cold compiles: the "first step" column is the compile time a new machine sees.
os.environ.setdefault("TORCHINDUCTOR_FORCE_DISABLE_CACHES", "1")

import statistics
import time

import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from lightning.pytorch.utilities import move_data_to_device
from report import train_config, write_section
from torch._dynamo.utils import counters
from torch._inductor.async_compile import AsyncCompile
from torch.nn.utils.rnn import pack_padded_sequence

from litlab.config.resolvers import fastest_cpu_precision
from litlab.kernels import CompiledRecurrent
from litlab.kernels.recurrent import CELLS
from litlab.kernels.triton_recurrent import (
    TritonRecurrent,
    fallback,
    gpu_capability,
    interpreting,
)
from litlab.speed import compile_update

STEPS = 60
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
# The Triton recurrence's rows: a GPU's (on a CPU only in Triton's interpreter, which the tests
# run them in at small sizes, far too slow to time)
TRITON = DEVICE.type == "cuda" or interpreting()


def synchronized(fn):
    """`fn` that returns only when the device is done (GPU kernels run asynchronously)."""

    def call(*args):
        fn(*args)
        if DEVICE.type == "cuda":
            torch.cuda.synchronize()

    return call


def batches(experiment: str, n: int) -> list:
    cfg = train_config(f"experiment={experiment}")
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    found = []
    while len(found) < n:  # a small corpus takes more than one epoch
        found.extend(datamodule.train_dataloader())
    return cfg, [move_data_to_device(batch, DEVICE) for batch in found[:n]]


def median_ms(fns: dict, inputs, rounds: int = 3) -> dict[str, tuple[float, float]]:
    """Per name: (median ms per call after warm-up, seconds of the first call: compilation
    included). The calls are timed in turns, every function in order on each input, `rounds`
    passes over the inputs, so a drift in the machine's speed falls on all of them alike."""
    fns = {name: synchronized(fn) for name, fn in fns.items()}
    first, times = {}, {name: [] for name in fns}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn(inputs[0])
        first[name] = time.perf_counter() - start
        for x in inputs[1:4]:
            fn(x)
    for _ in range(rounds):
        for x in inputs[4:]:
            for name, fn in fns.items():
                start = time.perf_counter()
                fn(x)
                times[name].append(time.perf_counter() - start)
    return {name: (1e3 * statistics.median(times[name]), first[name]) for name in fns}


def train_step(cfg, compile=None, channels_last=False, fused=None, cell_impl=None, bf16=False):
    """One train step of the experiment's net, set up as `Classifier` would."""
    torch.manual_seed(0)
    net_cfg = dict(cfg.model.net) | ({"cell_impl": cell_impl} if cell_impl else {})
    net = instantiate(net_cfg)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    net = net.to(DEVICE, memory_format=memory_format)
    if compile:
        net.compile(mode=compile)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3, fused=fused)
    if compile and not fused:
        compile_update(optimizer)  # as `model.compile` does

    def step(batch):
        if compile == "reduce-overhead":  # a new iteration: CUDA graph outputs may be reused
            torch.compiler.cudagraph_mark_step_begin()
        x, y = batch
        if channels_last:
            x = x.contiguous(memory_format=memory_format)
        with torch.autocast(DEVICE.type, torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


FASTEST = {"channels_last": True, "fused": True, "bf16": True}
# Every variant of every experiment; `runs_here` picks those this machine runs.
VARIANTS = {
    "mlp_relu": {
        "eager": {},
        "eager + fused Adam": {"fused": True},
        "compile": {"compile": "default"},
        "compile reduce-overhead": {"compile": "reduce-overhead"},
    },
    "seed_cnn": {
        "eager": {},
        "channels_last": {"channels_last": True},
        "channels_last + fused Adam": {"channels_last": True, "fused": True},
        "compile": {"compile": "default"},
        "compile + channels_last": {"compile": "default", "channels_last": True},
        "compile + channels_last + fused Adam": {
            "compile": "default",
            "channels_last": True,
            "fused": True,
        },
        "max-autotune + channels_last": {"compile": "max-autotune", "channels_last": True},
        "compile reduce-overhead + channels_last": {
            "compile": "reduce-overhead",
            "channels_last": True,
        },
        "channels_last + fused Adam + bf16": FASTEST,
        "compile + channels_last + fused Adam + bf16": {**FASTEST, "compile": "default"},
        "compile reduce-overhead + channels_last + fused Adam + bf16": {
            **FASTEST,
            "compile": "reduce-overhead",
        },
    },
    "seed_rnn": {
        "torch cells": {},
        "compiled cells (masked)": {"cell_impl": "compiled"},
        "compiled cells, compile reduce-overhead": {
            "cell_impl": "compiled",
            "compile": "reduce-overhead",
        },
        "triton kernels": {"cell_impl": "triton"},
        # the whole net one graph, its kernels traced into it
        "triton kernels, compile": {"cell_impl": "triton", "compile": "default"},
        "torch cells + bf16": {"bf16": True},
        "triton kernels + bf16": {"cell_impl": "triton", "bf16": True},
    },
    "gru_bbc": {
        "torch cells": {},
        "compiled cells (masked)": {"cell_impl": "compiled"},
        "triton kernels": {"cell_impl": "triton"},
        "triton kernels, compile": {"cell_impl": "triton", "compile": "default"},
    },
}
ROWS = tuple(f"`{e}` | {name}" for e, variants in VARIANTS.items() for name in variants)
# bf16 autocast where the device computes bf16 natively (a GPU, or a CPU with AVX512-BF16/AMX)
BF16 = DEVICE.type == "cuda" or fastest_cpu_precision() == "bf16-mixed"


def runs_here(options: dict) -> bool:
    gpu = DEVICE.type == "cuda"
    return (
        (BF16 or not options.get("bf16"))
        and (gpu or options.get("cell_impl") != "triton")
        # CUDA graphs: one replay per graph instead of a launch per kernel
        and (gpu or options.get("compile") != "reduce-overhead")
        and (not gpu or options.get("compile") != "max-autotune")
    )


def train_steps() -> tuple[str, dict, float, dict]:
    """The table, speed ratios by (experiment, variant), the longest first step, the inputs."""
    rows, ratios, firsts, inputs_of = [], {}, [], {}
    for experiment, variants in VARIANTS.items():
        variants = {name: options for name, options in variants.items() if runs_here(options)}
        cfg, inputs = batches(experiment, STEPS)
        inputs_of[experiment] = inputs
        median_ms({"warm-up": train_step(cfg)}, inputs[:12])  # the first row's start is fair
        steps = {name: train_step(cfg, **options) for name, options in variants.items()}
        measured = median_ms(steps, inputs)
        baseline = next(iter(measured.values()))[0]
        for name, (ms, first) in measured.items():
            ratios[(experiment, name)] = baseline / ms
            firsts.append(first)
            rows.append(
                f"| `{experiment}` | {name} | {ms:.2f} | {baseline / ms:.2f}x | {first:.1f} |"
            )
        print("\n".join(rows[-len(measured) :]), flush=True)  # progress on a long run
    table = (
        "| experiment (batch 32) | variant | ms/step | speed vs first row | first step, s |\n"
        "|---|---|---:|---:|---:|\n" + "\n".join(rows)
    )
    return table, ratios, max(firsts), inputs_of


def recurrent_layers(batch: int, steps: int, hidden: int, ragged=False, cell="lstm") -> tuple:
    """Forward + backward of one `cell` layer: torch's padded (oneDNN or cuDNN), packed, and
    compiled, and where `TRITON` the Triton recurrence (compiled cells where its weights would
    not fit on chip, as `cell_impl=triton` does), over sequences of `steps` steps or, `ragged`,
    of random lengths up to `steps`.
    Returns the table row, the times {name: (ms, first call s)}, and (to profile) the calls
    with their inputs."""
    torch.manual_seed(0)
    reference = CELLS[cell](hidden, hidden, batch_first=True).to(DEVICE)
    layers = {"ours": CompiledRecurrent(cell, hidden, hidden)}
    on_chip = fallback(cell, hidden, gpu_capability()) is None
    if TRITON:
        layers["triton"] = TritonRecurrent(cell, hidden, hidden) if on_chip else layers["ours"]
    for layer in layers.values():
        layer.load_state_dict(reference.state_dict())
        layer.to(DEVICE)
    lengths = torch.randint(1, steps + 1, (batch,)) if ragged else torch.full((batch,), steps)
    inputs = [
        torch.randn(batch, steps, hidden, device=DEVICE, requires_grad=True) for _ in range(14)
    ]

    def padded(x):
        reference(x)[0].sum().backward()

    def packed(x):
        sequences = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        reference(sequences)[0].data.sum().backward()

    def run(name):
        return lambda x: layers[name](x, lengths)[0].sum().backward()

    # The matrix products any such layer's forward + backward needs, and nothing else: the
    # input projection and its two gradients, the recurrent weight's gradient over all steps
    # (one product each), and each step's recurrent product forward and backward.
    gates = reference.weight_ih_l0.shape[0]
    flat = torch.randn(steps * batch, hidden, device=DEVICE)
    flat_gates = torch.randn(steps * batch, gates, device=DEVICE)
    weight = torch.randn(gates, hidden, device=DEVICE)
    state, step_gates = flat[:batch], flat_gates[:batch]

    def products(_):
        flat @ weight.t(), flat_gates @ weight, flat_gates.t() @ flat, flat_gates.t() @ flat
        for _ in range(steps):
            state @ weight.t(), step_gates @ weight

    calls = {"padded": padded, "packed": packed, "ours": run("ours"), "products": products}
    if TRITON:
        calls["triton"] = run("triton")
    measured = median_ms(calls, inputs)
    (base, _), (pack, _), (mine, first), (floor, _) = list(measured.values())[:4]
    shape = f"({batch}, {steps}, {hidden})" + (f", lengths 1-{steps}" if ragged else "")
    if cell != "lstm":
        shape = f"{cell.upper()} {shape}"
    row = (
        f"| {shape} | {base:.2f} | {pack:.2f} | {mine:.2f} | "
        f"{base / mine:.2f}x | {pack / mine:.2f}x | {first:.1f} | {floor:.2f} |"
    )
    if TRITON:
        fast = measured["triton"][0]
        kind = "" if on_chip else " (compiled cells: too large for the chip)"
        row += f" {fast:.2f}{kind} | {base / fast:.2f}x | {mine / fast:.2f}x |"
    return row, measured, calls, inputs


def named_kernels(experiment: str, variant: str, inputs):
    """A variant's step compiled afresh so that the profiler names Inductor's C++ kernels
    (on a GPU it names the Triton kernels anyway)."""
    torch._dynamo.reset()  # else the step reuses the code compiled for the timings
    with torch._inductor.config.patch({"cpp.enable_kernel_profile": True}):
        step = train_step(train_config(f"experiment={experiment}"), **VARIANTS[experiment][variant])
        step(inputs[0])  # compiles under the patch
    return step


def profile(fn, inputs, rows: int = 6) -> str:
    """Where `fn`'s time goes: the operators (CPU) or kernels (GPU) with the most self time."""
    fn = synchronized(fn)
    for x in inputs[:2]:
        fn(x)
    with torch.profiler.profile() as prof:
        for x in inputs[2:6]:
            fn(x)
    kind = "self_device_time_total" if DEVICE.type == "cuda" else "self_cpu_time_total"
    # (calls, self time) by name; a compiled graph's name holds a hash that differs every run
    ops = collections.defaultdict(lambda: [0, 0.0])
    for e in prof.key_averages():
        op = ops[re.sub(r"CompiledFxGraph \S+", "CompiledFxGraph", e.key)[:60]]
        op[0] += e.count
        op[1] += getattr(e, kind)
    total = sum(time for _, time in ops.values())
    ranked = sorted(ops.items(), key=lambda item: item[1][1], reverse=True)[:rows]
    lines = [
        f"| `{name}` | {calls / 4:g} | {100 * time / total:.0f}% |"
        for name, (calls, time) in ranked
    ]
    unit = "kernel" if DEVICE.type == "cuda" else "operator"
    return f"| {unit} | calls per step | self time |\n|---|---:|---:|\n" + "\n".join(lines)


LAYER_HEADER = (
    "| (batch, length, hidden) | torch padded | torch packed | litlab compiled | "
    "vs padded | vs packed | first call, s | its matrix products alone |"
    + (" litlab triton | triton vs padded | triton vs compiled |" if TRITON else "")
    + "\n|---|---:|---:|---:|---:|---:|---:|---:|"
    + ("---:|---:|---:|" if TRITON else "")
)


READING = {
    "cpu": """`nn.LSTM` runs oneDNN's fused RNN layer (one call for all time steps, forward
and backward) over a padded batch, and over packed sequences of equal lengths. Packed
sequences of unequal lengths (the layer table's last row) leave it for a loop of ATen calls per
step, several times slower: so litlab's torch cells run over the padded batch, each direction
forward in time, read at each sequence's last real step. GRU and Elman layers have no fused
oneDNN layer: ATen runs them a step at a time, and there compiled cells can win (`gru_bbc`,
a bidirectional GRU on BBC News with length buckets up to 400 words). The layer
table's "its matrix products alone" column times only the matrix products an
LSTM layer's forward and backward need (the input projection and its two gradients, the
recurrent weight's gradient, each step's two small products), through ATen: at (256, 100, 256)
they alone take longer than oneDNN's whole layer, and at (64, 200, 64) they leave less time
than the compiled cells spend around them (a call per product and per chunk, and `copy_` and
`cat` to assemble the steps, in the profile). Cells whose products go through ATen cannot
reach oneDNN on this CPU; that would take the whole recurrence in one kernel. Inductor
writes its own C++ matrix products (`max-autotune`) only for constant weights, frozen for
inference, so in a train step the products stay ATen calls in every mode. The seed CNN
max-pools before its ReLU (the same function), so no kernel stores ReLU's backward mask as
bools, a store Inductor's vectorized C++ does many times slower than ATen; and a CPU compile
leaves max-pooling, forward and backward, to ATen's kernels (`litlab.kernels.pooling`), which
ran faster than Inductor's. What is left is mostly oneDNN's convolutions, the same calls as
eager.
`speed=cpu` selects eager with channels-last and fused Adam, and bf16 autocast on a CPU that
computes it natively (the rows with those settings); `model.compile` is there for GPUs (Triton)
and for nets where it measures faster.""",
    "cuda": """`nn.LSTM` runs cuDNN's fused RNN layer. On the GPU Inductor writes Triton
kernels; at batch 32 a train step is a few dozen small kernels, so launch overhead weighs, which
`reduce-overhead` (CUDA graphs: the step's kernels replayed as one graph) removes. The kernel
tables list GPU time per kernel. "litlab triton" is `cell_impl=triton`: one Triton kernel runs
all time steps of a layer (both directions side by side), its recurrent weights held on chip,
and one reverse-time kernel the state gradients; where those weights would not fit on chip
the row times the compiled cells it falls back to, as the net does.""",
}


def recompiles(lengths: int = 20) -> int:
    """New graphs compiled for `lengths` random sequence lengths after a warm-up."""
    torch.manual_seed(0)
    layer = CompiledRecurrent("lstm", 64, 64).to(DEVICE)
    x = torch.randn(32, 50, 64, device=DEVICE, requires_grad=True)
    layer(x, torch.full((32,), 50))[0].sum().backward()
    counters.clear()
    for length in torch.randint(1, 400, (lengths,)).tolist():
        x = torch.randn(32, length, 64, device=DEVICE, requires_grad=True)
        layer(x, torch.randint(1, length + 1, (32,)))[0].sum().backward()
    return counters["stats"]["unique_graphs"]


def triton_findings(ratios: dict, lstm: dict, others: dict) -> str:
    """The Triton recurrence's goals, measured: LSTM layers against cuDNN over the padded batch
    and against compiled cells, GRU and Elman layers against torch's, train steps against
    torch cells."""

    def speed(measured, than):  # how many times faster than `than` the Triton layer ran
        return measured[than][0] / measured["triton"][0]

    small, large = lstm["(64, 200, 64)"], lstm["(256, 100, 256)"]
    lines = [
        f"LSTM (64, 200, 64) at most 1.0x cuDNN's time: {1 / speed(small, 'padded'):.2f}x "
        f"({'met' if speed(small, 'padded') >= 1.0 else 'missed'})",
        f"LSTM (256, 100, 256) at most 1.5x cuDNN's time: {1 / speed(large, 'padded'):.2f}x "
        f"({'met' if speed(large, 'padded') >= 1 / 1.5 else 'missed'})",
    ]
    for name, measured in lstm.items():
        faster = speed(measured, "ours")
        lines.append(
            f"LSTM {name} >= 5x faster than compiled cells: {faster:.2f}x "
            f"({'met' if faster >= 5 else 'missed'})"
        )
    for (cell, shape), (_, measured, *_) in others.items():
        faster = speed(measured, "padded")
        lines.append(
            f"{cell.upper()} {shape} faster than torch's layer: {faster:.2f}x "
            f"({'met' if faster > 1 else 'missed'})"
        )
    for experiment in ("seed_rnn", "gru_bbc"):
        faster = ratios[(experiment, "triton kernels")]
        lines.append(
            f"`{experiment}` train step with triton kernels faster than torch cells: "
            f"{faster:.2f}x ({'met' if faster > 1 else 'missed'})"
        )
    return "\nThe Triton recurrence's goals: " + "; ".join(lines) + "."


def main() -> dict:
    start = time.perf_counter()
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    # Inductor's compile workers start once per process, on the cores the steps are timed on:
    # start them before any timing.
    AsyncCompile.wait_pool_ready()
    table, ratios, longest_step_compile, inputs = train_steps()
    # compile's own gain: fp32 rows only, bf16 speeds eager and compiled steps alike
    cnn, fastest = max(
        (v, n)
        for (e, n), v in ratios.items()
        if e == "seed_cnn" and "compile" in n and "bf16" not in n
    )
    cnn_inputs = inputs["seed_cnn"]
    cnn_profile = profile(named_kernels("seed_cnn", fastest, cnn_inputs), cnn_inputs)
    small, small_ms, calls, layer_inputs = recurrent_layers(64, 200, 64)
    ours_profile = profile(calls["ours"], layer_inputs)
    torch_profile = profile(calls["padded"], layer_inputs)
    large, large_ms, *_ = recurrent_layers(256, 100, 256)  # timed, not profiled
    ragged, ragged_ms, *_ = recurrent_layers(64, 200, 64, ragged=True)
    rows = [small, large, ragged]
    compile_s = max(longest_step_compile, small_ms["ours"][1], large_ms["ours"][1])
    triton_section = ""
    if DEVICE.type == "cuda":  # the Triton recurrence's own rows and goals
        others = {
            (cell, shape): recurrent_layers(*shape, cell=cell)
            for cell in ("gru", "rnn")
            for shape in ((64, 200, 64), (256, 100, 256))
        }
        rows += [row for row, *_ in others.values()]
        triton_section = (
            triton_findings(
                ratios,
                {
                    "(64, 200, 64)": small_ms,
                    "(256, 100, 256)": large_ms,
                    "(64, 200, 64), lengths 1-200": ragged_ms,
                },
                others,
            )
            + f"""

Where the time goes at (64, 200, 64), the Triton layer (one call = forward + backward):

{profile(calls["triton"], layer_inputs)}
"""
        )
    layers = "\n".join(rows)
    new_graphs = recompiles()
    lstm = ratios[("seed_rnn", "compiled cells (masked)")]
    mlp = ratios[("mlp_relu", "compile")]
    verdicts = (
        f"SeedCNN compiled >= 1.3x eager: {cnn:.2f}x ({'met' if cnn >= 1.3 else 'missed'}); "
        f"compiled LSTM cells >= 1.0x torch's: {lstm:.2f}x "
        f"({'met' if lstm >= 1.0 else 'missed'}); MLP `compile: default` not slower than "
        f"eager: {mlp:.2f}x ({'met' if mlp >= 0.97 else 'missed'}, 3% noise allowed); "
        f"compile time <= 60 s: at most {compile_s:.1f} s "
        f"({'met' if compile_s <= 60 else 'missed'})."
    )
    goals = "Goals" if DEVICE.type == "cpu" else "The CPU's goals, measured here for comparison"
    body = f"""{table}

Where the time goes in SeedCNN's fastest compiled train step ({fastest}):

{cnn_profile}

One layer (LSTM unless the row names GRU or RNN), forward + backward, ms (median):

{LAYER_HEADER}
{layers}

Where the time goes at (64, 200, 64), litlab's compiled layer (one call = forward + backward):

{ours_profile}

and `nn.LSTM` over the padded batch, as litlab's torch cells run it:

{torch_profile}

After warm-up, 20 random sequence lengths (1-400) compiled {new_graphs} new graphs.

{goals}: {verdicts}
{triton_section}
*Reading the tables.* "first step" is the first call with compilation, caches off (a row
whose net compiles to an earlier row's graph reuses it). The compile rows compile Adam's
update too, as `model.compile` does (unless the optimizer config sets `fused: true`).
litlab's compiled cells run the input projection of all steps as one matrix product and the
recurrence in chunks of 16 unrolled steps, one Inductor graph per chunk (gate arithmetic fused).
{READING[DEVICE.type]}

The whole script ran {(time.perf_counter() - start) / 60:.1f} minutes."""
    name = "compile" if DEVICE.type == "cpu" else "compile_gpu"
    write_section(name, f"torch.compile on {DEVICE.type.upper()}: eager vs compiled", body)
    return ratios


if __name__ == "__main__":
    main()
