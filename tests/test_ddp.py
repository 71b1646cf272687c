"""Data parallel training: DDP on two CPU processes through litlab-train, and the samplers."""

import csv
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import DATA_DIR, cli_command, read_metrics, run_cli
from torch.utils.data import DistributedSampler

from litlab.cli.report import main as report_main
from litlab.data.text import BucketBatchSampler, TokenizedTexts


def test_ddp_cpu_on_2_processes_matches_1_process_on_the_same_global_batch(tmp_path, mnist):
    common = [
        "experiment=mlp_relu",
        "data.labelled=1000",
        "trainer.max_epochs=2",
        "trainer.deterministic=true",
        "callbacks.rich_progress_bar=null",
        f"paths.data_dir={DATA_DIR}",
        f"paths.log_dir={tmp_path / 'logs'}",
    ]
    ddp, one = tmp_path / "ddp", tmp_path / "one"
    two_ranks = run_cli(
        "litlab-train", *common, "trainer=ddp_cpu", "data.batch_size=25", f"hydra.run.dir={ddp}"
    )
    assert two_ranks.returncode == 0, two_ranks.stderr[-3000:]
    assert "MEMBER: 2/2" in two_ranks.stdout + two_ranks.stderr  # rank 1 really ran
    # One process on the whole batch; under the DDP strategy, so that it shuffles as DDP does
    # (Lightning's DistributedSampler, seeded by seed and epoch).
    single = run_cli(
        "litlab-train",
        *common,
        "trainer=ddp_cpu",
        "trainer.devices=1",
        "data.batch_size=50",
        f"hydra.run.dir={one}",
    )
    assert single.returncode == 0, single.stderr[-3000:]

    expected = read_metrics(one)
    assert read_metrics(ddp).keys() == expected.keys()
    for key, value in read_metrics(ddp).items():
        assert value == pytest.approx(expected[key], abs=1e-3), key
    # One run directory and one set of logs: rank 1 wrote into the same directory.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "one"]
    assert sorted(p.name for p in (ddp / "csv").iterdir()) == ["hparams.yaml", "metrics.csv"]
    assert (ddp / "train.log").read_text().count("run directory:") == 1


def test_bucketed_text_batches_shard_evenly():
    torch.manual_seed(0)
    lengths = torch.randint(1, 100, (600,)).tolist()
    data = TokenizedTexts([torch.ones(n, dtype=torch.int64) for n in lengths], torch.zeros(600))
    batches = []
    for rank in range(2):  # what Lightning builds around each rank's DistributedSampler
        shard = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=True, seed=1)
        batches.append(list(BucketBatchSampler(shard, 16, lengths=lengths, pool_batches=5)))
    assert len(batches[0]) == len(batches[1])  # equal step counts, or DDP would hang
    seen = [i for batch in batches[0] + batches[1] for i in batch]
    assert sorted(seen) == list(range(600))  # disjoint shards covering everything
    for batch in batches[0]:  # and still bucketed: similar lengths in a batch
        spread = [lengths[i] for i in batch]
        assert max(spread) - min(spread) < 30


def rank_processes(ancestor: int) -> list[int]:
    """The live processes below `ancestor` (litlab-train's supervisor, then the process running
    the sweep) that Lightning started as DDP ranks (it sets their LOCAL_RANK)."""
    parents, ranks = {}, []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            environ = (stat.parent / "environ").read_bytes().split(b"\0")
        except OSError:  # ended meanwhile
            continue
        pid, state = int(stat.parent.name), fields[0]
        parents[pid] = int(fields[1])
        if state != "Z" and any(v.startswith(b"LOCAL_RANK=") for v in environ):
            ranks.append(pid)

    def below(pid: int) -> bool:
        while pid in parents and pid != ancestor:
            pid = parents[pid]
        return pid == ancestor

    return [pid for pid in ranks if pid != ancestor and below(pid)]


def test_a_rank_killed_in_a_ddp_sweep_fails_its_job_only_and_leaves_no_process(tmp_path, mnist):
    sweep = tmp_path / "sweep"
    # Job 1 trains until its rank 1 is killed; jobs 0 and 2 train one short epoch.
    job = subprocess.Popen(
        [
            *cli_command("litlab-train"),
            "-m",
            "trainer=ddp_cpu",
            "experiment=mlp_relu",
            "data.labelled=1000",
            "trainer.max_epochs=1,100000,1",
            "callbacks.early_stopping=null",
            "callbacks.rich_progress_bar=null",
            "+trainer.limit_train_batches=2",
            "+trainer.limit_val_batches=1",
            "+trainer.limit_test_batches=1",
            f"paths.data_dir={DATA_DIR}",
            f"hydra.sweep.dir={sweep}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0"},
    )
    ranks = []
    try:
        # Once job 1 has checkpointed an epoch its ranks train together: kill its rank 1.
        deadline = time.monotonic() + 300
        while not (sweep / "1" / "checkpoints" / "last.ckpt").is_file():
            assert job.poll() is None and time.monotonic() < deadline, job.stdout.read()
            time.sleep(0.05)
        ranks = rank_processes(job.pid)
        assert len(ranks) == 1, ranks  # job 0's rank 1 ended with its job
        os.kill(ranks[0], signal.SIGKILL)
        output, _ = job.communicate(timeout=300)
    finally:
        job.kill()
    assert job.returncode == 1, output[-3000:]  # not 137: the submitter lived on
    assert "error: job 1 failed:" in output
    assert (sweep / "1" / "error.txt").is_file()
    assert "error" in (sweep / "1" / "train.log").read_text().lower()
    for done in ("0", "2"):  # the jobs before and after it ran to the end
        assert "test/acc" in read_metrics(sweep / done)
    assert not (sweep / "1" / "metrics.json").exists()
    assert rank_processes(job.pid) == [] and not Path(f"/proc/{ranks[0]}").exists()
    report_main([str(sweep)])
    with open(sweep / "report.csv", newline="") as f:
        statuses = {row["job"]: row["status"] for row in csv.DictReader(f)}
    assert statuses == {"0": "finished", "1": "failed", "2": "finished"}
