"""Classify new inputs with a trained run: image files, or text files (one text a line, or a
CSV, TSV or JSON lines file's text column).

The run's own DataModule says how a file is read and how its inputs are drawn and normalized
(MNIST: grayscale, a light digit on black, centred as MNIST draws one; an image folder: resized
as in training; text: through the run's own tokenizer). Each input gives one record: the class
predicted (its name and index), every class's probability, or the reason it was not read.
"""

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from litlab.data.base import InputItem, trained_data
from litlab.errors import LitlabError
from litlab.files import atomic_write, expand, input_list
from litlab.inference.runs import load_run


class Predictor:
    """A trained classifier run, classifying inputs the way its data was prepared."""

    def __init__(
        self, run_dir=None, ckpt_path=None, batch_size: int = 256, text_column=None, trust_run=False
    ):
        """`text_column`: the column of a CSV, TSV or JSON lines input holding the texts (a
        text run's; by default the run's own `data.text_column`); `trust_run`: see load_run."""
        run = load_run(run_dir, ckpt_path, classifier=True, trust_run=trust_run)
        self.run_dir, self.cfg, self.model = run.run_dir, run.config, run.model
        self.batch_size = batch_size
        if text_column is not None:
            if "text_column" not in self.cfg.data:
                raise LitlabError(
                    f"text_column={text_column}: the run's data ({self.cfg.data._target_}) has "
                    "no text columns; leave text_column out"
                )
            self.cfg.data.text_column = text_column
        self.data = trained_data(self.cfg.data)
        self.class_names = list(self.data.class_names)

    @torch.no_grad()
    def probabilities(self, inputs: Sequence) -> torch.Tensor:
        """Class probabilities [N, C] of inputs as the run's data reads them: pictures (or the
        run's drawing of them, `data.draw`) for image runs, strings for text runs."""
        batches = (
            self.data.input_batch(inputs[start : start + self.batch_size])
            for start in range(0, len(inputs), self.batch_size)
        )
        out = [self.model(batch).softmax(dim=-1) for batch in batches]
        return torch.cat(out) if out else torch.empty(0, len(self.class_names))

    images = texts = probabilities  # the names of the two kinds of runs

    def record(self, name: str, probabilities: torch.Tensor) -> dict:
        index = int(probabilities.argmax())
        return {
            "input": name,
            "predicted_class": self.class_names[index],
            "predicted_index": index,  # of the class in class_names, the net's output order
            "probabilities": {
                c: round(float(p), 6) for c, p in zip(self.class_names, probabilities, strict=True)
            },
        }

    def read(self, path: Path) -> list[InputItem]:
        """(input name, content, error) for each input a file holds."""
        if not path.is_file():
            return [(str(path), None, "no such file")]
        return self.data.read_inputs(path)

    def files(self, inputs: Iterable[str | Path]) -> list[dict]:
        """One record per image file (image runs) or per line of a text file (text runs), in
        order; an input that cannot be read gets `error` instead of a prediction."""
        items = [item for path in expand(inputs) for item in self.read(path)]
        good = [i for i, (_, _, error) in enumerate(items) if error is None]
        probabilities = self.probabilities([items[i][1] for i in good])
        records = [{"input": name, "error": error} for name, _, error in items]
        for i, p in zip(good, probabilities, strict=True):
            records[i] = self.record(items[i][0], p)
            if isinstance(items[i][1], str):  # a text is shown with its prediction
                records[i]["text"] = items[i][1]
        return records


def predict(cfg) -> list[dict]:
    """litlab-predict's work: the records of `cfg.inputs`, also written to predictions.jsonl
    in this prediction's own directory."""
    inputs = input_list(cfg.inputs)
    predictor = Predictor(
        cfg.get("run_dir"),
        cfg.get("ckpt_path"),
        cfg.batch_size,
        cfg.get("text_column"),
        trust_run=cfg.get("trust_run", False),
    )
    records = predictor.files(inputs)
    lines = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(Path(cfg.paths.output_dir) / "predictions.jsonl", lines)
    return records
