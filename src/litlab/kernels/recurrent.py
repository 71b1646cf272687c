"""Recurrent layers whose time steps run as compiled chunks.

`nn.LSTM`/`nn.GRU`/`nn.RNN` run each time step as a handful of ATen calls. Here the input
projection of every time step is one matrix product outside the recurrence, and the
recurrence runs in chunks of `chunk` unrolled steps, each chunk one graph that
`torch.compile` fuses (gates and state update in one kernel per step, C++ on CPU, Triton on
GPU). The chunk has a fixed length, so a new sequence length only changes how many chunks
run: no recompilation per length, and no graph break inside a chunk (`fullgraph=True`). Its
shapes are static too, so on a GPU `reduce-overhead` replays each chunk as one CUDA graph.
Lengths are handled by masking: past its last real step a sequence's state stays as it was,
so padding never leaks, as with packed sequences.
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn

from litlab.settings import Cell


def _rnn_step(gx, gh, h, c):
    h = torch.tanh(gx + gh)
    return h, c


def _lstm_step(gx, gh, h, c):
    i, f, g, o = (gx + gh).chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def _gru_step(gx, gh, h, c):
    x_r, x_z, x_n = gx.chunk(3, dim=-1)
    h_r, h_z, h_n = gh.chunk(3, dim=-1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    return (1 - z) * n + z * h, c


def _steps(step, gx, keep, h, c, w_hh_t, b_hh):
    """Run `len(gx)` steps of one cell; `keep[t]` is False where a sequence has ended."""
    outputs = []
    for t in range(gx.shape[0]):
        h_new, c_new = step(gx[t], torch.addmm(b_hh, h, w_hh_t), h, c)
        h = torch.where(keep[t], h_new, h)
        c = torch.where(keep[t], c_new, c)
        outputs.append(h)
    return torch.stack(outputs), h, c


# One function per cell, so each has its own compiled graphs (and recompile budget).
def _rnn_chunk(*tensors):
    return _steps(_rnn_step, *tensors)


def _lstm_chunk(*tensors):
    return _steps(_lstm_step, *tensors)


def _gru_chunk(*tensors):
    return _steps(_gru_step, *tensors)


# The torch layers these stand in for, whose parameters they hold.
CELLS: dict[Cell, type[nn.RNNBase]] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
CHUNKS = {"rnn": _rnn_chunk, "lstm": _lstm_chunk, "gru": _gru_chunk}


@functools.cache
def compiled_chunk(cell: str, mode: str | None = None):
    """`cell`'s chunk as one graph, compiled in `mode` ("reduce-overhead": a CUDA graph)."""
    return torch.compile(CHUNKS[cell], fullgraph=True, mode=mode)


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Flip each sequence's real steps (padding stays in place): its own inverse."""
    steps = torch.arange(x.shape[1], device=x.device)
    index = torch.where(steps < lengths[:, None], lengths[:, None] - 1 - steps, steps)
    return x.gather(1, index[..., None].expand_as(x))


def over_directions(run, x: torch.Tensor, lengths: torch.Tensor, suffixes) -> tuple:
    """`run(sources, suffixes) -> (outputs, last states)`, one of each per direction, side by
    side. Each runs forward in time, the reverse one ("_reverse") over the sequences flipped
    within their lengths, its outputs flipped back, so the padding after a sequence is never
    read."""
    sources = [reverse_within_lengths(x, lengths) if suffix else x for suffix in suffixes]
    outputs, lasts = run(sources, suffixes)
    outputs = [
        reverse_within_lengths(out, lengths) if suffix else out
        for out, suffix in zip(outputs, suffixes, strict=True)
    ]
    return torch.cat(outputs, dim=-1), torch.cat(list(lasts), dim=-1)


def each_direction(run):
    """`run(source, suffix) -> (outputs, last state)` of one direction, as `over_directions`'
    run of them all, one after another."""
    return lambda sources, suffixes: tuple(zip(*map(run, sources, suffixes), strict=True))


class CompiledRecurrent(nn.Module):
    """One layer of `cell` ("rnn" | "lstm" | "gru"), batch first, over padded batches.

    It holds the parameters `nn.LSTM` (etc.) would hold, under the same names and with the
    same initialization, so state dicts move between the two. `bias_column`: the layer has no
    bias parameters; the last column of the input weights is the bias, as if the input ended
    in a constant 1 (Keras' single bias per gate), and `x` comes without that 1.
    """

    def __init__(
        self,
        cell: str,
        input_size: int,
        hidden_size: int,
        bias: bool = True,
        bidirectional: bool = False,
        bias_column: bool = False,
        chunk: int = 16,
    ):
        super().__init__()
        if cell not in CHUNKS:
            raise ValueError(f"unknown cell {cell!r}; choose one of {sorted(CHUNKS)}")
        self.cell, self.hidden_size, self.bias_column = cell, hidden_size, bias_column
        self.chunk = chunk  # steps per compiled graph: longer compiles slower, shorter runs slower
        self.mode = None  # the chunks' torch.compile mode (`RecurrentClassifier.compile` sets it)
        reference = CELLS[cell](input_size, hidden_size, bias=bias, bidirectional=bidirectional)
        for name, parameter in reference.named_parameters():
            self.register_parameter(name, parameter)
        self.suffixes = ("", "_reverse") if bidirectional else ("",)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor):
        """`x` [B, T, input], `lengths` [B] -> (outputs [B, T, D*H], last state [B, D*H])."""
        lengths = lengths.to(x.device)
        keep = (torch.arange(x.shape[1], device=x.device)[:, None] < lengths).unsqueeze(-1)
        run = functools.partial(self._direction, keep=keep)
        return over_directions(each_direction(run), x, lengths, self.suffixes)

    def projections(self, x: torch.Tensor, suffix: str) -> tuple:
        """One direction's input projections of all steps, time first [T, B, gates*H] (one
        matrix product), its recurrent weights and biases (zeros where it has none)."""
        w_ih = getattr(self, f"weight_ih_l0{suffix}")
        w_hh = getattr(self, f"weight_hh_l0{suffix}")
        x = x.transpose(0, 1)  # time first: the products come out contiguous per step
        if self.bias_column:
            gx = F.linear(x, w_ih[:, :-1], w_ih[:, -1])
        else:
            gx = F.linear(x, w_ih, getattr(self, f"bias_ih_l0{suffix}", None))
        b_hh = getattr(self, f"bias_hh_l0{suffix}", None)
        if b_hh is None:
            b_hh = w_hh.new_zeros(w_hh.shape[0])
        return gx, w_hh, b_hh

    @torch.compiler.disable  # the chunk loop stays in Python: lengths never recompile it
    def _direction(self, x, suffix: str, keep):
        gx, w_hh, b_hh = self.projections(x, suffix)
        steps, batch = gx.shape[:2]
        padded = -steps % self.chunk  # whole chunks only: one compiled shape
        gx = F.pad(gx, (0, 0, 0, 0, 0, padded))
        keep = F.pad(keep, (0, 0, 0, 0, 0, padded))
        # requires_grad as every later chunk's state: the first chunk needs no graph of its own
        h, c = x.new_zeros(2, batch, self.hidden_size).requires_grad_(gx.requires_grad)
        run_chunk = compiled_chunk(self.cell, self.mode)
        outputs = []
        for parts in zip(gx.split(self.chunk), keep.split(self.chunk), strict=True):
            out, h, c = run_chunk(*parts, h, c, w_hh.t(), b_hh)
            outputs.append(out)
        return torch.cat(outputs)[:steps].transpose(0, 1), h
