"""make bench: a benchmark that cannot run here says why in one line, and the rest still run."""

import re
import subprocess
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


SECTION = re.compile(r"<!-- (\w+):start -->\n(.*?)<!-- \1:end -->", re.S)


def first_table_rows(section: str) -> list[str]:
    """The first table's body rows, each as its cells joined by ' | '."""
    lines = section.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    rows = []
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        rows.append(" | ".join(cell.strip() for cell in line.strip("|").split("|")))
    return rows


def test_every_section_names_a_commit_and_rows_its_script_still_writes():
    """docs/benchmarks.md holds only what the current benchmarks produce, each section at a
    commit of this history; a section of a removed benchmark or variant must be regenerated."""
    git = ["git", "-C", str(ROOT)]
    shallow = subprocess.run([*git, "rev-parse", "--is-shallow-repository"], capture_output=True)
    if shallow.returncode:
        pytest.skip("not a git checkout: the commits the sections name cannot be looked up")
    history = shallow.stdout.strip() != b"true"  # a shallow clone lacks the older commits
    scripts = {benchmark.__name__: benchmark for benchmark in run.BENCHMARKS}
    page = report.DOC.read_text()
    assert page.startswith(report.HEADER), (
        "the page's header is not report.HEADER: rerun make bench"
    )
    sections = SECTION.findall(page)
    assert sections
    for name, text in sections:
        script = scripts.get(name.removesuffix("_gpu"))
        assert script, f"section {name}: no benchmark of that name in benchmarks/run.py"
        found = re.search(r"^Measured .* at commit ([0-9a-f]{7,40})\b", text, re.M)
        assert found, f"section {name} names no commit"
        exists = subprocess.run([*git, "cat-file", "-e", f"{found[1]}^{{commit}}"]).returncode == 0
        assert exists or not history, f"section {name}: no commit {found[1]} in the history"
        for row in first_table_rows(text):
            assert any(
                row == label or row.startswith((f"{label} | ", f"{label} ("))
                for label in script.ROWS
            ), f"section {name}: {script.__name__}.py writes no row {row.split(' | ')[0]!r}"
