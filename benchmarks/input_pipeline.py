"""MNIST input pipeline: litlab's in-memory batches vs torchvision MNIST + ToTensor + DataLoader."""

import torch
from report import DATA_DIR, timed, write_section
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from litlab.data import MNISTDataModule

BATCH = 32
THEIRS = "torchvision `MNIST` + `ToTensor` + `Normalize` + `DataLoader`"
OURS = "litlab `MNISTDataModule.train_dataloader()`"
ROWS = (THEIRS, OURS)


def images_per_second(loader, limit: int) -> float:
    seen = 0

    def drain():
        nonlocal seen
        for x, _ in loader:
            seen += len(x)
            if seen >= limit:
                break

    elapsed = timed(drain)
    return seen / elapsed


def main() -> dict:
    torch.manual_seed(0)
    dm = MNISTDataModule(seed=0, data_dir=str(DATA_DIR), batch_size=BATCH)
    dm.prepare_data()  # as Lightning does: says how to fetch missing data
    dm.setup()
    normalize = transforms.Compose(
        [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
    )
    baseline_set = datasets.MNIST(str(DATA_DIR), train=True, transform=normalize)
    baseline = DataLoader(Subset(baseline_set, range(55_000)), batch_size=BATCH, shuffle=True)

    images_per_second(dm.train_dataloader(), 2_000)  # warm-up
    ours = images_per_second(dm.train_dataloader(), 55_000)
    theirs = images_per_second(baseline, 20_000)
    rows = [(THEIRS, theirs, 1.0), (OURS, ours, ours / theirs)]
    table = "| pipeline (batch 32, shuffled, 1 process) | images/s | ratio |\n|---|---:|---:|\n"
    table += "".join(f"| {name} | {rate:,.0f} | {ratio:.1f}x |\n" for name, rate, ratio in rows)
    verdict = "met" if ours / theirs >= 20 else "missed"
    write_section(
        "input_pipeline",
        "MNIST input pipeline",
        f"{table}\nGoal: at least 20x the torchvision pipeline ({verdict}).",
    )
    return {"ratio": ours / theirs}


if __name__ == "__main__":
    main()
