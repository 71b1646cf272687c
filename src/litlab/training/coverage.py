"""How much of the test split a test measured, so a partial test says so."""

from lightning.pytorch.callbacks import Callback


class TestCoverage(Callback):
    """Logs how many inputs a test measured, `test/samples`, of the `test/samples_total` its
    split holds: fewer when `limit_test_batches` or `fast_dev_run` limit the test."""

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        n = len(batch[-1])  # the labels, one per input
        pl_module.log("test/samples", float(n), reduce_fx="sum", batch_size=n, sync_dist=True)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        loaders = trainer.test_dataloaders
        loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
        total = sum(len(loader.dataset) for loader in loaders)
        pl_module.log("test/samples_total", float(total), sync_dist=True)


def coverage(metrics: dict[str, float]) -> str:
    """What a test measured, in words, from the metrics `TestCoverage` logged."""
    samples, total = int(metrics["test/samples"]), int(metrics["test/samples_total"])
    if samples >= total:
        return f"on all {total:,} test inputs"
    return (
        f"on {samples:,} of {total:,} test inputs, a partial test (trainer.limit_test_batches "
        "or fast_dev_run); litlab-eval tests them all"
    )
