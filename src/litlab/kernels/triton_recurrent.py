"""Recurrent layers whose whole recurrence is one Triton kernel (a persistent recurrence).

`CompiledRecurrent` runs each time step as a matrix product plus a fused kernel. Here the
input projection of every step stays one large matrix product outside, and one kernel runs
all time steps: each program owns a tile of the batch and every hidden unit, loads the
recurrent weights once and keeps them on chip for the whole sequence, and fuses each step's
recurrent product, gate nonlinearities, state update and length mask (a state stops at its
sequence's end). It stores the gate activations backward needs. Backward is one reverse-time
kernel for the state gradients; the weight and input gradients over all steps are then large
matrix products outside it. Programs never wait on each other (no grid-wide sync).

A bidirectional layer's directions run side by side in the same launch (a grid axis).

Both kernels are registered as `torch.library.triton_op`s with an autograd formula, so the
same op runs eagerly and `torch.compile` traces it (`fullgraph=True`). On a CPU the kernels
run in Triton's interpreter (numpy, one program at a time: for tests, opted into with
`TRITON_INTERPRET=1`), behind an opaque op that a CPU compile calls as it is (the interpreter
cannot run on a compile's fake tensors). The kernels call only Triton's core operations, not
its library functions (`tl.sigmoid`, `tl.zeros`: compiled or interpreted as TRITON_INTERPRET
was when Triton was imported), so the one source runs both ways in one process, whenever the
variable is set.
"""

import functools
import os
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton
from triton.runtime.interpreter import InterpretedFunction

from litlab.errors import LitlabError
from litlab.kernels.recurrent import CompiledRecurrent, over_directions

RNN, LSTM, GRU = 0, 1, 2


class CellSpec(NamedTuple):
    kind: int  # RNN | LSTM | GRU, the kernels' branch
    gates: int  # blocks of hidden units in the projections
    saved: int  # blocks stored per step for backward
    grads: int  # blocks of gate gradients per step


# lstm saves i, f, g, o, c; gru r, z, n and W_hn h + b_hn; rnn h. A GRU's gradients are
# d(r, z) (input and recurrent alike), d(W_hn h + b_hn) and d(x_n).
SPECS = {
    "rnn": CellSpec(RNN, 1, 1, 1),
    "lstm": CellSpec(LSTM, 4, 5, 4),
    "gru": CellSpec(GRU, 3, 4, 4),
}
BLOCK_B = 16  # batch rows per program: tl.dot's smallest tile
# The widest tile of hidden units the kernels take, held to the compiler for sm_80 and sm_90
# (tests/test_triton_aot.py): at 128 units an LSTM's or GRU's fp32 weights need more shared
# memory than a block may have, and an Elman net's exact fp32 product spills registers.
LARGEST_HIDDEN = 64
# The oldest NVIDIA GPUs Triton supports (its README, "Supported Hardware"): sm_80, the A100.
# An sm_70 build compiles (docs/benchmarks.md), but a V100 has no bf16 or TF32 tensor cores.
OLDEST_GPU = (8, 0)


def block(hidden: int) -> int:
    return max(16, triton.next_power_of_2(hidden))


def fits_on_chip(cell: str, hidden: int) -> bool:
    """Whether `cell`'s kernels for `hidden` units fit a GPU's registers and shared memory in
    every precision (the same bound for every cell, as compiled)."""
    return block(hidden) <= LARGEST_HIDDEN


def fallback(cell: str, hidden: int, capability: tuple[int, int] | None) -> str | None:
    """Why `cell_impl=triton` runs compiled cells instead for `cell` with `hidden` units on a
    GPU of compute `capability` (None: no GPU here, where only the interpreter runs them), or
    None where its kernels run."""
    if not fits_on_chip(cell, hidden):
        return (
            f"hidden_size={hidden} is over the {LARGEST_HIDDEN} units its {cell} kernels "
            "hold on chip"
        )
    if capability is not None and tuple(capability) < OLDEST_GPU:
        major, minor = capability
        return (
            f"this GPU is sm_{major}{minor}, older than the sm_{OLDEST_GPU[0]}{OLDEST_GPU[1]} "
            "its kernels need"
        )
    return None


