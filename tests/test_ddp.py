"""Data parallel training: DDP on two CPU processes through litlab-train, and the samplers."""

import pytest
import torch
from conftest import DATA_DIR, read_metrics, run_cli
from torch.utils.data import DistributedSampler

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
