"""A corpus tokenized once and kept on disk, then memory-mapped by every later run.

An entry is a folder `<root>/<key>/`: the fitted tokenizer, the class names, and per split the
token ids end to end (`<split>.ids.npy`, int32), where each text starts (`<split>.offsets.npy`)
and its class (`<split>.labels.npy`), with a `manifest.json` written last that lists every file's
size and sha256. The key is a hash of the corpus's content and of every setting that changes what
the entry holds, so a changed corpus or setting makes a new entry and an unchanged one is found
again by any run, sweep job or DDP rank.

An entry is built in a hidden folder beside it and published with one rename: racing processes
each build one, and the first rename wins; the others see a finished entry and use it. An entry
whose files do not match its manifest is never used: it is rebuilt, with one warning.

Building streams the corpus three times (labels, tokenizer, ids), a block of rows at a time, so
neither building nor training holds the corpus in memory.
"""

import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer

from litlab.data.progress import rows_progress
from litlab.errors import LitlabError

log = logging.getLogger("litlab")

FORMAT = 1  # what an entry holds and how; a new format makes new entries
MANIFEST = "manifest.json"
SPLITS = ("train", "val", "test")
TOKENIZER, LABELS = "tokenizer.json", "labels.json"
ENCODE_ROWS = 10_000  # texts encoded at once: enough to use every core, few in memory


@dataclass(frozen=True)
class Source:
    """A given split of a corpus (or the whole corpus, to be split): its (text, label) records,
    read anew at each pass, and a digest of its content."""

    records: Callable[[], Iterator[tuple[str, str]]]
    digest: Callable[[], str]
    name: str  # how errors name it


def key_of(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:32]


class Ragged(Sequence):
    """Token sequences stored end to end: sequence i is `ids[offsets[i]:offsets[i + 1]]`. The ids
    are memory-mapped, so a batch reads only its own pages and memory does not grow with them."""

    def __init__(self, ids_path: Path, offsets: np.ndarray):
        self.ids_path, self.offsets = Path(ids_path), offsets
        self._ids = None

    @property
    def ids(self) -> np.ndarray:
        if self._ids is None:
            self._ids = np.load(self.ids_path, mmap_mode="r")
        return self._ids

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> torch.Tensor:
        if not -len(self) <= i < len(self):
            raise IndexError(f"sequence {i} of {len(self)}")
        i %= len(self)
        return torch.from_numpy(self.ids[self.offsets[i] : self.offsets[i + 1]].astype(np.int64))

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getstate__(self) -> dict:  # a loader worker maps the file itself, never a copy
        return {**self.__dict__, "_ids": None}


class Entry:
    """A finished entry: its tokenizer, class names, and each split's sequences and labels."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def tokenizer_text(self) -> str:
        return (self.path / TOKENIZER).read_text()

    def class_names(self) -> list[str]:
        return json.loads((self.path / LABELS).read_text())

    def split(self, name: str) -> tuple[Ragged, torch.Tensor]:
        offsets = np.load(self.path / f"{name}.offsets.npy")
        labels = torch.from_numpy(np.load(self.path / f"{name}.labels.npy"))
        return Ragged(self.path / f"{name}.ids.npy", offsets), labels


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(8 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def problem_with(path: Path) -> str | None:
    """Why the entry at `path` cannot be used, or None if every file matches its manifest."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        if manifest.get("format") != FORMAT:
            return f"format {manifest.get('format')}, not {FORMAT}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its manifest is unreadable: {err}"
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != expected["bytes"] or file_sha256(file) != expected["sha256"]:
            return f"{name} does not match its manifest"
    return None


def finished(root: Path, key: str) -> Entry | None:
    """The usable entry `key`, if there is one."""
    path = Path(root) / key
    return Entry(path) if path.is_dir() and problem_with(path) is None else None


def cached(root: Path, key: str, build: Callable[[Path], None]) -> Entry:
    """The entry `key` under `root`, built by `build(folder)` unless a usable one is there."""
    root, path = Path(root), Path(root) / key
    if path.is_dir():
        problem = problem_with(path)
        if problem is None:
            log.info(f"tokenized corpus: {path}")
            return Entry(path)
        log.warning(f"the token cache {path} is unusable ({problem}); rebuilding it")
    try:
        root.mkdir(parents=True, exist_ok=True)
        partial = root / f".{key}.{secrets.token_hex(6)}.partial"
        partial.mkdir()
    except OSError as err:
        raise LitlabError(
            f"cannot write the token cache in {root} ({err.strerror}); "
            "set data.cache_dir to a writable folder"
        ) from err
    try:
        build(partial)
        write_manifest(partial)
        publish(partial, path)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info(f"tokenized corpus saved: {path}")
    return Entry(path)


def write_manifest(folder: Path) -> None:
    files = {}
    for file in sorted(folder.iterdir()):
        with open(file, "rb+") as f:
            os.fsync(f.fileno())  # on disk before the manifest vouches for it
        files[file.name] = {"bytes": file.stat().st_size, "sha256": file_sha256(file)}
    with open(folder / MANIFEST, "x") as f:
        json.dump({"format": FORMAT, "files": files}, f, indent=1)
        f.flush()
        os.fsync(f.fileno())


