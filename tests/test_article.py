"""The article's own setup (sec. 4.1), in full: what `make train` runs."""

from conftest import compose

import litlab

# The article's Keras code reached 0.9876 after these 5 epochs on the same data. One run's score
# moves with the seed and with the CPU's kernels (AVX2 or AVX-512 oneDNN), so the test holds the
# run to the Keras level less a margin below the lowest run of the `article_accuracy` benchmark
# (docs/benchmarks.md: 5 seeds, each on both kinds of kernels); the mean belongs there.
KERAS_LEVEL, MARGIN = 0.9876, 0.0026


def test_the_articles_cnn_reaches_the_keras_level_on_mnist(tmp_path, mnist):
    metrics = litlab.train(compose(tmp_path, "experiment=seed_cnn"))
    assert metrics["test/acc"] >= KERAS_LEVEL - MARGIN
