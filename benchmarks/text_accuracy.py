"""Test accuracy of the article's stacked-LSTM classifier next to TF-IDF + logistic regression.

Both see the same seeded stratified split (80/10/10) of the same deduplicated corpus; the
baseline fits on the train part and is scored on the test part, as the LSTM is. Each corpus
runs with 5 seeds (each its own split and initialisation) that were not used while choosing the
recipes, and is judged on their mean.
"""

import logging
import statistics

from hydra.utils import instantiate
from report import train_config, write_section
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

import litlab

# Held out: the recipes were tuned with other seeds (42, 1, 3, 7).
SEEDS = (101, 102, 103, 104, 105)
# corpus: (experiment, goal)
RUNS = {"bbc_news": ("seed_rnn", 0.95), "tweets_sentiment": ("rnn_tweets", 0.72)}
ROWS = tuple(RUNS)


def tfidf_baseline(splits) -> float:
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), max_features=10_000)
    train_x = vectorizer.fit_transform([text for text, _ in splits["train"]])
    model = LogisticRegression(max_iter=2000).fit(train_x, [y for _, y in splits["train"]])
    test_x = vectorizer.transform([text for text, _ in splits["test"]])
    return model.score(test_x, [y for _, y in splits["test"]])


def main() -> dict:
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    rows, results = [], {}
    for corpus, (experiment, goal) in RUNS.items():
        runs = []  # (seed, split sizes, TF-IDF accuracy, LSTM accuracy)
        for seed in SEEDS:
            cfg = train_config(f"experiment={experiment}", f"seed={seed}")
            splits = instantiate(cfg.data).split_records()
            sizes = "/".join(f"{len(splits[s]):,}" for s in ("train", "val", "test"))
            runs.append((seed, sizes, tfidf_baseline(splits), litlab.train(cfg)["test/acc"]))
        baseline = statistics.mean(tfidf for _, _, tfidf, _ in runs)
        scores = [acc for _, _, _, acc in runs]
        lstm = statistics.mean(scores)
        results[corpus] = lstm
        verdict = f"mean >= {goal} ({'met' if lstm >= goal else 'missed'})"
        runs.append(
            (f"mean of {len(SEEDS)}", f"range {min(scores):.3f}-{max(scores):.3f}", baseline, lstm)
        )
        for i, (seed, sizes, tfidf, acc) in enumerate(runs, 1):
            rows.append(
                f"| {corpus} | {seed} | {sizes} | `experiment={experiment}` | {tfidf:.3f} | "
                f"{acc:.3f} | {verdict if i == len(runs) else ''} |"
            )
    table = (
        "| corpus | seed | train/val/test | litlab run | TF-IDF (1-2 grams, 10k) + LR | "
        "seed LSTM | goal |\n|---|---|---|---|---:|---:|---|\n" + "\n".join(rows)
    )
    write_section(
        "text_accuracy",
        "Text classification accuracy: seed LSTM vs TF-IDF",
        f"{table}\n\nThe LSTM is the article's sec. 4.2 model (Embedding(10000, 64) -> "
        "LSTM(64) -> LSTM(64) -> Dense) in Keras-compatible mode, tested at its best "
        "validation epoch. On bbc_news it trains on a random window of `max_len` words of "
        "each article, drawn anew each epoch (`data.train_window=random`), with 10% of the "
        "words dropped (`model.net.word_dropout`), and is validated "
        "and tested on each article's first `max_len` words; a seed sets both the split and "
        "the initialisation.",
    )
    return results


if __name__ == "__main__":
    main()
