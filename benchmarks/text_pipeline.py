"""Text pipeline: padding efficiency with and without length bucketing, tokenization throughput."""

import torch
from report import DATA_DIR, timed, write_section
from torch.utils.data import BatchSampler, RandomSampler

from litlab.data.text import BucketBatchSampler, TextDataModule, encode, fit_tokenizer

CORPORA = {"bbc_news": 5, "tweets_sentiment": 3, "rotten_tomatoes": 3}
ROWS = tuple(CORPORA)
BATCH = 32


def padding_efficiency(dataset, batches) -> float:
    """Real tokens / padded tokens over one epoch of batches."""
    real = padded = 0
    for batch in batches:
        (tokens, lengths), _ = dataset.__getitems__(batch)
        real, padded = real + int(lengths.sum()), padded + tokens.numel()
    return real / padded


def main() -> dict:
    torch.manual_seed(0)
    rows, results = [], {}
    for name, classes in CORPORA.items():
        dm = TextDataModule(
            seed=0, corpus=name, data_dir=str(DATA_DIR), num_classes=classes, max_len=400
        )
        dm.setup()
        train = dm.splits["train"]
        sampler = RandomSampler(train)
        plain = padding_efficiency(train, BatchSampler(sampler, BATCH, drop_last=False))
        bucketed = padding_efficiency(
            train, BucketBatchSampler(sampler, BATCH, lengths=train.lengths.tolist())
        )
        texts = [text for text, _ in dm.read(dm.corpus_path())]
        tokenizer = dm.tokenizer
        fit_seconds = timed(lambda texts=texts: fit_tokenizer(texts, 10_000))
        encode_seconds = timed(lambda t=tokenizer, texts=texts: encode(t, texts, 400))
        results[name] = bucketed / plain
        rows.append(
            f"| {name} | {len(texts):,} | {plain:.3f} | {bucketed:.3f} | "
            f"{bucketed / plain:.2f}x | {len(texts) / fit_seconds:,.0f} | "
            f"{len(texts) / encode_seconds:,.0f} |"
        )
    table = (
        "| corpus (max_len 400, batch 32) | documents | padding efficiency, random batches | "
        "with bucketing | gain | fit tokenizer, docs/s | encode, docs/s |\n"
        "|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows)
    )
    write_section(
        "text_pipeline",
        "Text pipeline",
        f"{table}\n\nPadding efficiency is real tokens / padded tokens over one training epoch; "
        "bucketing sorts pools of 50 batches by length and shuffles the batches. Tokenization "
        "is HF `tokenizers` word level (NFKC, lowercase, whitespace/punctuation split).",
    )
    return results


if __name__ == "__main__":
    main()