def publish(partial: Path, path: Path) -> None:
    """Give the finished folder `partial` the entry's name, unless another process published a
    usable entry there first; an unusable one is moved aside and replaced."""
    while True:
        try:
            os.rename(partial, path)
            break
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
        if problem_with(path) is None:
            return  # another process's copy won; this one is discarded
        stale = path.with_name(f".{path.name}.{secrets.token_hex(6)}.stale")
        try:
            os.rename(path, stale)
        except FileNotFoundError:
            continue  # another process moved it aside first
        shutil.rmtree(stale, ignore_errors=True)
    directory = os.open(path.parent, os.O_RDONLY)
    try:  # the new name itself must survive a crash
        os.fsync(directory)
    finally:
        os.close(directory)


def npy_header(length: int, dtype) -> bytes:
    """The .npy header of a 1-d array; the same size for any length (padded to 128 bytes)."""
    import io

    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer,
        {
            "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
            "fortran_order": False,
            "shape": (length,),
        },
    )
    return buffer.getvalue()


class SplitWriter:
    """One split's ids streamed into `<split>.ids.npy`, its lengths and labels kept compact."""

    def __init__(self, folder: Path, split: str):
        self.folder, self.split = folder, split
        self.file = open(folder / f"{split}.ids.npy", "wb")  # noqa: SIM115 (closed by close)
        self.file.write(npy_header(0, np.int32))  # rewritten with the length at the end
        self.lengths, self.labels, self.total = array("q"), array("q"), 0

    def add(self, sequences: list[list[int]], labels: list[int]) -> None:
        lengths = [len(s) for s in sequences]
        count = sum(lengths)
        ids = np.fromiter(chain.from_iterable(sequences), dtype=np.int32, count=count)
        self.file.write(ids.tobytes())
        self.lengths.extend(lengths)
        self.labels.extend(labels)
        self.total += count

    def close(self) -> None:
        self.file.seek(0)
        header = npy_header(self.total, np.int32)
        assert len(header) == len(npy_header(0, np.int32))
        self.file.write(header)
        self.file.close()
        offsets = np.zeros(len(self.lengths) + 1, dtype=np.int64)
        np.cumsum(np.frombuffer(self.lengths, dtype=np.int64), out=offsets[1:])
        np.save(self.folder / f"{self.split}.offsets.npy", offsets)
        np.save(self.folder / f"{self.split}.labels.npy", np.array(self.labels, dtype=np.int64))


@dataclass
class Plan:
    """Which split each record of each source goes to, and the labels seen."""

    codes: dict[str, np.ndarray]  # per source: each record's label, as its rank among `names`
    splits: dict[str, np.ndarray]  # per source: each record's split (an index into SPLITS)
    names: list[str]  # every label seen, sorted


def label_codes(sources: dict[str, Source], description: str) -> tuple[dict, list[str]]:
    """Pass 1: each record's label, as its rank among the sorted labels of all sources."""
    seen: dict[str, int] = {}
    codes = {}
    with rows_progress(description) as advance:
        for split, source in sources.items():
            found = array("i")
            for block in batched(source.records(), ENCODE_ROWS):
                found.extend(seen.setdefault(label, len(seen)) for _, label in block)
                advance(len(block))
            if not found:
                raise LitlabError(f"{source.name} holds no documents")
            codes[split] = np.frombuffer(found, dtype=np.int32)
    names = sorted(seen)
    rank = np.array([names.index(n) for n in seen], dtype=np.int32)  # first-seen code -> rank
    return {split: rank[c] for split, c in codes.items()}, names


def batched(records: Iterator, size: int) -> Iterator[list]:
    records = iter(records)
    while block := list(islice(records, size)):
        yield block


def train_texts(sources: dict[str, Source], plan: Plan) -> Iterator[str]:
    """The texts of the train split, streamed in corpus order."""
    for name, source in sources.items():
        into = plan.splits[name]
        if (into == 0).any():
            for i, (text, _) in enumerate(source.records()):
                if into[i] == 0:
                    yield text


def encode_splits(
    folder: Path,
    sources: dict[str, Source],
    plan: Plan,
    tokenizer: Tokenizer,
    label_ids: dict[str, int],
    max_len: dict[str, int | None],
    description: str,
) -> None:
    """Pass 3: every record's ids (truncated to its split's `max_len`; an empty text is one
    [UNK]) and class index, written per split in corpus order."""
    unk = tokenizer.token_to_id("[UNK]")
    to_id = np.array([label_ids.get(n, -1) for n in plan.names], dtype=np.int64)
    writers = {split: SplitWriter(folder, split) for split in SPLITS}
    total = sum(len(c) for c in plan.codes.values())
    with rows_progress(description, total) as advance:
        for name, source in sources.items():
            start = 0
            for block in batched(source.records(), ENCODE_ROWS):
                encodings = tokenizer.encode_batch([t for t, _ in block], add_special_tokens=False)
                into = plan.splits[name][start : start + len(block)]
                labels = to_id[plan.codes[name][start : start + len(block)]]
                for s, split in enumerate(SPLITS):
                    rows = np.flatnonzero(into == s)
                    if len(rows):
                        cut = max_len[split]
                        writers[split].add(
                            [encodings[i].ids[:cut] or [unk] for i in rows],
                            labels[rows].tolist(),
                        )
                start += len(block)
                advance(len(block))
    for writer in writers.values():
        writer.close()
