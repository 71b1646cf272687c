import json
import math

import pytest
import torch
from conftest import DATA_DIR, compose, need_data, read_metrics, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import litlab
from litlab.config.check import check_config
from litlab.data.text import (
    UNK,
    BucketBatchSampler,
    TextDataModule,
    TokenizedTexts,
    encode,
    fit_tokenizer,
    stratified_split,
)
from litlab.errors import LitlabError
from litlab.nets import RNN, LSTMClassifier, RecurrentClassifier


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def small_corpus(tmp_path, n=40):
    rows = [{"text": f"good great fine {i}", "label": "pos"} for i in range(n)]
    rows += [{"text": f"bad awful poor {i}", "label": "neg"} for i in range(n)]
    return write_jsonl(tmp_path / "corpus.jsonl", rows)


# nets


def test_the_articles_lstm_has_the_keras_parameter_count():
    assert (
        sum(p.numel() for p in LSTMClassifier(vocab_size=10_000, num_classes=10).parameters())
        == 706_698
    )


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_padding_never_changes_the_logits_or_the_gradients(cell, bidirectional):
    torch.manual_seed(0)
    net = RecurrentClassifier(
        vocab_size=50,
        num_classes=3,
        num_layers=2,
        cell=cell,
        bidirectional=bidirectional,
        keras_compatible=cell != "gru",
    )
    seqs = [torch.randint(1, 50, (n,)) for n in (3, 11, 7)]
    batch = TokenizedTexts(seqs, torch.zeros(3, dtype=torch.int64)).__getitems__([0, 1, 2])[0]
    together = net(batch)
    together.sum().backward()
    batch_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    for i, seq in enumerate(seqs):
        alone = net((seq[None], torch.tensor([len(seq)])))
        torch.testing.assert_close(alone[0], together[i], atol=1e-5, rtol=0)
        alone.sum().backward()  # summed over the sequences: the batch's gradient
    for batch_grad, p in zip(batch_grads, net.parameters(), strict=True):
        torch.testing.assert_close(p.grad, batch_grad, atol=1e-5, rtol=1e-5)


def test_word_dropout_drops_whole_words_in_training_only():
    torch.manual_seed(0)
    net = LSTMClassifier(vocab_size=50, num_classes=3, word_dropout=1.0)
    lengths = torch.tensor([6, 6])
    a, b = torch.randint(1, 50, (2, 6)), torch.randint(1, 50, (2, 6))
    # every word dropped: the logits no longer depend on the words
    torch.testing.assert_close(net((a, lengths)), net((b, lengths)))
    net.eval()
    assert not torch.allclose(net((a, lengths)), net((b, lengths)))


def test_elman_rnn_is_the_articles_recurrence():
    torch.manual_seed(0)
    net = RNN(vocab_size=20, num_classes=4, embedding_dim=5, hidden_size=6).eval()
    tokens = torch.tensor([[3, 7, 2, 9]])
    layer = net.layers[0]
    w = layer.weight_ih_l0  # [W_xh | b_h]: the constant-1 input column is the single bias
    W_xh, b_h, W_hh = w[:, :-1], w[:, -1], layer.weight_hh_l0
    h = torch.zeros(6)
    for x in net.embedding(tokens)[0]:
        h = torch.tanh(W_hh @ h + W_xh @ x + b_h)
    expected = net.head.weight @ h + net.head.bias  # y = W_hy h_T + b_y
    torch.testing.assert_close(net((tokens, torch.tensor([4])))[0], expected)


# tokenizer, split, batches


def test_vocabulary_comes_from_train_only(tmp_path):
    tokenizer = fit_tokenizer(["the cat sat", "the dog ran"], vocab_size=100)
    ids = encode(tokenizer, ["the zebra"], max_len=10)[0].tolist()
    assert ids[1] == tokenizer.token_to_id(UNK)
    assert ids[0] == tokenizer.token_to_id("the")


