import logging

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from litlab.errors import LitlabError
from litlab.kernels import CompiledRecurrent
from litlab.kernels.recurrent import CELLS, each_direction, over_directions
from litlab.settings import Cell, CellImpl, PositiveInt, Share

log = logging.getLogger(__name__)


def run_padded(layer: nn.RNNBase, x: torch.Tensor, lengths: torch.Tensor) -> tuple:
    """A one-layer, batch-first torch RNN layer over the padded batch `x` [B, T, input] ->
    (outputs [B, T, D*H], each sequence's state at its last real step [B, D*H]).

    Each direction runs forward in time (see `over_directions`), so the padding after a
    sequence is never read. Unpacked, an LSTM runs oneDNN's fused layer on a CPU, where packed
    sequences of unequal lengths would run a loop of small ATen calls per step, 2.5-3x slower
    (docs/benchmarks.md).
    """
    last = (lengths.to(x.device) - 1).view(-1, 1, 1).expand(-1, 1, layer.hidden_size)
    if not layer.bidirectional:
        out = layer(x)[0]
        return out, out.gather(1, last).squeeze(1)
    # Each direction through a one-directional layer without weights of its own, lent that
    # direction's weights.
    one_way = type(layer)(
        layer.input_size, layer.hidden_size, bias=layer.bias, batch_first=True, device="meta"
    )
    names = [name for name, _ in one_way.named_parameters()]

    def run(source, suffix):
        weights = {name: getattr(layer, name + suffix) for name in names}
        out = functional_call(one_way, weights, (source,))[0]
        return out, out.gather(1, last).squeeze(1)

    return over_directions(each_direction(run), x, lengths, ("", "_reverse"))