def gpu_capability() -> tuple[int, int] | None:
    """The current CUDA GPU's compute capability, None without one."""
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else None


def _forward(
    gx,  # [D, T, B, gates*H] input projections, input biases included
    w,  # [D, gates*H, H] recurrent weights, as torch holds them
    b,  # [D, gates*H] recurrent biases
    lengths,  # [B]
    out,  # [D, T, B, H] states, held past each sequence's end
    acts,  # [D, T, B, saved*H] float32, for backward
    steps,
    batch,
    hidden,
    CELL: tl.constexpr,
    GATES: tl.constexpr,
    SAVED: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PRECISION: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]
    units = tl.arange(0, BLOCK_H)[None, :]
    inner = tl.arange(0, BLOCK_H)[:, None]
    tile = (rows < batch) & (units < hidden)
    square = (inner < hidden) & (units < hidden)
    length = tl.load(lengths + rows, mask=rows < batch, other=0)
    direction = tl.program_id(1)  # the directions run side by side, in one launch
    gx += direction * steps * batch * GATES * hidden
    w += direction * GATES * hidden * hidden
    b += direction * GATES * hidden
    out += direction * steps * batch * hidden
    acts += direction * steps * batch * SAVED * hidden
    # Each gate's W^T [H_in, H_out], loaded once: [k, j] = w[gate * H + j, k]
    wt = w + units * hidden + inner
    w0 = tl.load(wt, mask=square, other=0.0)
    b0 = tl.load(b + units, mask=units < hidden, other=0.0).to(tl.float32)
    if GATES > 1:
        w1 = tl.load(wt + hidden * hidden, mask=square, other=0.0)
        w2 = tl.load(wt + 2 * hidden * hidden, mask=square, other=0.0)
        b1 = tl.load(b + hidden + units, mask=units < hidden, other=0.0).to(tl.float32)
        b2 = tl.load(b + 2 * hidden + units, mask=units < hidden, other=0.0).to(tl.float32)
    if GATES > 3:
        w3 = tl.load(wt + 3 * hidden * hidden, mask=square, other=0.0)
        b3 = tl.load(b + 3 * hidden + units, mask=units < hidden, other=0.0).to(tl.float32)
    h = tl.full([BLOCK_B, BLOCK_H], 0.0, tl.float32)
    c = tl.full([BLOCK_B, BLOCK_H], 0.0, tl.float32)
    for t in range(steps):
        keep = t < length
        x = gx + (t * batch + rows) * (GATES * hidden) + units
        saved = acts + (t * batch + rows) * (SAVED * hidden) + units
        hw = h.to(w0.dtype)
        a0 = tl.load(x, mask=tile, other=0.0).to(tl.float32) + b0
        a0 += tl.dot(hw, w0, input_precision=PRECISION)
        if CELL == 0:  # rnn
            h_new = 2 / (1 + tl.exp(-2 * a0)) - 1
            tl.store(saved, h_new, mask=tile)
        elif CELL == 1:  # lstm, gates i, f, g, o
            a1 = tl.load(x + hidden, mask=tile, other=0.0).to(tl.float32) + b1
            a2 = tl.load(x + 2 * hidden, mask=tile, other=0.0).to(tl.float32) + b2
            a3 = tl.load(x + 3 * hidden, mask=tile, other=0.0).to(tl.float32) + b3
            i = 1 / (1 + tl.exp(-a0))
            f = 1 / (1 + tl.exp(-(a1 + tl.dot(hw, w1, input_precision=PRECISION))))
            g = 2 / (1 + tl.exp(-2 * (a2 + tl.dot(hw, w2, input_precision=PRECISION)))) - 1
            o = 1 / (1 + tl.exp(-(a3 + tl.dot(hw, w3, input_precision=PRECISION))))
            c = tl.where(keep, f * c + i * g, c)
            h_new = o * (2 / (1 + tl.exp(-2 * c)) - 1)
            tl.store(saved, i, mask=tile)
            tl.store(saved + hidden, f, mask=tile)
            tl.store(saved + 2 * hidden, g, mask=tile)
            tl.store(saved + 3 * hidden, o, mask=tile)
            tl.store(saved + 4 * hidden, c, mask=tile)
        else:  # gru, gates r, z, n
            a1 = tl.load(x + hidden, mask=tile, other=0.0).to(tl.float32) + b1
            r = 1 / (1 + tl.exp(-a0))
            z = 1 / (1 + tl.exp(-(a1 + tl.dot(hw, w1, input_precision=PRECISION))))
            hn = tl.dot(hw, w2, input_precision=PRECISION) + b2
            n = tl.load(x + 2 * hidden, mask=tile, other=0.0).to(tl.float32) + r * hn
            n = 2 / (1 + tl.exp(-2 * n)) - 1
            h_new = (1 - z) * n + z * h
            tl.store(saved, r, mask=tile)
            tl.store(saved + hidden, z, mask=tile)
            tl.store(saved + 2 * hidden, n, mask=tile)
            tl.store(saved + 3 * hidden, hn, mask=tile)
        h = tl.where(keep, h_new, h)
        tl.store(out + (t * batch + rows) * hidden + units, h.to(out.dtype.element_ty), mask=tile)