def test_the_datamodule_fits_its_tokenizer_on_train_only(tmp_path):
    rows = [{"text": f"alpha {i}", "label": "a"} for i in range(30)]
    rows += [{"text": f"beta {i}", "label": "b"} for i in range(30)]
    train = write_jsonl(tmp_path / "train.jsonl", rows)
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "testonlyword alpha", "label": "a"}])
    dm = TextDataModule(
        seed=0,
        corpus=str(train),
        test_path=str(test),
        num_classes=2,
        tokenizer_dir=str(tmp_path / "run"),
    )
    dm.setup()
    unk = dm.tokenizer.token_to_id(UNK)
    assert dm.tokenizer.token_to_id("testonlyword") is None
    assert dm.splits["test"].sequences[0].tolist() == [unk, dm.tokenizer.token_to_id("alpha")]
    assert (tmp_path / "run" / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "run" / "labels.json").read_text()) == ["a", "b"]


def test_split_is_stratified_and_seeded():
    labels = ["a"] * 50 + ["b"] * 30 + ["c"] * 20
    val, test, train = stratified_split(labels, [0.1, 0.1], seed=0)
    assert sorted(val + test + train) == list(range(100))
    assert [sum(labels[i] == c for i in val) for c in "abc"] == [5, 3, 2]
    assert stratified_split(labels, [0.1, 0.1], seed=0)[0] == val
    assert stratified_split(labels, [0.1, 0.1], seed=1)[0] != val


def test_bucketing_cuts_padding():
    torch.manual_seed(0)
    lengths = torch.randint(1, 400, (2000,)).tolist()
    seqs = [torch.ones(n, dtype=torch.int64) for n in lengths]
    data = TokenizedTexts(seqs, torch.zeros(2000, dtype=torch.int64))
    sampler = torch.utils.data.RandomSampler(data)

    def efficiency(batches):
        real = padded = 0
        for batch in batches:
            (tokens, lens), _ = data.__getitems__(batch)
            real, padded = real + int(lens.sum()), padded + tokens.numel()
        return real / padded

    buckets = list(BucketBatchSampler(sampler, 32, lengths=lengths))
    assert sorted(i for b in buckets for i in b) == list(range(2000))  # every sample once
    assert efficiency(buckets) > 0.95
    assert efficiency(torch.utils.data.BatchSampler(sampler, 32, False)) < 0.7


def test_random_train_window_reads_all_of_a_text_while_eval_reads_its_start(tmp_path):
    rows = [{"text": " ".join(f"w{i}" for i in range(50)), "label": y} for y in "ab" * 20]
    dm = TextDataModule(
        seed=0,
        corpus=str(write_jsonl(tmp_path / "c.jsonl", rows)),
        num_classes=2,
        max_len=8,
        train_window="random",
    )
    dm.setup()
    vocab = dm.tokenizer.get_vocab()
    position = {i: int(w[1:]) for w, i in vocab.items() if w.startswith("w")}
    for split in ("val", "test"):
        assert all(
            [position[i] for i in s.tolist()] == list(range(8)) for s in dm.splits[split].sequences
        )
    train = dm.splits["train"]
    assert train.lengths.tolist() == [8] * len(train)
    torch.manual_seed(0)
    starts = set()
    for _ in range(20):
        (tokens, lengths), _ = train.__getitems__([0, 1])
        assert tokens.shape == (2, 8) and lengths.tolist() == [8, 8]
        for window in tokens.tolist():
            start = position[window[0]]
            assert [position[i] for i in window] == list(range(start, start + 8))  # contiguous
            starts.add(start)
    assert len(starts) > 10 and max(starts) <= 42


def test_batches_pad_to_a_multiple_without_changing_the_logits(tmp_path):
    torch.manual_seed(0)
    seqs = [torch.randint(1, 50, (n,)) for n in (3, 11, 7)]
    labels = torch.zeros(3, dtype=torch.int64)
    (tokens, lengths), _ = TokenizedTexts(seqs, labels).__getitems__([0, 1, 2])
    (padded, same_lengths), _ = TokenizedTexts(seqs, labels, pad_to_multiple_of=8).__getitems__(
        [0, 1, 2]
    )
    assert padded.shape == (3, 16) and not padded[:, 11:].any()
    assert torch.equal(padded[:, :11], tokens) and torch.equal(same_lengths, lengths)
    for cell_impl in ("torch", "compiled"):
        torch.manual_seed(0)
        net = RecurrentClassifier(vocab_size=50, num_classes=3, cell_impl=cell_impl, chunk=4).eval()
        torch.testing.assert_close(net((padded, lengths)), net((tokens, lengths)))
    dm = TextDataModule(
        seed=0, corpus=str(small_corpus(tmp_path)), num_classes=2, pad_to_multiple_of=16
    )
    dm.setup()
    assert {batch[0].tokens.shape[1] for batch in dm.train_dataloader()} == {16}


