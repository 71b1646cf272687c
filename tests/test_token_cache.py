"""The tokenized corpus cache: built once, memory-mapped after, rebuilt when its corpus,
settings or files change, and published whole when processes race to build it."""

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, ROOT, compose
from torch.utils.data import BatchSampler, DistributedSampler

import litlab
from litlab.data import corpora, text
from litlab.data.corpora import read_corpus
from litlab.data.text import (
    BucketBatchSampler,
    TextDataModule,
    TokenizedTexts,
    encode,
    fit_tokenizer,
)
from litlab.data.token_cache import Ragged, problem_with
from litlab.errors import LitlabError


def write_corpus(path, rows=300, word="good"):
    lines = ["text,label"] + [
        f"{word if i % 2 else 'bad'} words {i % 37}{' more' * (i % 11)},{'pos' if i % 2 else 'neg'}"
        for i in range(rows)
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def module(corpus, cache, **settings) -> TextDataModule:
    return TextDataModule(
        seed=0, corpus=str(corpus), num_classes=2, cache_dir=str(cache), **settings
    )


def ready(corpus, cache, **settings) -> TextDataModule:
    data = module(corpus, cache, **settings)
    data.setup()
    return data


def same_splits(a: TextDataModule, b: TextDataModule) -> bool:
    return all(
        torch.equal(a.splits[s].labels, b.splits[s].labels)
        and all(
            torch.equal(x, y)
            for x, y in zip(a.splits[s].sequences, b.splits[s].sequences, strict=True)
        )
        for s in ("train", "val", "test")
    )


def test_a_second_run_maps_the_cache_without_encoding_again(tmp_path, monkeypatch):
    encodings = []
    real = text.encode_splits
    monkeypatch.setattr(text, "encode_splits", lambda *a: encodings.append(1) or real(*a))
    corpus, cache = write_corpus(tmp_path / "c.csv"), tmp_path / "cache"
    first = ready(corpus, cache)
    ids = first.token_entry().path / "train.ids.npy"
    before = ids.stat()
    second = ready(corpus, cache)
    assert len(encodings) == 1
    assert second.token_entry().path == first.token_entry().path
    after = ids.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    sequences = second.splits["train"].sequences
    assert isinstance(sequences, Ragged) and isinstance(sequences.ids, np.memmap)
    assert same_splits(first, second)


def test_bucketed_batches_cut_from_the_map_shard_across_ranks(tmp_path):
    train = ready(write_corpus(tmp_path / "c.csv", rows=600), tmp_path / "cache").splits["train"]
    lengths = train.lengths.numpy()
    batches = []
    for rank in range(2):  # what Lightning builds around each rank's DistributedSampler
        shard = DistributedSampler(train, num_replicas=2, rank=rank, shuffle=True, seed=1)
        batches.append(list(BucketBatchSampler(shard, 16, lengths=lengths, pool_batches=5)))
    assert len(batches[0]) == len(batches[1])  # equal step counts, or DDP would hang
    seen = [i for batch in batches[0] + batches[1] for i in batch]
    assert sorted(seen) == list(range(len(train)))  # disjoint shards covering everything
    spread = []
    for batch in batches[0]:
        (tokens, real), _ = train.__getitems__(batch)
        assert tokens.shape[1] == int(real.max())
        spread.append(int(real.max() - real.min()))
    shard = DistributedSampler(train, num_replicas=2, rank=0, shuffle=True, seed=1)
    unsorted = [np.ptp(lengths[b]) for b in BatchSampler(shard, 16, drop_last=False)]
    assert np.mean(spread) < 0.5 * np.mean(unsorted)  # still bucketed: similar lengths


def test_a_changed_corpus_or_setting_makes_a_new_entry(tmp_path):
    corpus, cache = write_corpus(tmp_path / "c.csv"), tmp_path / "cache"
    original = ready(corpus, cache).token_entry().path
    write_corpus(tmp_path / "c.csv", word="gold")  # same size, other words
    changed = ready(corpus, cache)
    assert changed.token_entry().path != original
    assert changed.tokenizer.token_to_id("gold") is not None
    ready(corpus, cache, vocab_size=5)
    ready(corpus, cache, max_len=2)
    assert len(list(cache.iterdir())) == 4
    assert all(problem_with(entry) is None for entry in cache.iterdir())  # none overwritten
    write_corpus(tmp_path / "c.csv")  # the original again: its entry is found
    assert ready(corpus, cache).token_entry().path == original
    assert len(list(cache.iterdir())) == 4


@pytest.mark.parametrize("damage", ["flipped byte", "truncated ids", "no manifest"])
def test_a_corrupt_entry_is_rebuilt_with_one_warning(tmp_path, caplog, damage):
    corpus, cache = write_corpus(tmp_path / "c.csv"), tmp_path / "cache"
    first = ready(corpus, cache)
    entry = first.token_entry().path
    ids = entry / "train.ids.npy"
    if damage == "flipped byte":
        raw = bytearray(ids.read_bytes())
        raw[-1] ^= 0xFF
        ids.write_bytes(bytes(raw))
    elif damage == "truncated ids":
        ids.write_bytes(ids.read_bytes()[:-8])
    else:
        (entry / "manifest.json").unlink()
    caplog.set_level(logging.INFO, logger="litlab")
    again = ready(corpus, cache)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and f"the token cache {entry} is unusable" in warnings[0]
    assert again.token_entry().path == entry and problem_with(entry) is None
    assert same_splits(first, again)
    assert sorted(p.name for p in cache.iterdir()) == [entry.name]  # nothing left beside it


RACER = """
import sys, time
from pathlib import Path
from litlab.data import token_cache
from litlab.data.text import TextDataModule

corpus, cache, me, other = sys.argv[1:]
publish = token_cache.publish

def publish_when_both_have_built(partial, path):
    Path(me).touch()
    deadline = time.time() + 300
    while not Path(other).exists() and time.time() < deadline:
        time.sleep(0.01)
    publish(partial, path)

token_cache.publish = publish_when_both_have_built
data = TextDataModule(seed=0, corpus=corpus, num_classes=2, cache_dir=cache)
data.setup()
print(data.token_entry().path)
"""


def test_two_processes_racing_to_build_leave_one_valid_copy(tmp_path):
    corpus, cache = write_corpus(tmp_path / "c.csv", rows=3000), tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(corpus), str(cache), *map(str, pair)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for pair in ((tmp_path / "a", tmp_path / "b"), (tmp_path / "b", tmp_path / "a"))
    ]
    outputs = [racer.communicate(timeout=600) for racer in racers]
    assert [r.returncode for r in racers] == [0, 0], outputs
    (entry,) = {out.strip() for out, _ in outputs}  # both use the same entry
    assert [p.name for p in cache.iterdir()] == [os.path.basename(entry)]  # no partial copy
    assert problem_with(cache / os.path.basename(entry)) is None
    assert same_splits(ready(corpus, cache), ready(corpus, tmp_path / "fresh"))


