"""Classify new inputs with a trained run: image files, or text files holding one text a line.

An image is drawn the way the run's dataset draws one (MNIST: grayscale, a light digit on
black, scaled into 20 x 20 and centred by its centre of mass in 28 x 28), then normalized by
the run's datamodule code itself; a text goes through the run's own tokenizer. Each input
gives one record: its label, class name and probabilities, or the reason it was not read.
"""

import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import ListConfig
from PIL import Image, ImageOps

from litlab.data.mnist import DATASETS, InMemoryImages
from litlab.data.text import LABELS_FILE, TOKENIZER_FILE, TokenizedTexts, encode
from litlab.errors import LitlabError, first_line
from litlab.files import atomic_write
from litlab.tasks import load_run

INK = 32  # of 255: brighter than this above the background counts as part of the object


def background(gray: torch.Tensor) -> float:
    """The grey level of a picture's edge."""
    return torch.cat([gray[0], gray[-1], gray[:, 0], gray[:, -1]]).median().item()


def mnist_like(image: Image.Image, size: int = 28, object_size: int = 20) -> torch.Tensor:
    """A picture of any size and colours as the MNIST family draws one: uint8 [1, size, size],
    a light object on black, scaled to fit `object_size` and centred by its centre of mass.

    Dark-on-light pictures (ink on paper) are inverted; transparency counts as white paper.
    """
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
    gray = torch.from_numpy(np.asarray(image.convert("L"), dtype=np.float32).copy())
    if background(gray) > 127:  # a light background: make the object the light part
        gray = 255 - gray
    ink = (gray - background(gray)).clamp(min=0)
    if ink.max() < INK:
        raise ValueError("no object found: the picture is blank or has almost no contrast")
    ink *= 255 / ink.max()  # strokes at full brightness, as in MNIST
    rows, cols = (ink > INK).any(dim=1).nonzero(), (ink > INK).any(dim=0).nonzero()
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    scale = object_size / max(crop.shape)
    width, height = (max(1, round(n * scale)) for n in (crop.shape[1], crop.shape[0]))
    small = Image.fromarray(crop.round().byte().numpy()).resize(
        (width, height), Image.Resampling.LANCZOS
    )
    obj = torch.from_numpy(np.asarray(small, dtype=np.float32).copy())
    mass = obj.sum().clamp(min=1e-6)
    centre_y = (obj.sum(dim=1) * torch.arange(height)).sum() / mass
    centre_x = (obj.sum(dim=0) * torch.arange(width)).sum() / mass
    middle = size / 2  # where MNIST puts the centre of mass (pixel 14 of 0..27)
    top = min(max(round(middle - centre_y.item()), 0), size - height)
    left = min(max(round(middle - centre_x.item()), 0), size - width)
    out = torch.zeros(1, size, size, dtype=torch.uint8)
    out[0, top : top + height, left : left + width] = obj.round().byte()
    return out


