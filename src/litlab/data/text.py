"""Text classification data: any corpus, a word-level tokenizer fitted on train, bucketed batches.

A batch is `(PaddedTokens(tokens [B, T], lengths [B]), labels [B])`, padded only to its longest
sequence (or up to a multiple of `pad_to_multiple_of`: fewer distinct shapes, each a CUDA
graph under `reduce-overhead`). The bucketing batch sampler groups sequences of similar length,
so little compute is spent on padding, and takes its indices from an ordinary sampler that
Lightning can swap for a `DistributedSampler` under DDP.
"""

import io
import json
import random
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Annotated, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel
from tokenizers.trainers import WordLevelTrainer
from torch.export import Dim
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
)

from litlab.data.base import (
    InputItem,
    Modality,
    SplitDataModule,
    check_fractions,
    stratified_split,
    whole_batch,
)
from litlab.data.corpora import (
    CORPORA,
    HUB_PREFIX,
    Records,
    corpus_digest,
    corpus_records,
    csv_rows,
    read_corpus,
    read_hub,
    records_digest,
)
from litlab.data.fetch import locate, not_found
from litlab.data.progress import counted, rows_progress
from litlab.data.token_cache import (
    FORMAT,
    SPLITS,
    Entry,
    Plan,
    Ragged,
    Source,
    cached,
    encode_splits,
    finished,
    key_of,
    label_codes,
    train_texts,
)
from litlab.errors import LitlabError
from litlab.files import atomic_write
from litlab.settings import Count, PositiveInt, Range, Share, TrainWindow

PAD, UNK = "[PAD]", "[UNK]"  # ids 0 and 1
TOKENIZER_FILE, LABELS_FILE = "tokenizer.json", "labels.json"


class PaddedTokens(NamedTuple):
    tokens: torch.Tensor  # [B, T] int64, 0 = [PAD]
    lengths: torch.Tensor  # [B] int64, each >= 1


def fit_tokenizer(texts: Iterable[str], vocab_size: int, lowercase: bool = True) -> Tokenizer:
    """A word-level tokenizer whose vocabulary holds the most frequent words of `texts`."""
    tokenizer = Tokenizer(WordLevel(unk_token=UNK))
    steps = [normalizers.NFKC()] + ([normalizers.Lowercase()] if lowercase else [])
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = WordLevelTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, UNK], show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def encode(tokenizer: Tokenizer, texts: Sequence[str], max_len: int | None) -> list[torch.Tensor]:
    """Token ids per text, truncated to `max_len` (None: whole); an empty text becomes one [UNK]."""
    unk = tokenizer.token_to_id(UNK)
    return [
        torch.tensor(e.ids[:max_len] or [unk], dtype=torch.int64)
        for e in tokenizer.encode_batch(list(texts), add_special_tokens=False)
    ]


def text_lines(path: Path) -> Iterator[InputItem]:
    """(input name, text, error) for each line of a text file."""
    data = path.read_bytes()
    if b"\0" in data:
        yield str(path), None, "not a text file (it holds NUL bytes); give one text per line"
        return
    lines = data.splitlines()
    if not lines:
        yield str(path), None, "the file is empty; give one text per line"
    for number, raw in enumerate(lines, 1):
        name = f"{path}:{number}"
        try:
            text = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            yield name, None, "not valid UTF-8; save the file as UTF-8"
            continue
        yield name, text or None, None if text else "empty line: there is nothing to classify"


TABLES = (".csv", ".tsv", ".jsonl", ".json")  # files read by column, as corpora are