@pytest.mark.parametrize(("value", "problem"), [(0, "must be"), (-8, "must be"), (2.5, "is not")])
def test_pad_to_multiple_must_be_a_positive_integer(tmp_path, value, problem):
    cfg = compose(tmp_path, "experiment=seed_rnn", f"data.pad_to_multiple_of={value}")
    with pytest.raises(LitlabError, match=f"pad_to_multiple_of={value} {problem} a positive"):
        check_config(cfg)


def test_unknown_train_window(tmp_path):
    cfg = compose(tmp_path, "experiment=seed_rnn", "data.train_window=middle")
    with pytest.raises(LitlabError, match="data.train_window='middle' is not one of first, random"):
        check_config(cfg)


# arbitrary unicode, empty strings, and very long texts (a short random text repeated)
texts = st.lists(
    st.one_of(st.text(), st.just(""), st.text(min_size=1, max_size=20).map(lambda t: t * 500)),
    min_size=1,
    max_size=12,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(train=texts, batch=texts)
def test_tokenize_and_collate_any_unicode(train, batch):
    tokenizer = fit_tokenizer(train, vocab_size=50)
    seqs = encode(tokenizer, batch, max_len=64)
    (tokens, lengths), labels = TokenizedTexts(
        seqs, torch.zeros(len(seqs), dtype=torch.int64)
    ).__getitems__(list(range(len(seqs))))
    assert tokens.shape == (len(batch), int(lengths.max()))
    assert bool((lengths >= 1).all()) and bool((lengths <= 64).all())
    assert bool((tokens < tokenizer.get_vocab_size()).all())
    for row, n in zip(tokens, lengths, strict=True):
        assert bool((row[n:] == 0).all())  # padding only after the real tokens


# real corpora, training


@pytest.mark.parametrize(
    ("name", "size", "classes"),
    [("bbc_news", 2127, 5), ("tweets_sentiment", 38158, 3), ("rotten_tomatoes", 13905, 3)],
)
def test_builtin_corpora(name, size, classes):
    need_data(name)
    dm = TextDataModule(
        seed=0, corpus=name, data_dir=str(DATA_DIR), num_classes=classes, max_len=50
    )
    dm.prepare_data()
    dm.setup()
    assert sum(len(s) for s in dm.splits.values()) == size
    assert len(dm.class_names) == classes
    texts = {tuple(s.tolist()) for s in dm.splits["test"].sequences}
    assert len(texts) > 0.9 * len(dm.splits["test"])


@pytest.mark.parametrize("model", ["lstm", "rnn"])
def test_fast_dev_run_per_recurrent_net(tmp_path, model):
    need_data("bbc_news")
    metrics = litlab.train(compose(tmp_path, "data=bbc_news", f"model={model}", "debug=fdr"))
    assert metrics["test/loss"] < 2 * math.log(5)  # one step on 5 classes: about log(5)


def test_train_then_eval_reuses_the_runs_tokenizer(tmp_path):
    need_data("tweets_sentiment")
    run = tmp_path / "run"
    result = run_cli(
        "litlab-train",
        "experiment=rnn_tweets",
        "debug=limit",
        "trainer.max_epochs=1",
        f"paths.data_dir={DATA_DIR}",
        f"hydra.run.dir={run}",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    tokenizer = (run / "tokenizer.json").read_text()
    result = run_cli(
        "litlab-eval",
        f"run_dir={run}",
        f"hydra.run.dir={tmp_path / 'eval'}",
        "+trainer.limit_test_batches=2",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert read_metrics(tmp_path / "eval")["test/acc"] == pytest.approx(
        read_metrics(run)["test/acc"]
    )
    assert (run / "tokenizer.json").read_text() == tokenizer  # reused, not refitted


# bad input


def setup_error(tmp_path, corpus, **kwargs) -> str:
    dm = TextDataModule(
        seed=0, corpus=str(corpus), num_classes=kwargs.pop("num_classes", 2), **kwargs
    )
    with pytest.raises(LitlabError) as err:
        dm.prepare_data()
        dm.setup()
    return str(err.value)


def test_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert "holds no documents" in setup_error(tmp_path, tmp_path / "empty.csv")


def test_missing_text_or_label_column(tmp_path):
    (tmp_path / "c.csv").write_text("review,stars\nnice,5\nbad,1\n")
    assert "has no column 'text' (columns: review, stars); set data.text_column" in setup_error(
        tmp_path, tmp_path / "c.csv"
    )
    message = setup_error(tmp_path, tmp_path / "c.csv", text_column="review")
    assert "has no column 'label'" in message and "data.label_column" in message


def test_single_class(tmp_path):
    corpus = write_jsonl(
        tmp_path / "one.jsonl", [{"text": f"t {i}", "label": "x"} for i in range(9)]
    )
    assert "single class ('x')" in setup_error(tmp_path, corpus)


def test_undecodable_bytes_name_file_and_line(tmp_path):
    corpus = tmp_path / "bad.csv"
    corpus.write_bytes(b"text,label\nfine,a\ncaf\xe9 au lait,b\n")
    assert f"{corpus}:3: byte 0xe9 is not valid utf-8" in setup_error(tmp_path, corpus)


def test_unknown_corpus_name(tmp_path):
    assert "unknown corpus 'ag_newz'" in setup_error(tmp_path, "ag_newz")


def test_label_in_test_that_train_never_saw(tmp_path):
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "meh", "label": "neutral"}])
    message = setup_error(tmp_path, small_corpus(tmp_path), test_path=str(test))
    assert "label 'neutral' appears in the test split but never in train" in message