def read_image(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()  # decode now: a truncated or corrupt file fails here
        return image.copy()


def text_lines(path: Path) -> Iterator[tuple[str, str | None, str | None]]:
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


def expand(inputs: Iterable[str | Path]) -> Iterator[Path]:
    """Each input path; a folder stands for the files in it."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from sorted(
                p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
            )
        else:
            yield path


class Predictor:
    """A trained classifier run, classifying inputs the way its data was prepared."""

    def __init__(self, run_dir=None, ckpt_path=None, batch_size: int = 256):
        run = load_run(run_dir, ckpt_path, classifier=True)
        self.run_dir, self.cfg, self.model = run.run_dir, run.config, run.model
        self.batch_size = batch_size
        data = self.cfg.data
        self.text = "tokenizer_dir" in data
        if self.text:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_file(str(self.run_dir / TOKENIZER_FILE))
            self.class_names = json.loads((self.run_dir / LABELS_FILE).read_text())
        else:
            spec = DATASETS[data.name]
            self.object_size = spec.object_size
            self.class_names = list(spec.classes)

    @torch.no_grad()
    def _probabilities(self, batches: Iterable) -> torch.Tensor:
        out = [self.model(batch).softmax(dim=-1) for batch in batches]
        return torch.cat(out) if out else torch.empty(0, len(self.class_names))

    def _chunks(self, n: int) -> Iterator[list[int]]:
        for start in range(0, n, self.batch_size):
            yield list(range(start, min(start + self.batch_size, n)))

    def pixels(self, image: Image.Image) -> torch.Tensor:
        """A picture as the run's dataset draws one: uint8 [1, H, W]."""
        return mnist_like(image, self.cfg.data.input_shape[-1], self.object_size)

    def images(self, images: Sequence[Image.Image | torch.Tensor]) -> torch.Tensor:
        """Class probabilities [N, C] of pictures (or of their `pixels`)."""
        data = self.cfg.data
        pixels = [x if isinstance(x, torch.Tensor) else self.pixels(x) for x in images]
        shape = tuple(data.input_shape)
        dataset = InMemoryImages(
            torch.stack(pixels) if pixels else torch.empty(0, *shape, dtype=torch.uint8),
            torch.zeros(len(pixels), dtype=torch.int64),
            data.mean,
            data.std,
        )
        return self._probabilities(dataset.__getitems__(i)[0] for i in self._chunks(len(pixels)))

    def texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Class probabilities [N, C] of texts."""
        dataset = TokenizedTexts(
            encode(self.tokenizer, texts, self.cfg.data.max_len),
            torch.zeros(len(texts), dtype=torch.int64),
        )
        return self._probabilities(dataset.__getitems__(i)[0] for i in self._chunks(len(texts)))

    def record(self, name: str, probabilities: torch.Tensor) -> dict:
        label = int(probabilities.argmax())
        return {
            "input": name,
            "label": label,
            "class": self.class_names[label],
            "probabilities": {
                c: round(float(p), 6) for c, p in zip(self.class_names, probabilities, strict=True)
            },
        }

    def _read(self, path: Path) -> list[tuple[str, object, str | None]]:
        """(input name, pixels or text, error) for each input a file holds."""
        if not path.is_file():
            return [(str(path), None, "no such file")]
        if self.text:
            return list(text_lines(path))
        try:
            return [(str(path), self.pixels(read_image(path)), None)]
        except (OSError, SyntaxError, Image.DecompressionBombError) as err:
            return [(str(path), None, f"not a readable image ({first_line(err)})")]
        except ValueError as err:  # read, but nothing to classify in it
            return [(str(path), None, str(err))]

    def files(self, inputs: Iterable[str | Path]) -> list[dict]:
        """One record per image file (image runs) or per line of a text file (text runs), in
        order; an input that cannot be read gets `error` instead of a prediction."""
        items = [item for path in expand(inputs) for item in self._read(path)]
        good = [i for i, (_, _, error) in enumerate(items) if error is None]
        contents = [items[i][1] for i in good]
        probabilities = self.texts(contents) if self.text else self.images(contents)
        records = [{"input": name, "error": error} for name, _, error in items]
        for i, p in zip(good, probabilities, strict=True):
            records[i] = self.record(items[i][0], p)
            if self.text:
                records[i]["text"] = items[i][1]
        return records


def predict(cfg) -> list[dict]:
    """litlab-predict's work: the records of `cfg.inputs`, also written to predictions.jsonl
    in this prediction's own directory."""
    inputs = list(cfg.inputs) if isinstance(cfg.inputs, ListConfig) else [cfg.inputs]
    if not inputs:
        raise LitlabError("inputs=[] names nothing to classify; pass inputs=<file> or [a,b,...]")
    predictor = Predictor(cfg.get("run_dir"), cfg.get("ckpt_path"), cfg.batch_size)
    records = predictor.files([str(i) for i in inputs])
    lines = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(Path(cfg.paths.output_dir) / "predictions.jsonl", lines)
    return records
