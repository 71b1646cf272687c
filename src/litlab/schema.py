"""The settings of litlab's train config, by type and range: the one place they are checked.

Each class lists the settings of one `_target_` (their values live in conf/), or of a part of
the config without one (the top level, `paths`). `check_config` walks a composed config and
refuses the first value that does not fit with one line naming the key and what it takes,
before anything is imported or written. A node whose `_target_` is not listed here (a user's
own class) is left to that class, though the nodes inside it are still checked. Interpolated
values are checked where they point to, so `${data.num_classes}` is checked once, at the data.

Importing this module is cheap (no torch): every command line is checked with it first.
"""

import types
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypedDict, Union, get_args, get_origin, get_type_hints

from omegaconf import DictConfig, ListConfig, OmegaConf

from litlab.errors import LitlabError


@dataclass(frozen=True)
class Range:
    """Bounds on a number: `low`/`high` inclusive, `above`/`below` exclusive."""

    low: float | None = None
    above: float | None = None
    below: float | None = None
    high: float | None = None

    def holds(self, value) -> bool:
        return not (
            (self.low is not None and value < self.low)
            or (self.above is not None and value <= self.above)
            or (self.below is not None and value >= self.below)
            or (self.high is not None and value > self.high)
        )

    def words(self) -> str:
        if self.low is not None and (self.below, self.high) != (None, None):
            return (
                f"in [{self.low}, {self.high}]"
                if self.below is None
                else f"in [{self.low}, {self.below})"
            )
        if self == Range(above=0) or self == Range(low=1):
            return "positive"
        if self == Range(low=0):
            return "non-negative"
        bounds = [(">=", self.low), (">", self.above), ("<", self.below), ("<=", self.high)]
        return " and ".join(f"{sign} {bound}" for sign, bound in bounds if bound is not None)


PositiveInt = Annotated[int, Range(low=1)]
Count = Annotated[int, Range(low=0)]  # zero allowed: none of them
Positive = Annotated[float, Range(above=0)]
NonNegative = Annotated[float, Range(low=0)]
Share = Annotated[float, Range(low=0, below=1)]  # dropout, a split's fraction
Shape = list[PositiveInt]