def _backward(
    d_out,  # [D, T, B, H] gradients of the states `out`
    out,  # [D, T, B, H] the forward's states
    acts,  # [D, T, B, saved*H] the forward's saved activations
    w,  # [D, gates*H, H]
    lengths,  # [B]
    d_gates,  # [D, T, B, grads*H] gradients of the gates' pre-activations
    steps,
    batch,
    hidden,
    CELL: tl.constexpr,
    GATES: tl.constexpr,
    SAVED: tl.constexpr,
    GRADS: tl.constexpr,
    BLOCK_B: tl.constexpr,
    BLOCK_H: tl.constexpr,
    PRECISION: tl.constexpr,
):
    # The forward's indexing, written again: a shared @triton.jit helper would run compiled or
    # interpreted, not both (see the module's note)
    rows = tl.program_id(0) * BLOCK_B + tl.arange(0, BLOCK_B)[:, None]
    units = tl.arange(0, BLOCK_H)[None, :]
    inner = tl.arange(0, BLOCK_H)[:, None]
    tile = (rows < batch) & (units < hidden)
    square = (inner < hidden) & (units < hidden)
    length = tl.load(lengths + rows, mask=rows < batch, other=0)
    direction = tl.program_id(1)
    d_out += direction * steps * batch * hidden
    out += direction * steps * batch * hidden
    acts += direction * steps * batch * SAVED * hidden
    w += direction * GATES * hidden * hidden
    d_gates += direction * steps * batch * GRADS * hidden
    kind = d_gates.dtype.element_ty
    # Each gate's W [H_out, H_in], loaded once: d h_prev = sum over gates of d a @ W
    wg = w + inner * hidden + units
    w0 = tl.load(wg, mask=square, other=0.0)
    if CELL != 0:
        w1 = tl.load(wg + hidden * hidden, mask=square, other=0.0)
        w2 = tl.load(wg + 2 * hidden * hidden, mask=square, other=0.0)
    if CELL == 1:
        w3 = tl.load(wg + 3 * hidden * hidden, mask=square, other=0.0)
    dh = tl.full([BLOCK_B, BLOCK_H], 0.0, tl.float32)
    dc = tl.full([BLOCK_B, BLOCK_H], 0.0, tl.float32)
    for s in range(steps):
        t = steps - 1 - s
        before = tl.maximum(t - 1, 0)  # the previous step (masked out at t = 0)
        keep = t < length
        dh += tl.load(d_out + (t * batch + rows) * hidden + units, mask=tile, other=0.0).to(
            tl.float32
        )
        saved = acts + (t * batch + rows) * (SAVED * hidden) + units
        grads = d_gates + (t * batch + rows) * (GRADS * hidden) + units
        if CELL == 0:  # rnn
            h_t = tl.load(saved, mask=tile, other=0.0)
            da = tl.where(keep, dh * (1 - h_t * h_t), 0.0)
            tl.store(grads, da.to(kind), mask=tile)
            dh_new = tl.dot(da.to(w0.dtype), w0, input_precision=PRECISION)
        elif CELL == 1:  # lstm
            i = tl.load(saved, mask=tile, other=0.0)
            f = tl.load(saved + hidden, mask=tile, other=0.0)
            g = tl.load(saved + 2 * hidden, mask=tile, other=0.0)
            o = tl.load(saved + 3 * hidden, mask=tile, other=0.0)
            tc = 2 / (1 + tl.exp(-2 * tl.load(saved + 4 * hidden, mask=tile, other=0.0))) - 1
            previous = acts + (before * batch + rows) * (SAVED * hidden) + 4 * hidden + units
            c_prev = tl.where(t > 0, tl.load(previous, mask=tile, other=0.0), 0.0)
            dct = tl.where(keep, dc + dh * o * (1 - tc * tc), 0.0)
            da_i = dct * g * i * (1 - i)
            da_f = dct * c_prev * f * (1 - f)
            da_g = dct * i * (1 - g * g)
            da_o = tl.where(keep, dh * tc * o * (1 - o), 0.0)
            tl.store(grads, da_i.to(kind), mask=tile)
            tl.store(grads + hidden, da_f.to(kind), mask=tile)
            tl.store(grads + 2 * hidden, da_g.to(kind), mask=tile)
            tl.store(grads + 3 * hidden, da_o.to(kind), mask=tile)
            dh_new = tl.dot(da_i.to(w0.dtype), w0, input_precision=PRECISION)
            dh_new += tl.dot(da_f.to(w0.dtype), w1, input_precision=PRECISION)
            dh_new += tl.dot(da_g.to(w0.dtype), w2, input_precision=PRECISION)
            dh_new += tl.dot(da_o.to(w0.dtype), w3, input_precision=PRECISION)
            dc = tl.where(keep, dct * f, dc)
        else:  # gru
            r = tl.load(saved, mask=tile, other=0.0)
            z = tl.load(saved + hidden, mask=tile, other=0.0)
            n = tl.load(saved + 2 * hidden, mask=tile, other=0.0)
            hn = tl.load(saved + 3 * hidden, mask=tile, other=0.0)
            previous = out + (before * batch + rows) * hidden + units
            h_prev = tl.where(t > 0, tl.load(previous, mask=tile, other=0.0).to(tl.float32), 0.0)
            da_n = tl.where(keep, dh * (1 - z) * (1 - n * n), 0.0)
            d_hn = da_n * r
            da_r = da_n * hn * r * (1 - r)
            da_z = tl.where(keep, dh * (h_prev - n) * z * (1 - z), 0.0)
            tl.store(grads, da_r.to(kind), mask=tile)
            tl.store(grads + hidden, da_z.to(kind), mask=tile)
            tl.store(grads + 2 * hidden, d_hn.to(kind), mask=tile)
            tl.store(grads + 3 * hidden, da_n.to(kind), mask=tile)
            dh_new = dh * z + tl.dot(da_r.to(w0.dtype), w0, input_precision=PRECISION)
            dh_new += tl.dot(da_z.to(w0.dtype), w1, input_precision=PRECISION)
            dh_new += tl.dot(d_hn.to(w0.dtype), w2, input_precision=PRECISION)
        dh = tl.where(keep, dh_new, dh)


