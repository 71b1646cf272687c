"""Never lose a run: resume after a kill, crash-safe checkpoints, refused checkpoints."""

import csv
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, cli_command, compose, read_metrics, run_cli
from omegaconf import OmegaConf

import litlab
from litlab.cli.train import check_resume_command
from litlab.errors import LitlabError
from litlab.files import atomic_write
from litlab.run.checkpoints import AtomicCheckpointIO, RandomState, load_checkpoint
from litlab.run.plan import plan_run
from litlab.run.resume import resumed_config, starting_point
from litlab.training.loggers import CSVLogger
from litlab.training.tasks import build_trainer

# Deterministic, with dropout: a resumed run must also draw the same dropout masks.
RUN = [
    "experiment=mlp_relu",
    "data.labelled=2000",
    "model.net.dropout=0.2",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "callbacks.rich_progress_bar=null",
    f"paths.data_dir={DATA_DIR}",
]


def wait_for(condition, process: subprocess.Popen | None = None, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while not (found := condition()):
        assert process is None or process.poll() is None, "the process ended first"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)
    return found


def test_a_run_killed_mid_epoch_resumes_to_the_same_final_metrics(tmp_path, mnist):
    whole = run_cli("litlab-train", *RUN, f"hydra.run.dir={tmp_path / 'whole'}")
    assert whole.returncode == 0, whole.stderr[-3000:]

    run_dir = tmp_path / "killed"
    last = run_dir / "checkpoints" / "last.ckpt"
    killed = subprocess.Popen(
        [*cli_command("litlab-train"), *RUN, f"hydra.run.dir={run_dir}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(last.is_file, killed)  # epoch 0 is saved: kill it in epoch 1
        killed.send_signal(signal.SIGKILL)
    finally:
        killed.kill()
        killed.wait()
    assert not (run_dir / "metrics.json").exists()
    assert load_checkpoint(last)["epoch"] == 0

    resumed = run_cli("litlab-train", "resume=auto", f"hydra.run.dir={run_dir}")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    restored = f"resuming from {last.resolve()}"
    assert restored in resumed.stdout + resumed.stderr
    assert read_metrics(run_dir) == read_metrics(tmp_path / "whole")  # bitwise
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert sorted(int(r["epoch"]) for r in rows if r["val/acc"]) == [0, 1]  # logs go on


def test_the_csv_log_of_a_stopped_run_goes_on_when_it_resumes(tmp_path):
    first = CSVLogger(tmp_path, name="csv", version="")
    first.log_metrics({"val/acc": 0.5}, step=0)
    first.save()
    with (tmp_path / "csv" / "metrics.csv").open("a") as f:
        f.write("1,0.6,0.7\n2,0.")  # a row written under a header it outgrew, half a row
    resumed = CSVLogger(tmp_path, name="csv", version="")  # Lightning's deletes the file here
    resumed.log_metrics({"train/acc": 0.7, "val/acc": 0.8}, step=3)  # a new column
    resumed.save()
    rows = list(csv.DictReader((tmp_path / "csv" / "metrics.csv").open()))
    assert rows[0] == {"step": "0", "train/acc": "", "val/acc": "0.5"}
    assert rows[-1] == {"step": "3", "train/acc": "0.7", "val/acc": "0.8"}


def test_an_epoch_logged_but_not_checkpointed_is_logged_once_when_it_is_trained_again(
    tmp_path, mnist
):
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    first = run_cli("litlab-train", *RUN, "trainer.max_epochs=1", f"hydra.run.dir={run_dir}")
    assert first.returncode == 0, first.stderr[-3000:]
    epoch_0 = last.read_bytes()
    second = run_cli(
        "litlab-train", "resume=auto", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"
    )
    assert second.returncode == 0, second.stderr[-3000:]
    # As if stopped after logging epoch 1, before its checkpoint (a signal at the epoch's end)
    last.write_bytes(epoch_0)
    again = run_cli(
        "litlab-train", "resume=auto", "trainer.max_epochs=2", f"hydra.run.dir={run_dir}"
    )
    assert again.returncode == 0, again.stderr[-3000:]
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    assert sorted(int(r["epoch"]) for r in rows if r["val/acc"]) == [0, 1]


SAVER = """
import sys, torch
from litlab.run.checkpoints import AtomicCheckpointIO
io, weights = AtomicCheckpointIO(), torch.empty(16_000_000)  # 64 MB: a save takes a while
for version in range(1_000_000):
    checkpoint = {"state_dict": {"w": weights.fill_(version)}, "version": version}
    io.save_checkpoint(checkpoint, sys.argv[1])
"""


def test_a_kill_while_saving_never_leaves_a_corrupt_last_ckpt(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"

    def partial() -> Path | None:
        return next(last.parent.glob(".last.ckpt.*.partial"), None)

    for _ in range(5):  # until a kill lands in the middle of a save
        saver = subprocess.Popen([sys.executable, "-c", SAVER, str(last)])
        try:
            wait_for(last.is_file, saver)
            wait_for(partial, saver)
            saver.send_signal(signal.SIGKILL)
        finally:
            saver.kill()
            saver.wait()
        if partial() is not None:
            break
    left_behind = partial()
    assert left_behind is not None, "no kill landed while saving"

    checkpoint = load_checkpoint(last)  # the previous save, whole
    expected = torch.full((16_000_000,), float(checkpoint["version"]))
    assert torch.equal(checkpoint["state_dict"]["w"], expected)
    AtomicCheckpointIO().save_checkpoint({"state_dict": {}}, last)  # the next save tidies up
    assert not left_behind.exists()


def test_every_trainer_saves_atomically_with_the_random_state(tmp_path):
    trainer = build_trainer(compose(tmp_path, "experiment=mlp_relu", "callbacks=none"))
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert any(isinstance(c, RandomState) for c in trainer.callbacks)


def test_a_crafted_checkpoint_is_refused_on_resume_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (__import__("os").system, (f"touch {marker}",))

    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    torch.save(
        {"state_dict": {}, "payload": Exploit()},
        run_dir / "checkpoints" / "last.ckpt",
        pickle_protocol=pickle.HIGHEST_PROTOCOL,
    )
    result = run_cli("litlab-train", "resume=auto", f"hydra.run.dir={run_dir}")
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "is not a loadable checkpoint" in lines[0]
    assert not marker.exists()
    assert not (run_dir / "metrics.json").exists()


def test_resume_auto_without_a_checkpoint_is_an_error(tmp_path):
    result = run_cli("litlab-train", "resume=auto", f"hydra.run.dir={tmp_path}")
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
    assert "nothing to resume" in lines[0] and "resume=auto_or_fresh" in lines[0]
    assert not (tmp_path / "checkpoints").exists()


def test_resume_auto_or_fresh_starts_fresh_where_there_is_no_checkpoint(tmp_path, mnist):
    cfg = compose(tmp_path, "experiment=mlp_relu", "debug=limit", "trainer.max_epochs=1")
    cfg.resume = "auto"
    with pytest.raises(LitlabError, match="nothing to resume"):
        litlab.train(cfg)
    cfg.resume = "auto_or_fresh"
    assert litlab.train(cfg)["test/acc"] > 0.5
    assert plan_run(cfg).checkpoint == str(tmp_path / "checkpoints" / "last.ckpt")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["resume=auto"], "name its directory with hydra.run.dir="),
        (["ckpt_path=last"], "name its directory with hydra.run.dir="),
        (["resume=auto", "hydra.run.dir=/nonexistent/run"], "there is no run directory"),
    ],
)
def test_resume_needs_the_directory_of_a_run(argv, message):
    with pytest.raises(LitlabError, match=message):
        check_resume_command(argv)