def column_texts(path: Path, column: str, encoding: str = "utf-8") -> list[InputItem]:
    """(input name, text, error) for each row of a .csv/.tsv file (after its header) or each
    object of a JSON lines file: the text in `column`, named `file:line`."""
    raw = path.read_bytes()
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        return [(f"{path}:{line}", None, f"not valid {encoding}; save the file as UTF-8")]
    if path.suffix in (".jsonl", ".json"):
        return [_json_text(f"{path}:{n}", line, column) for n, line in _numbered(text) if line]
    items: list[InputItem] = []
    at = None
    for line, row, problem in csv_rows(path, io.StringIO(text, newline="")):
        if problem is not None:
            return [*items, (f"{path}:{line}", None, problem)]
        if at is None:  # the header
            if column not in row:
                columns = ", ".join(row)
                return [
                    (
                        str(path),
                        None,
                        f"no column {column!r} (columns: {columns}); pass text_column=",
                    )
                ]
            at = row.index(column)
            continue
        text = row[at].strip()
        items.append(
            (f"{path}:{line}", text or None, None if text else f"no text in column {column!r}")
        )
    return items or [(str(path), None, "no rows: give a header row, then one text a row")]


def _numbered(text: str) -> Iterator[tuple[int, str]]:
    # split on "\n" only: JSON strings may hold raw U+2028 and other line separators
    return ((n, line.strip()) for n, line in enumerate(text.split("\n"), 1))


def _json_text(name: str, line: str, column: str) -> InputItem:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as err:
        return name, None, f"not a JSON object ({err.msg})"
    if not isinstance(row, dict) or not isinstance(row.get(column), str):
        return name, None, f"no text in key {column!r}; pass text_column="
    return (name, row[column].strip(), None) if row[column].strip() else (name, None, "no text")


class TokenizedTexts(Dataset):
    """Token sequences and labels. With `window`, a longer sequence is read through a window of
    that many tokens at a random place, drawn anew each time (an augmentation for training).
    A batch is padded to its longest sequence, rounded up to a multiple of `pad_to_multiple_of`."""

    def __init__(
        self,
        sequences: Sequence[torch.Tensor],  # a list, or a memory-mapped `Ragged`
        labels: torch.Tensor,
        window: int | None = None,
        pad_to_multiple_of: int = 1,
    ):
        self.sequences, self.labels, self.window = sequences, labels, window
        self.pad_to_multiple_of = pad_to_multiple_of
        if isinstance(sequences, Ragged):
            lengths = sequences.lengths()
        else:
            lengths = np.array([len(s) for s in sequences], dtype=np.int64)
        self.lengths = torch.from_numpy(np.minimum(lengths, window) if window else lengths)

    def __len__(self) -> int:
        return len(self.labels)

    def _read(self, i: int) -> torch.Tensor:
        sequence = self.sequences[i]
        extra = len(sequence) - (self.window or len(sequence))
        if extra <= 0:
            return sequence
        start = int(torch.randint(extra + 1, ()))
        return sequence[start : start + self.window]

    def __getitems__(self, indices: Sequence[int]) -> tuple[PaddedTokens, torch.Tensor]:
        tokens = pad_sequence([self._read(i) for i in indices], batch_first=True)
        tokens = F.pad(tokens, (0, -tokens.shape[1] % self.pad_to_multiple_of))  # 0 = [PAD]
        index = torch.as_tensor(indices)
        return PaddedTokens(tokens, self.lengths[index]), self.labels[index]

    def __getitem__(self, i: int):
        (tokens, lengths), labels = self.__getitems__([i])
        return PaddedTokens(tokens[0], lengths[0]), labels[0]