class RecurrentClassifier(nn.Module):
    """Embedding -> stacked recurrent layers -> linear, read at each sequence's last real step.

    Takes `(tokens [B, T], lengths [B])` and reads each sequence's state at its last real
    step, so a sequence alone or padded inside a batch of longer ones gives the same logits:
    torch's layers run over the padded batch, each direction forward in time (the reverse one
    over each sequence flipped within its length), so the padding comes after every step that
    is read; compiled cells mask it.
    `keras_compatible` gives each gate a single bias, as Keras does (PyTorch's cells carry two,
    b_ih and b_hh): the cells run without bias on inputs extended by a constant 1, whose
    weight column is that bias. It also takes Keras' initializers, which train the article's
    models far better than PyTorch's: small uniform embeddings, Glorot input kernels,
    orthogonal recurrent kernels, zero biases but 1 for the LSTM forget gate.
    `word_dropout` zeroes the embeddings of that share of the tokens in training (whole words,
    unscaled: a dropped word reads as no word), on top of `dropout` on the embedding units.
    `cell_impl="compiled"` runs the recurrence through `litlab.kernels.CompiledRecurrent`,
    `chunk` steps per compiled graph; `"triton"` through one Triton kernel per layer and
    direction (`litlab.kernels.triton_recurrent`: a CUDA GPU from sm_80 on, or Triton's
    interpreter), or compiled cells, with a line in the log, where its kernels would not fit on
    chip or the GPU is older. The state dict is the same in every case.
    """

    def __init__(
        self,
        vocab_size: PositiveInt = 10_000,
        num_classes: PositiveInt = 10,
        embedding_dim: PositiveInt = 64,
        hidden_size: PositiveInt = 64,
        num_layers: PositiveInt = 2,
        cell: Cell = "lstm",
        bidirectional: bool = False,
        keras_compatible: bool = False,
        dropout: Share = 0.0,
        word_dropout: Share = 0.0,
        cell_impl: CellImpl = "torch",
        chunk: PositiveInt = 16,
    ):
        super().__init__()
        self.keras_compatible = keras_compatible
        layer_type = CompiledRecurrent
        if cell_impl == "triton":
            # imported here: Triton loads only for the nets that run it
            from litlab.kernels.triton_recurrent import TritonRecurrent, fallback, gpu_capability

            reason = fallback(cell, hidden_size, gpu_capability())
            if reason is None:
                layer_type = TritonRecurrent
            else:
                log.warning("cell_impl=triton: %s; running compiled cells instead", reason)
                cell_impl = "compiled"
        self.cell_impl = cell_impl
        self.compiled = cell_impl != "torch"  # litlab's masked layers, taking the lengths
        self.embedding = nn.Embedding(vocab_size, embedding_dim, padding_idx=0)
        directions = 2 if bidirectional else 1
        extra = 1 if keras_compatible else 0
        sizes = [embedding_dim] + [hidden_size * directions] * (num_layers - 1)
        options = dict(bias=not keras_compatible, bidirectional=bidirectional)
        self.layers = nn.ModuleList(
            layer_type(
                cell,
                size + extra,
                hidden_size,
                bias_column=keras_compatible,
                chunk=chunk,
                **options,
            )
            if self.compiled
            else CELLS[cell](size + extra, hidden_size, batch_first=True, **options)
            for size in sizes
        )
        self.dropout = nn.Dropout(dropout)
        self.word_dropout = word_dropout
        self.head = nn.Linear(hidden_size * directions, num_classes)
        if keras_compatible:
            self._keras_init(hidden_size, cell)

    @torch.no_grad()
    def _keras_init(self, hidden: int, cell: str) -> None:
        nn.init.uniform_(self.embedding.weight, -0.05, 0.05)
        for layer in self.layers:
            for name, weight in layer.named_parameters():
                if name.startswith("weight_ih"):
                    kernel, bias = weight[:, :-1], weight[:, -1]  # last column: the bias
                    nn.init.xavier_uniform_(kernel)
                    bias.zero_()
                    if cell == "lstm":
                        bias[hidden : 2 * hidden] = 1.0  # unit forget bias (gates i, f, g, o)
                elif name.startswith("weight_hh"):
                    for block in weight.view(-1, hidden, hidden):  # one block per gate
                        nn.init.orthogonal_(block)
        nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def compile(self, *, mode: str | None = None, fullgraph: bool = False, **options) -> None:
        """Compile in place, as `nn.Module.compile`, with the compiled cells' chunks in `mode`
        too. With torch's or compiled cells the recurrence stays out of the net's graph (the
        compiler leaves torch's RNN layers to ATen; compiled cells run graphs of their own,
        one per chunk of steps, whatever the length), so only Triton's net compiles as one
        full graph, its kernels traced into it."""
        if fullgraph and self.cell_impl != "triton":
            raise LitlabError(
                "model.compile.fullgraph=true cannot hold for a recurrent net with "
                f"cell_impl={self.cell_impl}: its recurrence runs outside the net's graph "
                "(compiled cells compile each chunk of steps as one full graph already); set "
                "model.compile.fullgraph=false, or model.net.cell_impl=triton on a GPU"
            )
        for layer in self.layers:
            if isinstance(layer, CompiledRecurrent):
                layer.mode = mode
        super().compile(mode=mode, fullgraph=fullgraph, **options)

    def forward(self, batch) -> torch.Tensor:
        tokens, lengths = batch
        x = self.embedding(tokens)
        if self.training and self.word_dropout:  # whole words, unscaled
            x = x * (torch.rand(*tokens.shape, 1, device=x.device) >= self.word_dropout)
        x = self.dropout(x)
        for i, layer in enumerate(self.layers):
            if i:
                x = self.dropout(x)
            if self.compiled:
                x, last = layer(x, lengths)
            else:
                if self.keras_compatible:  # the constant-1 input whose weights are the bias
                    x = F.pad(x, (0, 1), value=1.0)
                x, last = run_padded(layer, x, lengths)
        return self.head(self.dropout(last))


class LSTMClassifier(RecurrentClassifier):
    """The article's text classifier (sec. 4.2): Embedding(10000, 64) -> LSTM(64) -> LSTM(64)
    -> Dense. With `keras_compatible=True` and 10 classes it has Keras' 706,698 parameters."""

    def __init__(self, keras_compatible: bool = True, **kwargs):
        super().__init__(cell="lstm", keras_compatible=keras_compatible, **kwargs)


class RNN(RecurrentClassifier):
    """The Elman network of sec. 3.3: h_t = tanh(W_hh h_{t-1} + W_xh x_t + b_h),
    y = W_hy h_T + b_y; stack it with `num_layers`. `keras_compatible` keeps the single b_h."""

    def __init__(self, num_layers: PositiveInt = 1, keras_compatible: bool = True, **kwargs):
        super().__init__(
            cell="rnn", num_layers=num_layers, keras_compatible=keras_compatible, **kwargs
        )