# The same kernels compiled for a GPU and, for CPU tensors, run by Triton's interpreter.
FORWARD, BACKWARD = triton.jit(_forward), triton.jit(_backward)
FORWARD_INTERPRETED, BACKWARD_INTERPRETED = map(InterpretedFunction, (_forward, _backward))


def kernel_options(cell: str, hidden: int, dtype: torch.dtype, precision: str) -> dict:
    """The constexprs and launch options of both kernels for `cell` at `hidden` units whose
    weights are `dtype`: one source for the launches and for compiling ahead of time."""
    spec = SPECS[cell]
    size = spec.gates * block(hidden) ** 2 * dtype.itemsize
    return dict(
        CELL=spec.kind,
        GATES=spec.gates,
        SAVED=spec.saved,
        GRADS=spec.grads,
        BLOCK_B=BLOCK_B,
        BLOCK_H=block(hidden),
        PRECISION=precision if dtype == torch.float32 else "ieee",
        # ptxas spilled 16 KiB of weights with 4 warps (tests/test_triton_aot.py)
        num_warps=4 if size < 16 * 1024 else 8,
    )


def _forward_outputs(gx: Tensor, w_hh: Tensor, cell: str) -> tuple[Tensor, Tensor]:
    directions, steps, batch, _ = gx.shape
    hidden = w_hh.shape[-1]
    out = gx.new_empty(directions, steps, batch, hidden)
    saved = SPECS[cell].saved * hidden
    return out, gx.new_empty(directions, steps, batch, saved, dtype=torch.float32)