class BucketBatchSampler(BatchSampler):
    """Batches of similar-length sequences.

    Indices come from `sampler` in pools of `pool_batches * batch_size`; each pool is sorted
    by length and cut into batches, and the batches are shuffled unless the sampler is
    sequential. A `BatchSampler` subclass, so Lightning can rebuild it around a
    `DistributedSampler` under DDP.
    """

    def __init__(
        self,
        sampler: Sampler[int],
        batch_size: int,
        drop_last: bool = False,
        lengths: Sequence[int] = (),
        pool_batches: int = 50,
    ):
        super().__init__(sampler, batch_size, drop_last)
        self.lengths, self.pool_batches = np.asarray(lengths), pool_batches

    def __iter__(self) -> Iterator[list[int]]:
        indices = np.fromiter(self.sampler, dtype=np.int64)
        pool = self.pool_batches * self.batch_size
        shuffle = not isinstance(self.sampler, SequentialSampler)
        rng = random.Random(int(torch.randint(2**62, ()))) if shuffle else None
        for start in range(0, len(indices), pool):
            chunk = indices[start : start + pool]
            chunk = chunk[np.argsort(self.lengths[chunk], kind="stable")].tolist()
            batches = [
                chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)
            ]
            if self.drop_last and len(batches[-1]) < self.batch_size:
                batches.pop()
            if rng is not None:
                rng.shuffle(batches)
            yield from batches


class TextInputs(Modality):
    """A trained text run's inputs outside training, for litlab-predict and litlab-export:
    its saved tokenizer and class names, texts read from files, and the exported signature."""

    tokenizer: Tokenizer | None

    @classmethod
    def for_run(cls, config, run_dir: Path):
        config.tokenizer_dir = str(run_dir)  # the run's own vocabulary, wherever it now lives
        return config

    def restore(self) -> None:
        """The tokenizer and class names saved in `tokenizer_dir` by training."""
        directory = Path(self.hparams.tokenizer_dir or ".")
        for name in (TOKENIZER_FILE, LABELS_FILE):
            if not (directory / name).is_file():
                raise LitlabError(
                    f"no {name} in {directory}: the run's vocabulary is missing; pass the "
                    "directory of a finished text run"
                )
        self.tokenizer = Tokenizer.from_file(str(directory / TOKENIZER_FILE))
        self.class_names = json.loads((directory / LABELS_FILE).read_text())

    def read_inputs(self, path: Path) -> list[InputItem]:
        if path.suffix in TABLES:
            return column_texts(path, self.hparams.text_column, self.hparams.encoding)
        return list(text_lines(path))

    def input_batch(self, contents: Sequence[str]) -> PaddedTokens:
        texts = TokenizedTexts(
            encode(self.tokenizer, contents, self.hparams.max_len),
            torch.zeros(len(contents), dtype=torch.int64),
        )
        return texts.__getitems__(range(len(contents)))[0]

    def export_signature(self) -> dict:
        vocab = self.hparams.vocab_size
        batch, length = Dim("batch"), Dim("length")
        return {
            "example": example_tokens(vocab, [7, 4, 6]),
            "check": example_tokens(vocab, [3, 11, 1, 6, 9]),
            "dynamic": ({0: batch, 1: length}, {0: batch}),
            "inputs": [
                {"name": "tokens", "dtype": "int64", "shape": ["batch", "length"]},
                {"name": "lengths", "dtype": "int64", "shape": ["batch"]},
            ],
        }

    def export_metadata(self) -> dict:
        return {
            **super().export_metadata(),
            "tokenizer": {
                "file": TOKENIZER_FILE,  # Hugging Face tokenizers' JSON, vocabulary included
                "max_len": self.hparams.max_len,
                "pad": PAD,
                "unknown": UNK,
                "padding": "right with pad id 0; lengths counts the real tokens (at least 1)",
            },
        }

    def export_files(self) -> list[Path]:
        return [Path(self.hparams.tokenizer_dir) / TOKENIZER_FILE]