Activation = Literal["relu", "sigmoid", "tanh"]
Pool = Literal["max", "avg"]
Cell = Literal["rnn", "lstm", "gru"]
CellImpl = Literal["torch", "compiled", "triton"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
Reconstruction = Literal["bce", "mse"]
Resume = Literal["auto", "auto_or_fresh"]
MatmulPrecision = Literal["highest", "high", "medium"]  # torch.set_float32_matmul_precision's
Precision = Literal[
    "16-true", "16-mixed", "bf16-true", "bf16-mixed", "32-true", "64-true", "16", "32", "64", "bf16"
]
Mode = Literal["max", "min"]


class CompileOptions(TypedDict, total=False):
    mode: CompileMode
    dynamic: bool | None
    fullgraph: bool


# --- the top level ---------------------------------------------------------------------------


class Paths(TypedDict, total=False):
    root_dir: str
    data_dir: str
    log_dir: str
    output_dir: str


class Pretrain(TypedDict, total=False):
    max_epochs: PositiveInt
    model: Any
    data: Any


class TrainConfig(TypedDict, total=False):
    task_name: str
    seed: int
    float32_matmul_precision: MatmulPrecision
    monitor: str
    monitor_mode: Mode
    optimized_metric: str | None
    train: bool
    test: bool
    ckpt_path: str | None
    resume: Resume | None
    paths: Paths
    pretrain: Pretrain | None
    compare_scratch: bool


# --- data ------------------------------------------------------------------------------------


class Loading(TypedDict, total=False):
    data_dir: str
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    seed: int
    num_classes: PositiveInt
    num_workers: Count


class MNISTData(Loading, total=False):
    name: Literal["mnist", "fashion_mnist"]
    val_size: PositiveInt
    labelled: PositiveInt | None
    download: bool
    mean: float
    std: Positive
    input_shape: Shape


class TextData(Loading, total=False):
    corpus: str
    text_column: str
    label_column: str
    encoding: str
    val_path: str | None
    test_path: str | None
    vocab_size: Annotated[int, Range(low=3)]  # padding, unknown and at least one word
    max_len: PositiveInt
    train_window: Literal["first", "random"]
    lowercase: bool
    val_fraction: Share
    test_fraction: Share
    bucketing: bool
    pool_batches: PositiveInt
    pad_to_multiple_of: PositiveInt
    tokenizer_dir: str | None


class ImageFolderData(TypedDict, total=False):
    root: str
    num_classes: PositiveInt
    channels: Literal[1, 3]
    image_size: PositiveInt | None
    input_shape: Shape | None
    mean: float | list[float] | None
    std: Positive | list[Positive] | None
    val_fraction: Share
    test_fraction: Share
    labelled: PositiveInt | None
    seed: int
    batch_size: PositiveInt
    eval_batch_size: PositiveInt
    save_dir: str | None
    num_workers: Count


# --- models and nets -------------------------------------------------------------------------


class LitModule(TypedDict, total=False):
    optimizer: Any
    scheduler: Any
    compile: Literal[False] | CompileMode | CompileOptions | None
    channels_last: bool


class ClassifierModel(LitModule, total=False):
    net: Any
    loss: Literal["cross_entropy", "mse"]
    num_classes: PositiveInt
    init_from: str | None


class AutoencoderModel(LitModule, total=False):
    encoder: Any
    decoder: Any
    latent_dim: PositiveInt
    recon: Reconstruction


class VAEModel(AutoencoderModel, total=False):
    beta: NonNegative
    kl_warmup_epochs: Count
    log_prob_samples: Count


class MLPNet(TypedDict, total=False):
    input_shape: Shape
    num_classes: PositiveInt
    hidden: list[PositiveInt]
    activation: Activation
    dropout: Share


class SeedCNNNet(TypedDict, total=False):
    input_shape: Shape
    num_classes: PositiveInt


class ConvLayers(TypedDict, total=False):
    input_shape: Shape
    channels: list[PositiveInt]
    kernel_size: PositiveInt | list[PositiveInt]  # one for every block, or one per block
    pool: Pool
    pooled_blocks: Count | None
    activation: Activation


class CNNNet(ConvLayers, total=False):
    num_classes: PositiveInt
    hidden: list[PositiveInt]
    dropout: Share


class ConvEncoderNet(ConvLayers, total=False):
    out_features: PositiveInt


class RecurrentNet(TypedDict, total=False):
    vocab_size: PositiveInt
    num_classes: PositiveInt
    embedding_dim: PositiveInt
    hidden_size: PositiveInt
    num_layers: PositiveInt
    cell: Cell
    bidirectional: bool
    keras_compatible: bool
    dropout: Share
    word_dropout: Share
    cell_impl: CellImpl
    chunk: PositiveInt


class MLPEncoderNet(TypedDict, total=False):
    input_shape: Shape
    out_features: PositiveInt
    hidden: list[PositiveInt]
    activation: Activation
    batch_norm: bool


class MLPDecoderNet(TypedDict, total=False):
    latent_dim: PositiveInt
    output_shape: Shape
    hidden: list[PositiveInt]
    activation: Activation
    batch_norm: bool


class ConvDecoderNet(TypedDict, total=False):
    latent_dim: PositiveInt
    output_shape: Shape
    channels: Annotated[int, Range(low=2)]  # halved once


# --- optimization ----------------------------------------------------------------------------


class Adam(TypedDict, total=False):
    lr: Positive
    betas: list[Share]
    eps: Positive
    weight_decay: NonNegative
    fused: bool | None


class SGD(TypedDict, total=False):
    lr: Positive
    momentum: NonNegative
    weight_decay: NonNegative


class Schedule(TypedDict, total=False):
    interval: Literal["epoch", "step"]  # when it steps (litlab.models.base reads it)


class CosineAnnealing(Schedule, total=False):
    T_max: PositiveInt
    eta_min: NonNegative


class StepSchedule(Schedule, total=False):
    step_size: PositiveInt
    gamma: Positive


class OneCycle(Schedule, total=False):
    max_lr: Positive
    total_steps: PositiveInt | None
    epochs: PositiveInt | None
    steps_per_epoch: PositiveInt | None
    pct_start: Annotated[float, Range(above=0, below=1)]
    anneal_strategy: Literal["cos", "linear"]
    cycle_momentum: bool
    div_factor: Positive
    final_div_factor: Positive
    three_phase: bool


# --- the Trainer, callbacks and loggers (Lightning's own take more settings) -----------------


class Trainer(TypedDict, total=False):
    default_root_dir: str
    min_epochs: Count | None
    max_epochs: PositiveInt | None
    max_steps: Annotated[int, Range(low=-1)]
    accelerator: str
    devices: PositiveInt | str | list[Count]
    num_nodes: PositiveInt
    strategy: str
    sync_batchnorm: bool
    precision: Precision | Literal[16, 32, 64]
    check_val_every_n_epoch: PositiveInt | None
    log_every_n_steps: PositiveInt
    deterministic: bool | Literal["warn"]
    fast_dev_run: bool | PositiveInt
    limit_train_batches: PositiveInt | Annotated[float, Range(low=0, high=1)]
    limit_val_batches: Count | Annotated[float, Range(low=0, high=1)]
    limit_test_batches: PositiveInt | Annotated[float, Range(low=0, high=1)]
    overfit_batches: Count | Annotated[float, Range(low=0, high=1)]
    gradient_clip_val: NonNegative | None
    profiler: str | None


class ModelCheckpoint(TypedDict, total=False):
    dirpath: str | None
    filename: str | None
    monitor: str | None
    mode: Mode
    save_top_k: Annotated[int, Range(low=-1)]
    save_last: bool | Literal["link"] | None
    auto_insert_metric_name: bool


class EarlyStopping(TypedDict, total=False):
    monitor: str
    mode: Mode
    patience: Count
    min_delta: NonNegative


class ModelSummary(TypedDict, total=False):
    max_depth: Annotated[int, Range(low=-1)]


class ProgressBar(TypedDict, total=False):
    update_every: PositiveInt
    refresh_rate: PositiveInt
    leave: bool


class RunPictures(TypedDict, total=False):
    dirpath: str


class GenerativePictures(TypedDict, total=False):
    dirpath: str
    n: PositiveInt
    scatter_points: PositiveInt


class FileLogger(TypedDict, total=False):
    save_dir: str
    name: str | None
    version: str | int | None


class TensorBoard(FileLogger, total=False):
    default_hp_metric: bool


class MLFlow(TypedDict, total=False):
    experiment_name: str
    tracking_uri: str | None
    artifact_location: str | None
    tags: dict | None
    log_model: bool | Literal["all"]


class Wandb(TypedDict, total=False):
    project: str | None
    save_dir: str
    offline: bool
    log_model: bool | Literal["all"]
    settings: dict | None


# The settings of each `_target_` the configs name.
SETTINGS: dict[str, type] = {
    "litlab.data.MNISTDataModule": MNISTData,
    "litlab.data.TextDataModule": TextData,
    "litlab.data.ImageFolderDataModule": ImageFolderData,
    "litlab.models.Classifier": ClassifierModel,
    "litlab.models.Autoencoder": AutoencoderModel,
    "litlab.models.VAE": VAEModel,
    "litlab.nets.MLP": MLPNet,
    "litlab.nets.CNN": CNNNet,
    "litlab.nets.SeedCNN": SeedCNNNet,
    "litlab.nets.RecurrentClassifier": RecurrentNet,
    "litlab.nets.LSTMClassifier": RecurrentNet,
    "litlab.nets.RNN": RecurrentNet,
    "litlab.nets.MLPEncoder": MLPEncoderNet,
    "litlab.nets.MLPDecoder": MLPDecoderNet,
    "litlab.nets.ConvEncoder": ConvEncoderNet,
    "litlab.nets.ConvDecoder": ConvDecoderNet,
    "torch.optim.Adam": Adam,
    "torch.optim.SGD": SGD,
    "torch.optim.lr_scheduler.CosineAnnealingLR": CosineAnnealing,
    "torch.optim.lr_scheduler.StepLR": StepSchedule,
    "torch.optim.lr_scheduler.OneCycleLR": OneCycle,
    "lightning.pytorch.Trainer": Trainer,
    "lightning.pytorch.callbacks.ModelCheckpoint": ModelCheckpoint,
    "lightning.pytorch.callbacks.EarlyStopping": EarlyStopping,
    "lightning.pytorch.callbacks.RichModelSummary": ModelSummary,
    "litlab.callbacks.ProgressBar": ProgressBar,
    "litlab.callbacks.RunPictures": RunPictures,
    "litlab.callbacks.GenerativePictures": GenerativePictures,
    "litlab.loggers.CSVLogger": FileLogger,
    "lightning.pytorch.loggers.TensorBoardLogger": TensorBoard,
    "lightning.pytorch.loggers.MLFlowLogger": MLFlow,
    "lightning.pytorch.loggers.WandbLogger": Wandb,
}
# Classes taking more settings than listed (Lightning's, torch's, a `**kwargs`): a key not
# listed passes to them unchecked. Every other listed class refuses a key it does not take.
OPEN = {target for target in SETTINGS if not target.startswith("litlab.")} | {
    "litlab.callbacks.ProgressBar",
    "litlab.loggers.CSVLogger",
}


def check_config(cfg: DictConfig) -> None:
    """Refuse the first value of `cfg` (a composed train config) that does not fit its setting."""
    _check_mapping(cfg, TrainConfig, "", closed=False)


def _check_mapping(node: DictConfig, schema: type | None, prefix: str, closed: bool) -> None:
    hints = get_type_hints(schema, include_extras=True) if schema else {}
    for key in node:
        key = str(key)
        if key.startswith("_"):
            continue
        where = f"{prefix}{key}"
        if OmegaConf.is_missing(node, key):
            raise LitlabError(f"Missing mandatory value: {where}; set it with {where}=...")
        if OmegaConf.is_interpolation(node, key):
            continue  # checked where it points to
        value = node[key]
        if key in hints:
            _check_value(value, hints[key], where)
        elif closed:
            owner = node.get("_target_") or prefix.rstrip(".")
            raise LitlabError(
                f"{where} is not a setting of {owner} (it takes {', '.join(sorted(hints))}); "
                "check its spelling"
            )
        else:
            _walk(value, where)


def _walk(value, where: str) -> None:
    """Check the listed classes anywhere inside `value`."""
    if isinstance(value, ListConfig):
        for i in range(len(value)):
            if not OmegaConf.is_interpolation(value, i):
                _walk(value[i], f"{where}[{i}]")
    elif isinstance(value, DictConfig):
        named = "_target_" in value and not OmegaConf.is_interpolation(value, "_target_")
        target = value["_target_"] if named else None
        schema = SETTINGS.get(target) if isinstance(target, str) else None
        closed = schema is not None and target not in OPEN
        _check_mapping(value, schema, f"{where}.", closed)


def _check_value(value, hint, where: str) -> None:
    problem = _misfit(value, hint)
    if problem is not None:
        raise LitlabError(f"{where}={_show(value)} {problem}")
    if isinstance(value, DictConfig | ListConfig):
        alternatives = _alternatives(hint)
        settings = next((a for a in alternatives if _is_typed_dict(a)), None)
        if settings is not None and isinstance(value, DictConfig):
            _check_mapping(value, settings, f"{where}.", closed=True)
        elif Any in alternatives or dict in alternatives:
            _walk(value, where)


def _misfit(value, hint) -> str | None:
    """Why `value` does not fit `hint` (its type or range), or None when it does."""
    alternatives = _alternatives(hint)
    if len(alternatives) > 1:
        misfits = [_misfit(value, alternative) for alternative in alternatives]
        if None in misfits:
            return None
        near = [m for m in misfits if m.startswith("must be")]  # the right type, out of range
        return near[0] if len(near) == 1 else f"is not {_or(alternatives)}"
    if get_origin(hint) is Annotated:
        base, *marks = get_args(hint)
        if _misfit(value, base) is not None:
            return f"is not {_describe(hint)}"
        if any(isinstance(mark, Range) and not mark.holds(value) for mark in marks):
            return f"must be {_describe(hint)}"
        return None
    return None if _is(value, hint) else f"is not {_describe(hint)}"


def _alternatives(hint) -> tuple:
    if get_origin(hint) in (Union, types.UnionType):
        return tuple(a for h in get_args(hint) for a in _alternatives(h))
    return (hint,)


def _is(value, hint) -> bool:
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict:
        return isinstance(value, DictConfig)
    if get_origin(hint) is Literal:
        return any(value == a and type(value) is type(a) for a in get_args(hint))
    if get_origin(hint) is list:
        (item,) = get_args(hint)
        return isinstance(value, ListConfig) and all(
            OmegaConf.is_interpolation(value, i) or _misfit(value[i], item) is None
            for i in range(len(value))
        )
    if _is_typed_dict(hint):
        return isinstance(value, DictConfig)
    raise TypeError(f"no check for {hint!r}")


def _is_typed_dict(hint) -> bool:
    return isinstance(hint, type) and issubclass(hint, dict) and hasattr(hint, "__total__")


def _describe(hint) -> str:
    if get_origin(hint) is Annotated:
        base, *marks = get_args(hint)
        words = " ".join(mark.words() for mark in marks if isinstance(mark, Range))
        noun = {int: "integer", float: "number"}[base]
        if words in ("positive", "non-negative"):
            return f"a {words} {noun}"
        return f"an {noun} {words}" if base is int else f"a {noun} {words}"
    if get_origin(hint) is Literal:
        values = get_args(hint)
        if len(values) == 1:
            return _show(values[0])
        return "one of " + ", ".join(v if isinstance(v, str) else _show(v) for v in values)
    if get_origin(hint) is list:
        item = _describe(get_args(hint)[0]).split(" ", 1)[1]
        return f"a list of {item.replace('integer', 'integers').replace('number', 'numbers')}"
    if _is_typed_dict(hint):
        return "a mapping of " + ", ".join(get_type_hints(hint))
    names = {
        int: "an integer",
        float: "a number",
        bool: "true or false",
        str: "a string",
        dict: "a mapping",
        type(None): "null",
    }
    return names[hint]


def _or(alternatives: tuple) -> str:
    """`alternatives` in words, their fixed values in one list (null last)."""
    values = [v for a in alternatives if get_origin(a) is Literal for v in get_args(a)]
    nullable = type(None) in alternatives
    words = [_describe(a) for a in alternatives if get_origin(a) is not Literal]
    words = [w for w in words if w != "null"]
    if values:
        shown = dict.fromkeys(v if isinstance(v, str) else _show(v) for v in values)
        words.insert(0, "one of " + ", ".join([*shown, *(["null"] if nullable else [])]))
    elif nullable:
        words.append("null")
    return ", ".join(words[:-1]) + f" or {words[-1]}" if len(words) > 1 else words[0]


def _show(value) -> str:
    if isinstance(value, DictConfig | ListConfig):
        return str(OmegaConf.to_container(value))
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    return repr(value) if isinstance(value, str) else str(value)