def test_a_fresh_run_refuses_a_directory_that_holds_a_run(tmp_path):
    last = tmp_path / "checkpoints" / "last.ckpt"
    atomic_write(last, b"an earlier run")
    cfg = compose(tmp_path, "experiment=mlp_relu")
    with pytest.raises(LitlabError, match="already holds a run"):
        litlab.train(cfg)
    assert last.read_bytes() == b"an earlier run"
    cfg.ckpt_path = "last"  # the same as resume=auto
    assert starting_point(cfg) == ("auto", str(last))


def test_a_job_its_scheduler_reruns_resumes_by_itself(tmp_path, monkeypatch):
    cfg = compose(tmp_path, "experiment=mlp_relu")
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert starting_point(cfg) == ("auto_or_fresh", None)  # preempted before a checkpoint
    atomic_write(tmp_path / "checkpoints" / "last.ckpt", b"")
    assert starting_point(cfg) == ("auto_or_fresh", str(tmp_path / "checkpoints" / "last.ckpt"))


def test_a_resumed_run_keeps_its_config_and_takes_new_values(tmp_path):
    started = compose(tmp_path, "experiment=mlp_relu", "data.labelled=500")
    atomic_write(tmp_path / "config.yaml", OmegaConf.to_yaml(started, resolve=True))
    now = compose(tmp_path, "resume=auto", "trainer.max_epochs=20")
    cfg = resumed_config(now, values=["resume", "trainer.max_epochs"])
    assert cfg.model.net._target_ == "litlab.nets.MLP" and cfg.data.labelled == 500
    assert (cfg.resume, cfg.trainer.max_epochs) == ("auto", 20)
    # A restart script may repeat the run's choices, but not build another run with them.
    again = compose(tmp_path, "experiment=mlp_relu", "data.labelled=500", "resume=auto")
    assert resumed_config(again, ["data.labelled", "resume"], ["experiment=mlp_relu"]) == {
        **OmegaConf.to_container(started, resolve=True),
        "resume": "auto",
    }
    other = compose(tmp_path, "experiment=mlp_relu", "resume=auto")
    with pytest.raises(LitlabError, match="data.labelled=None, there 500"):
        resumed_config(other, ["resume"], ["experiment=mlp_relu"])