class TextDataModule(TextInputs, SplitDataModule):
    """Any text classification corpus: a built-in name, a .csv/.tsv/.jsonl file, or a folder."""

    def __init__(
        self,
        corpus: str,
        num_classes: PositiveInt,
        data_dir: str = "data",
        text_column: str = "text",
        label_column: str = "label",
        encoding: str = "utf-8",
        val_path: str | None = None,
        test_path: str | None = None,
        vocab_size: Annotated[int, Range(low=3)] = 10_000,  # padding, unknown, a word at least
        max_len: PositiveInt = 400,
        lowercase: bool = True,
        val_fraction: Share = 0.1,
        test_fraction: Share = 0.1,
        batch_size: PositiveInt = 32,
        eval_batch_size: PositiveInt = 256,
        train_window: TrainWindow = "first",
        bucketing: bool = True,
        pool_batches: PositiveInt = 50,
        pad_to_multiple_of: PositiveInt = 1,  # 1: each batch padded to its longest text
        tokenizer_dir: str | None = None,
        cache_dir: str | None = None,  # None: <data_dir>/cache/text
        num_workers: Count = 0,
        *,
        seed: int,  # the run's `seed`: the data's split follows it, and has no default of its own
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)
        check_fractions(val_fraction, test_fraction)
        self.splits: dict[str, TokenizedTexts] = {}
        self.class_names: list[str] = []
        self.tokenizer: Tokenizer | None = None
        self._entry: Entry | None = None

    def _builtin(self):
        return CORPORA.get(self.hparams.corpus)

    def _hub_name(self) -> str | None:
        corpus = self.hparams.corpus
        return corpus[len(HUB_PREFIX) :] if corpus.startswith(HUB_PREFIX) else None

    def _builtin_place(self) -> tuple[Path, list[Path]]:
        """A built-in corpus's file, and every place looked for it (see litlab.data.fetch)."""
        name = self.hparams.corpus
        return locate(self.hparams.data_dir, lambda d: CORPORA[name].path(d, name), Path.is_file)

    def corpus_path(self) -> Path:
        if self._builtin() is not None:
            return self._builtin_place()[0]
        path = Path(self.hparams.corpus)
        if not path.suffix and not path.exists():
            raise LitlabError(
                f"unknown corpus {self.hparams.corpus!r}: use one of {sorted(CORPORA)}, "
                f"a .csv/.tsv/.jsonl file, a folder of per-class folders, or {HUB_PREFIX}<name> "
                "for a Hugging Face hub dataset"
            )
        return path

    def prepare_data(self) -> None:
        if self._builtin() is not None and not self.corpus_path().is_file():
            name = self.hparams.corpus
            raise LitlabError(
                not_found(
                    f"corpus {name}",
                    self.hparams.data_dir,
                    self._builtin_place()[1],
                    f"litlab-data {name}",
                )
            )
        self.token_entry()  # built once here (rank 0 under DDP); every rank maps it in setup
        # (a hub dataset is downloaded into the hub's cache as it is read)

    def read(self, path) -> Records:
        hp = self.hparams
        return read_corpus(path, hp.text_column, hp.label_column, hp.encoding)

    def split_records(self) -> dict[str, Records]:
        """train/val/test records: given splits as they are, the rest split off train."""
        hp = self.hparams
        hub = self._hub_name()
        if hub is not None:
            given = read_hub(hub, hp.text_column, hp.label_column)
        else:
            given = {"train": self.read(self.corpus_path())}
        for split, path in (("val", hp.val_path), ("test", hp.test_path)):
            if path:
                given[split] = self.read(path)
        train = given["train"]
        fractions = [
            0.0 if s in given else f
            for s, f in (("val", hp.val_fraction), ("test", hp.test_fraction))
        ]
        val, test, rest = stratified_split([y for _, y in train], fractions, hp.seed)
        return {
            "train": [train[i] for i in rest],
            "val": given.get("val") or [train[i] for i in val],
            "test": given.get("test") or [train[i] for i in test],
        }

    def sources(self) -> dict[str, Source]:
        """The corpus (to be split) and any given val and test files, or a hub dataset's splits."""
        hp = self.hparams
        hub = self._hub_name()
        if hub is not None:
            given = read_hub(hub, hp.text_column, hp.label_column)
            return {
                split: Source(
                    lambda r=records: iter(r),
                    lambda r=records: records_digest(r),
                    f"{HUB_PREFIX}{hub} ({split})",
                )
                for split, records in given.items()
            }
        paths = {"train": self.corpus_path(), "val": hp.val_path, "test": hp.test_path}
        columns = (hp.text_column, hp.label_column, hp.encoding)
        return {
            split: Source(
                partial(corpus_records, Path(path), *columns),
                partial(corpus_digest, Path(path)),
                str(path),
            )
            for split, path in paths.items()
            if path
        }

    def cache_root(self) -> Path:
        """Where tokenized corpora are kept: data.cache_dir, or `<data_dir>/cache/text`."""
        hp = self.hparams
        return Path(hp.cache_dir) if hp.cache_dir else Path(hp.data_dir) / "cache" / "text"

    def token_entry(self) -> Entry:
        """The tokenized corpus, from the cache or built into it."""
        if self._entry is not None:
            return self._entry
        hp = self.hparams
        sources = self.sources()
        settings = {
            "format": FORMAT,
            "corpus": {split: source.digest() for split, source in sources.items()},
            "columns": [hp.text_column, hp.label_column, hp.encoding],
            "split": [hp.seed, hp.val_fraction, hp.test_fraction],
            "tokenizer": [hp.vocab_size, hp.lowercase],
            "max_len": [hp.max_len, hp.train_window],
        }
        saved = {}  # a trained run's own tokenizer and class names, if it has them
        for name in (TOKENIZER_FILE, LABELS_FILE):
            file = Path(hp.tokenizer_dir or "") / name
            if hp.tokenizer_dir and file.is_file():
                saved[name] = file.read_text()
        root, key = self.cache_root(), key_of(settings)
        if saved:
            entry = finished(root, key)  # the run's tokenizer was most likely fitted there
            if entry is not None and all(
                (entry.path / name).read_text() == text for name, text in saved.items()
            ):
                self._entry = entry
                return entry
            key = key_of({**settings, "saved": saved})
        self._entry = cached(root, key, partial(self._build, sources=sources, saved=saved))
        return self._entry

    def _build(self, folder: Path, sources: dict[str, Source], saved: dict[str, str]) -> None:
        """Split the corpus, fit the tokenizer on train (unless saved) and encode every split."""
        hp = self.hparams
        codes, names = label_codes(sources, f"reading {hp.corpus}")
        into = {s: np.full(len(c), SPLITS.index(s), dtype=np.int8) for s, c in codes.items()}
        fractions = [
            0.0 if s in sources else f
            for s, f in (("val", hp.val_fraction), ("test", hp.test_fraction))
        ]
        val, test, _ = stratified_split(codes["train"].tolist(), fractions, hp.seed)
        into["train"][val], into["train"][test] = 1, 2
        plan = Plan(codes, into, names)
        present = {
            split: {
                names[c] for s in codes for c in np.unique(codes[s][into[s] == SPLITS.index(split)])
            }
            for split in SPLITS
        }
        saved_names = json.loads(saved[LABELS_FILE]) if LABELS_FILE in saved else None
        class_names = self._class_names(present, saved_names)
        if TOKENIZER_FILE in saved:
            tokenizer = Tokenizer.from_str(saved[TOKENIZER_FILE])
        else:
            train_rows = int(sum((i == 0).sum() for i in into.values()))
            with rows_progress("fitting the tokenizer", train_rows) as advance:
                texts = counted(train_texts(sources, plan), advance)
                tokenizer = fit_tokenizer(texts, hp.vocab_size, hp.lowercase)
        window = hp.train_window == "random"  # train keeps whole texts, read through a window
        encode_splits(
            folder,
            sources,
            plan,
            tokenizer,
            {name: i for i, name in enumerate(class_names)},
            {"train": None if window else hp.max_len, "val": hp.max_len, "test": hp.max_len},
            f"encoding {hp.corpus}",
        )
        (folder / TOKENIZER_FILE).write_text(saved.get(TOKENIZER_FILE) or tokenizer.to_str())
        (folder / LABELS_FILE).write_text(json.dumps(class_names))

    def _class_names(self, present: dict[str, set[str]], saved: list[str] | None) -> list[str]:
        """The classes (the sorted labels of train, or the run's own), after checking that
        every split has records and no label unknown to train."""
        names = saved or sorted(present["train"])
        if saved is None:
            if not names:
                raise LitlabError(f"the train split of corpus {self.hparams.corpus} is empty")
            if len(names) == 1:
                raise LitlabError(
                    f"corpus {self.hparams.corpus} has a single class ({names[0]!r}) in train; "
                    "a classifier needs at least two"
                )
            self._check_class_count(names)
        for split in SPLITS:
            unseen = sorted(present[split] - set(names))
            if unseen:
                raise LitlabError(
                    f"label {unseen[0]!r} appears in the {split} split but never in train; "
                    "fix the labels or let litlab split one corpus"
                )
            if not present[split]:
                fix = (
                    "lower data.val_fraction and data.test_fraction"
                    if split == "train"
                    else f"raise data.{split}_fraction or give data.{split}_path"
                )
                raise LitlabError(
                    f"the {split} split of corpus {self.hparams.corpus} is empty: {fix}"
                )
        return names

    def _check_class_count(self, names: list[str]) -> None:
        if len(names) != self.hparams.num_classes:
            shown = ", ".join(names[:10]) + (" ..." if len(names) > 10 else "")
            raise LitlabError(
                f"corpus {self.hparams.corpus} has {len(names)} classes ({shown}) but "
                f"data.num_classes={self.hparams.num_classes}; set data.num_classes={len(names)}"
            )

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        hp = self.hparams
        entry = self.token_entry()
        out = Path(hp.tokenizer_dir) if hp.tokenizer_dir else None
        self.class_names = entry.class_names()
        if out is None or not (out / LABELS_FILE).is_file():
            self._check_class_count(self.class_names)  # not part of the cache's key
        self.tokenizer = Tokenizer.from_str(entry.tokenizer_text())
        if out is not None and not (out / TOKENIZER_FILE).is_file():
            self.save_vocabulary(out)  # the run keeps its own copy: predict and export read it
        self.splits = {}
        for split in SPLITS:
            # Val and test read a text's first max_len tokens; train may read any max_len of them.
            window = hp.max_len if split == "train" and hp.train_window == "random" else None
            sequences, labels = entry.split(split)
            self.splits[split] = TokenizedTexts(sequences, labels, window, hp.pad_to_multiple_of)

    def save_vocabulary(self, directory: Path) -> None:
        """Write the tokenizer and class names, atomically (DDP ranks may race here)."""
        atomic_write(directory / TOKENIZER_FILE, self.tokenizer.to_str())
        atomic_write(directory / LABELS_FILE, json.dumps(self.class_names))

    def loader(self, split: str, batch_size: int, shuffle: bool) -> DataLoader:
        dataset = self.splits[split]
        sampler = RandomSampler(dataset) if shuffle else SequentialSampler(dataset)
        if self.hparams.bucketing:
            batches = BucketBatchSampler(
                sampler,
                batch_size,
                lengths=dataset.lengths.numpy(),
                pool_batches=self.hparams.pool_batches,
            )
            return DataLoader(
                dataset,
                batch_sampler=batches,
                collate_fn=whole_batch,
                num_workers=self.hparams.num_workers,
            )
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=whole_batch,
            num_workers=self.hparams.num_workers,
        )


def example_tokens(vocab_size: int, lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded random tokens (no [PAD] or [UNK]) of the given lengths, and the lengths."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.zeros(len(lengths), max(lengths), dtype=torch.int64)
    for i, n in enumerate(lengths):
        tokens[i, :n] = torch.randint(2, vocab_size, (n,), generator=generator)
    return tokens, torch.tensor(lengths)
