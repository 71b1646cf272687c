"""Loggers litlab adds to Lightning's."""

import csv
import io
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from litlab.files import atomic_write


class _AppendingWriter(ExperimentWriter):
    """Keeps an existing metrics.csv (Lightning deletes it), and grows its header in one atomic
    rewrite before appending rows: a run stopped anywhere leaves a file it can go on with."""

    def _check_log_dir_exists(self) -> None:
        if Path(self.metrics_file_path).is_file():
            with open(self.metrics_file_path, newline="") as f:
                self.metrics_keys = sorted(next(csv.reader(f), []))

    def save(self) -> None:
        if not self.metrics:
            return
        path = Path(self.metrics_file_path)
        keys = sorted(set(self.metrics_keys).union(*self.metrics))
        if keys != self.metrics_keys or not path.is_file():
            rows = []
            if path.is_file():
                with open(path, newline="") as f:
                    rows = list(csv.DictReader(f))
            atomic_write(path, _table(keys, rows))
            self.metrics_keys = keys
        with open(path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=keys).writerows(self.metrics)
        self.metrics = []


def _table(keys: list[str], rows: list[dict]) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=keys, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


class CSVLogger(LightningCSVLogger):
    """Lightning's CSV logger, except that a resumed run appends to its `metrics.csv`, and that
    an interruption never costs the rows written so far."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
