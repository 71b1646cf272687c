"""The article's sec. 4.1 Keras CNN on the same MNIST files, timed per epoch.

Run by seed_cnn_speed.py with a Python that has TensorFlow (`KERAS_PYTHON`); needs only numpy
and tensorflow. It trains on litlab's split of the training images (the indices in a .npy file:
validation first) and validates on the rest within each epoch, as litlab-train does. Prints one
JSON line: seconds per epoch and the test accuracy.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow.keras import layers, models


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format) as an array of its shape."""
    data = path.read_bytes()
    dims = data[3]
    shape = np.frombuffer(data, ">u4", dims, offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


class EpochSeconds(tf.keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.seconds = []

    def on_epoch_begin(self, epoch, logs=None):
        self.start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self.start)


def main(raw: Path, split: Path, val_size: int, epochs: int, batch_size: int) -> dict:
    def images(name):
        return read_idx(raw / name)[..., None].astype("float32") / 255.0

    all_x, test_x = images("train-images-idx3-ubyte"), images("t10k-images-idx3-ubyte")
    all_y = read_idx(raw / "train-labels-idx1-ubyte")
    test_y = read_idx(raw / "t10k-labels-idx1-ubyte")
    order = np.load(split)
    val, train = order[:val_size], order[val_size:]
    train_x, train_y, val_x, val_y = all_x[train], all_y[train], all_x[val], all_y[val]
    tf.keras.utils.set_random_seed(42)
    model = models.Sequential()  # the article's code, layer for layer
    model.add(layers.Input((28, 28, 1)))
    model.add(layers.Conv2D(32, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = EpochSeconds()
    model.fit(
        train_x,
        train_y,
        epochs=epochs,
        batch_size=batch_size,
        validation_data=(val_x, val_y),
        verbose=0,
        callbacks=[timer],
    )
    _, accuracy = model.evaluate(test_x, test_y, verbose=0)
    return {
        "seconds": timer.seconds,
        "test_acc": float(accuracy),
        "steps": -(-len(train_x) // batch_size),
        "tensorflow": tf.__version__,
    }


if __name__ == "__main__":
    raw, split, val_size, epochs, batch_size = sys.argv[1:]
    print(json.dumps(main(Path(raw), Path(split), int(val_size), int(epochs), int(batch_size))))
