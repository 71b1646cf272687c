"""The layers of docs/design.md, held by import-linter: the contracts in pyproject.toml pass, and
an import that goes up a layer breaks them."""

import shutil
import subprocess

from conftest import BIN, ROOT


def lint_imports(root):
    return subprocess.run(
        [str(BIN / "lint-imports"), "--no-cache"],
        cwd=root,
        env={"PYTHONPATH": str(root / "src"), "PATH": str(BIN)},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_every_package_imports_only_the_layers_below_it():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Contracts: 3 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    model = tmp_path / "src" / "litlab" / "models" / "base.py"
    model.write_text("from litlab.training.loggers import CSVLogger\n" + model.read_text())
    config = tmp_path / "src" / "litlab" / "config" / "check.py"
    config.write_text("import torch\n" + config.read_text())

    result = lint_imports(tmp_path)
    assert result.returncode == 1
    assert "litlab.models is not allowed to import litlab.training" in result.stdout
    assert "litlab.config is not allowed to import torch" in result.stdout