def test_the_cache_holds_what_the_in_memory_path_computes_on_a_shipped_corpus(tmp_path):
    if not (DATA_DIR / "text" / "bbc_news.jsonl").is_file():
        pytest.skip("data/text/bbc_news.jsonl is missing: run `make data` to fetch it")
    settings = {"corpus": "bbc_news", "data_dir": str(DATA_DIR), "num_classes": 5, "seed": 0}
    cached = TextDataModule(cache_dir=str(tmp_path / "cache"), **settings)
    cached.setup()
    # the path before the cache: every record in memory, the tokenizer fitted on a list
    splits = TextDataModule(**settings).split_records()
    tokenizer = fit_tokenizer([t for t, _ in splits["train"]], 10_000)
    assert cached.tokenizer.to_str() == tokenizer.to_str()
    names = sorted({y for _, y in splits["train"]})
    assert cached.class_names == names
    for split, records in splits.items():
        sequences = encode(tokenizer, [t for t, _ in records], 400)
        got = cached.splits[split]
        assert len(got) == len(sequences)
        assert all(torch.equal(a, b) for a, b in zip(sequences, got.sequences, strict=True))
        assert got.labels.tolist() == [names.index(y) for _, y in records]
    # the same batches, in the same order, under the same seed
    memory = TextDataModule(cache_dir=str(tmp_path / "cache"), **settings)
    memory.setup()
    memory.splits["train"] = TokenizedTexts(
        encode(tokenizer, [t for t, _ in splits["train"]], 400),
        torch.tensor([names.index(y) for _, y in splits["train"]]),
    )
    torch.manual_seed(0)
    expected = list(memory.train_dataloader())
    torch.manual_seed(0)
    for (tokens, labels), (want_tokens, want_labels) in zip(
        cached.train_dataloader(), expected, strict=True
    ):
        assert torch.equal(tokens.tokens, want_tokens.tokens)
        assert torch.equal(tokens.lengths, want_tokens.lengths)
        assert torch.equal(labels, want_labels)


