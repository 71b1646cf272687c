import json

import numpy as np
import pytest
import torch
from conftest import DATA_DIR, compose, quiet_trainer, run_cli
from hydra.utils import instantiate
from PIL import Image

import litlab
from litlab.errors import LitlabError
from litlab.models import VAE
from litlab.models.autoencoder import gaussian_kl
from litlab.models.transfer import load_pretrained
from litlab.nets import CNN, ConvEncoder, MLPDecoder, MLPEncoder

ADAM = {"_target_": "torch.optim.Adam", "_partial_": True, "lr": 1e-3}


def small_vae(**kwargs) -> VAE:
    return VAE(
        MLPEncoder(out_features=8, hidden=(64,)),
        MLPDecoder(latent_dim=4, hidden=(64,)),
        ADAM,
        latent_dim=4,
        **kwargs,
    )


def test_closed_form_kl_matches_monte_carlo():
    torch.manual_seed(0)
    mu, logvar = torch.randn(3, 5), torch.randn(3, 5) * 0.5
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(0.0, 1.0)
    z = q.sample((200_000,))
    log_ratio = (q.log_prob(z) - p.log_prob(z)).sum(-1)
    estimate, error = log_ratio.mean(0), 4 * log_ratio.std(0) / 200_000**0.5
    assert torch.all((gaussian_kl(mu, logvar) - estimate).abs() < error)


def test_elbo_falls_when_overfitting_a_batch():
    torch.manual_seed(0)
    vae = small_vae()
    x = torch.rand(16, 1, 28, 28).round()
    optimizer = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(300):
        objective, terms = vae.losses(x)
        optimizer.zero_grad()
        objective.backward()
        optimizer.step()
        losses.append(terms["loss"].mean().item())
    assert losses[-1] < 0.5 * losses[0]


def test_sample_reconstruct_interpolate_shapes_and_range():
    vae = small_vae().eval()
    x = torch.rand(5, 1, 28, 28)
    for images, shape in [
        (vae.sample(7), (7, 1, 28, 28)),
        (vae.reconstruct(x), (5, 1, 28, 28)),
        (vae.interpolate(x[0], x[1], steps=6), (6, 1, 28, 28)),
    ]:
        assert images.shape == shape
        assert images.min() >= 0 and images.max() <= 1


def test_importance_sampled_log_likelihood_bounds_the_elbo():
    torch.manual_seed(0)
    vae = small_vae().eval()
    x = torch.rand(8, 1, 28, 28).round()
    elbo = -vae.losses(x)[1]["loss"]
    log_px = vae.log_prob(x, k=500)
    assert torch.all(log_px >= elbo - 1.0)  # log p(x) >= ELBO, up to sampling noise


def test_pictures_are_written_and_not_blank(tmp_path, mnist):
    cfg = compose(
        tmp_path, "experiment=vae_latent2", "debug=limit", "trainer.max_epochs=2", "logger=many"
    )
    litlab.train(cfg)
    pictures = tmp_path / "pictures"
    names = {p.name for p in pictures.glob("*.png")}
    assert {
        "reconstructions_epoch001.png",
        "samples_epoch001.png",
        "latent_scatter.png",
        "latent_manifold.png",
    } <= names
    for name in names:
        pixels = torch.from_numpy(np.asarray(Image.open(pictures / name).convert("L"), np.float32))
        assert pixels.std() > 10, name  # not a flat image
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert {"test/loss", "test/recon", "test/kl"} <= set(metrics)


@pytest.mark.parametrize("experiment", ["vae_mlp", "vae_conv", "ae_mlp"])
def test_fast_dev_run_per_autoencoder(tmp_path, mnist, experiment):
    metrics = litlab.train(compose(tmp_path, f"experiment={experiment}", "debug=fdr"))
    assert metrics["test/loss"] > 0


def test_encoder_weights_transfer_to_the_classifier(tmp_path, mnist):
    cfg = compose(tmp_path, "experiment=vae_conv")
    vae = instantiate(cfg.model)
    trainer = quiet_trainer(fast_dev_run=True, enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.fit(vae, datamodule=instantiate(cfg.data))
    trainer.save_checkpoint(tmp_path / "vae.ckpt")
    net = CNN(channels=(32, 64, 64), pooled_blocks=2)
    copied = load_pretrained(net, tmp_path / "vae.ckpt")
    assert copied and all(k.startswith("features.") for k in copied)
    for (name, a), b in zip(
        net.features.state_dict().items(), vae.encoder.features.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_pretraining_checkpoint_that_does_not_fit(tmp_path):
    encoder = ConvEncoder(channels=(32, 64, 64), out_features=40)
    torch.save(
        {"state_dict": {f"encoder.{k}": v for k, v in encoder.state_dict().items()}},
        tmp_path / "vae.ckpt",
    )
    with pytest.raises(
        LitlabError,
        match=r"features.0.weight is \(32, 1, 3, 3\) there but "
        r"\(16, 1, 3, 3\) here",
    ):
        load_pretrained(CNN(channels=(16, 32)), tmp_path / "vae.ckpt")


def test_vae_pretraining_pipeline_writes_three_runs(tmp_path, mnist):
    cfg = compose(
        tmp_path,
        "experiment=vae_pretrain_cnn",
        "debug=limit",
        "trainer.max_epochs=1",
        "pretrain.max_epochs=1",
        "data.labelled=100",
    )
    metrics = litlab.train(cfg)
    assert {"test/acc", "scratch/test/acc"} <= set(metrics)
    for sub in ("pretrain", "scratch"):
        assert (tmp_path / sub / "metrics.json").is_file()
    config = (tmp_path / "config.yaml").read_text()
    assert f"init_from: {tmp_path}/pretrain/checkpoints/last.ckpt" in config


def test_labelled_subset_is_balanced(mnist):
    from litlab.data import MNISTDataModule

    dm = MNISTDataModule(seed=0, data_dir=str(DATA_DIR), labelled=100)
    dm.setup()
    assert torch.bincount(dm.splits["train"].labels).tolist() == [10] * 10


def test_latent_dim_zero_is_a_clear_error(tmp_path):
    result = run_cli(
        "litlab-train", "experiment=vae_mlp", "model.latent_dim=0", f"hydra.run.dir={tmp_path}"
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and errors == [
        "error: model.latent_dim=0 must be a positive integer"
    ]


def test_bce_on_normalized_data_is_a_clear_error_not_nan(tmp_path, mnist):
    result = run_cli(
        "litlab-train",
        "experiment=vae_mlp",
        "data.mean=0.1307",
        "data.std=0.3081",
        "debug=fdr",
        f"paths.data_dir={DATA_DIR}",
        f"hydra.run.dir={tmp_path}",
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1
    assert "model.recon=bce needs pixels in [0, 1]" in errors[0] and "data.std=1" in errors[0]


def test_labelled_subset_must_split_evenly(mnist):
    from litlab.data import MNISTDataModule

    dm = MNISTDataModule(seed=0, data_dir=str(DATA_DIR), labelled=105)
    with pytest.raises(LitlabError, match="data.labelled=105 must be a multiple of 10"):
        dm.setup()


def test_log_prob_needs_bce():
    with pytest.raises(LitlabError, match="log_prob_samples needs model.recon=bce"):
        small_vae(recon="mse", log_prob_samples=10)