def _forward_call(gx, w_hh, b_hh, lengths, out, acts, cell, precision) -> tuple:
    """The forward kernel's grid (batch tiles, directions), arguments and options."""
    directions, steps, batch, hidden = out.shape
    meta = kernel_options(cell, hidden, w_hh.dtype, precision)
    del meta["GRADS"]  # backward's alone
    args = (gx, w_hh, b_hh, lengths, out, acts, steps, batch, hidden)
    return (triton.cdiv(batch, BLOCK_B), directions), args, meta


def _backward_call(d_out, out, acts, w_hh, lengths, d_gates, cell, precision) -> tuple:
    directions, steps, batch, hidden = out.shape
    meta = kernel_options(cell, hidden, w_hh.dtype, precision)
    args = (d_out, out, acts, w_hh, lengths, d_gates, steps, batch, hidden)
    return (triton.cdiv(batch, BLOCK_B), directions), args, meta


def _gradient_buffer(out: Tensor, cell: str) -> Tensor:
    return out.new_empty(*out.shape[:-1], SPECS[cell].grads * out.shape[-1])


@triton_op("litlab::recurrence", mutates_args=())
def recurrence(
    gx: Tensor, w_hh: Tensor, b_hh: Tensor, lengths: Tensor, cell: str, precision: str
) -> tuple[Tensor, Tensor]:
    """All steps of `cell` from zero states, for D directions at once: gx [D, T, B, gates*H]
    (time first, the input projections), w_hh [D, gates*H, H], b_hh [D, gates*H], lengths [B]
    -> (states [D, T, B, H], each held past its sequence's end; the activations backward
    reads). `precision`: the fp32 products' tl.dot input precision ("ieee" exact, "tf32")."""
    if gx.device.type == "cpu":
        return interpreted_recurrence(gx, w_hh, b_hh, lengths, cell, precision)
    out, acts = _forward_outputs(gx, w_hh, cell)
    grid, args, meta = _forward_call(gx, w_hh, b_hh, lengths, out, acts, cell, precision)
    wrap_triton(FORWARD)[grid](*args, **meta)
    return out, acts


@triton_op("litlab::recurrence_backward", mutates_args=())
def recurrence_backward(
    d_out: Tensor,
    out: Tensor,
    acts: Tensor,
    w_hh: Tensor,
    lengths: Tensor,
    cell: str,
    precision: str,
) -> Tensor:
    """The gradients of the gates' pre-activations at every step [D, T, B, grads*H]."""
    if out.device.type == "cpu":
        return interpreted_recurrence_backward(d_out, out, acts, w_hh, lengths, cell, precision)
    d_gates = _gradient_buffer(out, cell)
    grid, args, meta = _backward_call(d_out, out, acts, w_hh, lengths, d_gates, cell, precision)
    wrap_triton(BACKWARD)[grid](*args, **meta)
    return d_gates


# On a CPU, opaque ops: a compile traces them by their shapes (the interpreter cannot run on
# fake tensors) and calls them as they are.
@torch.library.custom_op("litlab::interpreted_recurrence", mutates_args=())
def interpreted_recurrence(
    gx: Tensor, w_hh: Tensor, b_hh: Tensor, lengths: Tensor, cell: str, precision: str
) -> tuple[Tensor, Tensor]:
    out, acts = _forward_outputs(gx, w_hh, cell)
    grid, args, meta = _forward_call(gx, w_hh, b_hh, lengths, out, acts, cell, precision)
    FORWARD_INTERPRETED[grid](*args, **meta)
    return out, acts


@torch.library.custom_op("litlab::interpreted_recurrence_backward", mutates_args=())
def interpreted_recurrence_backward(
    d_out: Tensor,
    out: Tensor,
    acts: Tensor,
    w_hh: Tensor,
    lengths: Tensor,
    cell: str,
    precision: str,
) -> Tensor:
    d_gates = _gradient_buffer(out, cell)
    grid, args, meta = _backward_call(d_out, out, acts, w_hh, lengths, d_gates, cell, precision)
    BACKWARD_INTERPRETED[grid](*args, **meta)
    return d_gates


