"""make bench: a benchmark that cannot run here says why in one line, and the rest still run."""

import sys
import types

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import input_pipeline  # noqa: E402
import report  # noqa: E402
import run  # noqa: E402
import seed_cnn_speed  # noqa: E402

from litlab.errors import LitlabError  # noqa: E402


def test_missing_data_is_one_line_and_the_other_sections_are_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(report, "DOC", tmp_path / "benchmarks.md")
    monkeypatch.setattr(input_pipeline, "DATA_DIR", tmp_path / "no-data")
    other = types.ModuleType("other")
    other.main = lambda: report.write_section("other", "Another benchmark", "| a |\n|---|")
    assert run.run_all([input_pipeline, other]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: input_pipeline: ") and "litlab-data mnist" in line
    page = (tmp_path / "benchmarks.md").read_text()
    assert page.startswith(report.HEADER) and "<!-- other:start -->" in page
    assert f"at {report.MEASURED} on" in page


def test_a_keras_python_that_is_not_there(monkeypatch):
    monkeypatch.setenv("KERAS_PYTHON", "/nonexistent/python")
    with pytest.raises(LitlabError, match="KERAS_PYTHON=/nonexistent/python is no file"):
        seed_cnn_speed.keras_run()