class InMemoryText(TextDataModule):
    """The text data as it was read before the cache: every record in memory, a tensor a text."""

    def prepare_data(self) -> None:
        pass

    def setup(self, stage=None) -> None:
        if self.splits:
            return
        hp = self.hparams
        splits = self.split_records()
        self.class_names = sorted({y for _, y in splits["train"]})
        train = [t for t, _ in splits["train"]]
        self.tokenizer = fit_tokenizer(train, hp.vocab_size, hp.lowercase)
        self.save_vocabulary(Path(hp.tokenizer_dir))
        ids = {name: i for i, name in enumerate(self.class_names)}
        self.splits = {
            split: TokenizedTexts(
                encode(self.tokenizer, [t for t, _ in records], hp.max_len),
                torch.tensor([ids[y] for _, y in records]),
            )
            for split, records in splits.items()
        }


def test_a_run_from_the_cache_scores_as_a_run_from_memory(tmp_path):
    if not (DATA_DIR / "text" / "bbc_news.jsonl").is_file():
        pytest.skip("data/text/bbc_news.jsonl is missing: run `make data` to fetch it")
    metrics = {}
    for name, override in (
        ("memory", f"data._target_={__name__}.InMemoryText"),
        ("cache", f"data.cache_dir={tmp_path / 'token-cache'}"),
    ):
        cfg = compose(tmp_path / f"{name}-run", "data=bbc_news", "model=rnn", "debug=fdr", override)
        metrics[name] = litlab.train(cfg)
    assert len(list((tmp_path / "token-cache").iterdir())) == 1
    assert metrics["cache"]["test/acc"] == metrics["memory"]["test/acc"]
    assert metrics["cache"]["test/loss"] == metrics["memory"]["test/loss"]
    assert (tmp_path / "cache-run" / "tokenizer.json").read_text() == (
        tmp_path / "memory-run" / "tokenizer.json"
    ).read_text()


def test_long_preparation_reports_rows_per_second(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="litlab")
    ready(write_corpus(tmp_path / "c.csv"), tmp_path / "cache")
    lines = [r.getMessage() for r in caplog.records]
    for step in ("reading", "fitting the tokenizer", "encoding"):
        (line,) = [line for line in lines if line.startswith(step)]
        assert " rows in " in line and line.endswith(" rows/s)")


def test_a_cache_dir_that_cannot_be_written(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(LitlabError, match="cannot write the token cache in .*data.cache_dir"):
        ready(write_corpus(tmp_path / "c.csv"), tmp_path / "file" / "cache")


def test_a_corpus_is_read_in_blocks_as_it_is_read_whole(tmp_path, monkeypatch):
    corpus = tmp_path / "c.csv"
    rows = [f'"line one\r\nline two {i}",a' if i % 7 == 0 else f"text {i},b" for i in range(300)]
    corpus.write_bytes(("text,label\r\n" + "\r\n".join(rows) + "\r\n").encode())
    whole = read_corpus(corpus)
    monkeypatch.setattr(corpora, "BLOCK", 64)  # many blocks, cut between lines
    assert read_corpus(corpus) == whole and len(whole) == 300


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("c.csv", "text,label\n" + "t,a\n" * 150 + "caf\xe9,b\n", ":152: byte 0xe9 is not valid"),
        ("c.csv", "text,label\n" + "t,a\n" * 120 + "t,a,x\n", ":122: 3 fields in this row"),
        ("c.jsonl", '{"text": "t", "label": "a"}\n' * 90 + "{oops\n", ":91: not a JSON object"),
    ],
)
def test_a_row_that_cannot_be_read_is_named_past_the_first_block(
    tmp_path, monkeypatch, name, content, message
):
    monkeypatch.setattr(corpora, "BLOCK", 64)
    corpus = tmp_path / name
    corpus.write_bytes(content.encode("latin-1"))
    with pytest.raises(LitlabError) as err:
        ready(corpus, tmp_path / "cache")
    assert str(err.value).startswith(f"{corpus}{message}")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())


@pytest.mark.skipif(
    os.environ.get("LITLAB_PAST_RAM") != "1",
    reason="an epoch on a 1.4 GiB corpus under a 0.9 GiB memory cap takes tens of minutes "
    "and root: LITLAB_PAST_RAM=1 pytest tests/test_token_cache.py -k larger_than",
)
def test_a_corpus_larger_than_the_memory_cap_trains_an_epoch():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import text_scale

    result = text_scale.past_ram(cap_gb=0.9, corpus_gb=1.4)
    assert result["returncode"] == 0 and result["oom_kills"] == 0, result["tail"]
    assert result["corpus_gb"] > 1.4 * result["cap_gb"]