@interpreted_recurrence.register_fake
def _(gx, w_hh, b_hh, lengths, cell, precision):
    return _forward_outputs(gx, w_hh, cell)


@interpreted_recurrence_backward.register_fake
def _(d_out, out, acts, w_hh, lengths, cell, precision):
    return _gradient_buffer(out, cell)


def _save(ctx, inputs, output):
    gx, w_hh, b_hh, lengths, ctx.cell, ctx.precision = inputs
    ctx.save_for_backward(*output, w_hh, lengths)
    ctx.dtypes = gx.dtype, w_hh.dtype, b_hh.dtype


def _gradients(ctx, d_out, _):
    """The kernel's gate gradients, then the weights' and inputs' over all steps at once."""
    out, acts, w_hh, lengths = ctx.saved_tensors
    d_gates = recurrence_backward(
        d_out.contiguous(), out, acts, w_hh, lengths, ctx.cell, ctx.precision
    )
    hidden = w_hh.shape[-1]
    d_gh, d_gx = d_gates, d_gates
    if ctx.cell == "gru":  # d(r, z) feed both; W_hn h + b_hn and x_n each have their own
        d_gh = d_gates[..., : 3 * hidden]
        d_gx = torch.cat([d_gates[..., : 2 * hidden], d_gates[..., 3 * hidden :]], dim=-1)
    first = out.new_zeros(out.shape[0], 1, *out.shape[2:])  # the zero state before step 0
    h_prev = torch.cat([first, out[:, :-1]], dim=1).flatten(1, 2)  # [D, T*B, H]
    d_w = d_gh.flatten(1, 2).transpose(1, 2) @ h_prev.to(d_gh.dtype)
    d_b = d_gh.sum((1, 2))
    gx_dtype, w_dtype, b_dtype = ctx.dtypes
    return d_gx.to(gx_dtype), d_w.to(w_dtype), d_b.to(b_dtype), None, None, None


recurrence.register_autograd(_gradients, setup_context=_save)


@torch.compiler.assume_constant_result  # a compile reads it once, as a constant
def precision() -> str:
    """tl.dot's input precision for fp32: exact unless torch's matmul precision allows TF32."""
    return "ieee" if torch.get_float32_matmul_precision() == "highest" else "tf32"


NO_DEVICE = (
    "cell_impl=triton runs on a CUDA GPU (on a CPU only in Triton's interpreter, "
    "TRITON_INTERPRET=1, for tests: it is far slower); use model.net.cell_impl=torch or "
    "compiled here"
)


def interpreting() -> bool:
    """Whether CPU tensors may run the kernels in Triton's interpreter (opted into)."""
    return os.environ.get("TRITON_INTERPRET") == "1"


class TritonRecurrent(CompiledRecurrent):
    """`CompiledRecurrent`'s layer (parameters, names, interface) with its recurrence run by
    one Triton kernel per direction (see the module's note). It builds anywhere (a CPU can
    export its weights through torch's cells) but runs only where the kernels can."""

    def forward(self, x: Tensor, lengths: Tensor):
        """`x` [B, T, input], `lengths` [B] -> (outputs [B, T, D*H], last state [B, D*H])."""
        if x.device.type == "cpu" and not interpreting():
            raise LitlabError(NO_DEVICE)
        lengths = lengths.to(x.device)
        run = functools.partial(self._directions, lengths=lengths, precision=precision())
        return over_directions(run, x, lengths, self.suffixes)

    def _directions(self, sources, suffixes, lengths, precision):
        """All directions in one kernel launch, each over its own source."""
        gx, w_hh, b_hh = (
            torch.stack(parts)
            for parts in zip(*map(self.projections, sources, suffixes), strict=True)
        )
        w_hh, b_hh = w_hh.to(gx.dtype), b_hh.to(gx.dtype)
        out, _ = recurrence(gx, w_hh, b_hh, lengths, self.cell, precision)
        # a state held past its sequence's end: each direction's last step is its last state
        return out.transpose(1, 2), out[:, -1]