def test_wrong_number_of_classes(tmp_path):
    message = setup_error(tmp_path, small_corpus(tmp_path), num_classes=3)
    assert "has 2 classes (neg, pos) but data.num_classes=3; set data.num_classes=2" in message


def test_bad_corpus_is_one_line_through_the_cli(tmp_path):
    (tmp_path / "one.csv").write_text("text,label\na,x\nb,x\nc,x\n")
    result = run_cli(
        "litlab-train",
        "data=text",
        f"data.corpus={tmp_path / 'one.csv'}",
        "data.num_classes=2",
        "model=lstm",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "single class" in errors[0]


def test_hub_corpus_offline_is_a_clear_error_not_a_hang(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: offline
    dm = TextDataModule(seed=0, corpus="hf:ag_news", num_classes=4)
    with pytest.raises(
        LitlabError, match="cannot reach the Hugging Face hub at http://127.0.0.1:9"
    ):
        dm.prepare_data()


def test_hub_loader_keeps_the_datasets_own_splits(tmp_path, monkeypatch):
    # `datasets` loads a local folder of split files through the same code path as a hub name.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub = tmp_path / "hub_dataset"
    hub.mkdir()
    rows = [{"text": f"good {i}", "label": "pos"} for i in range(20)]
    rows += [{"text": f"bad {i}", "label": "neg"} for i in range(20)]
    write_jsonl(hub / "train.jsonl", rows)
    write_jsonl(hub / "test.jsonl", [{"text": "good bad", "label": "pos"}])
    dm = TextDataModule(seed=0, corpus=f"hf:{hub}", num_classes=2)
    dm.setup()
    assert len(dm.splits["test"]) == 1  # the dataset's test split, not one split off train
    assert len(dm.splits["train"]) + len(dm.splits["val"]) == 40
    assert dm.class_names == ["neg", "pos"]


def test_fractions_must_leave_data_to_train_on(tmp_path):
    with pytest.raises(LitlabError, match="must leave data to train on"):
        corpus = str(small_corpus(tmp_path))
        TextDataModule(seed=0, corpus=corpus, num_classes=2, val_fraction=0.5, test_fraction=0.5)
    message = setup_error(tmp_path, small_corpus(tmp_path), val_fraction=0.0)
    assert "the val split of corpus" in message and "data.val_fraction" in message
