"""Autoencoders (sec. 3.4): z = f_e(x), x_hat = f_d(z); and variational autoencoders."""

import math

import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

from litlab.errors import LitlabError
from litlab.models.base import STAGES, LitModule
from litlab.models.parts import build, config_hparams
from litlab.settings import Count, NonNegative, PositiveInt, Reconstruction


def reconstruction_loss(
    kind: Reconstruction, logits: torch.Tensor, x: torch.Tensor
) -> torch.Tensor:
    """Per image, summed over pixels: binary cross-entropy on logits, or squared error."""
    if kind == "bce":
        loss = F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    else:
        loss = F.mse_loss(torch.sigmoid(logits), x, reduction="none")
    return loss.flatten(1).sum(dim=1)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per row, in closed form."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=-1)


class Autoencoder(LitModule):
    """A deterministic autoencoder trained on reconstruction alone.

    `encoder` and `decoder` come built or as Hydra configs; a config gets its size filled in
    (`out_features` of the encoder, `latent_dim` of the decoder) from `latent_dim`.
    """

    variational = False
    nets = ("encoder", "decoder")

    def __init__(
        self,
        encoder,
        decoder,
        optimizer,
        scheduler=None,
        latent_dim: PositiveInt = 20,
        recon: Reconstruction = "bce",
        *,
        options: dict | None = None,
        **speed,
    ):
        super().__init__(optimizer, scheduler, **speed)
        self.save_hyperparameters(
            {
                **config_hparams(
                    encoder=encoder, decoder=decoder, optimizer=optimizer, scheduler=scheduler
                ),
                "latent_dim": latent_dim,
                "recon": recon,
                **(options or {}),
            }
        )
        code_size = 2 * latent_dim if self.variational else latent_dim
        self.encoder = build(encoder, out_features=code_size)
        self.decoder = build(decoder, latent_dim=latent_dim)
        for stage in STAGES:
            for name in self.terms(stage):
                self.metrics[f"{stage}_{name}"] = MeanMetric()

    def terms(self, stage: str) -> tuple[str, ...]:
        return ("loss",)

    def check_range(self, x: torch.Tensor) -> None:
        if self.hparams.recon == "bce" and (x.min() < 0 or x.max() > 1):
            raise LitlabError(
                f"model.recon=bce needs pixels in [0, 1] but this batch spans "
                f"[{x.min().item():.2f}, {x.max().item():.2f}]: use data.mean=0 data.std=1, "
                "or model.recon=mse"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Pixel intensities in [0, 1]."""
        return torch.sigmoid(self.decoder(z))

    def losses(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The objective to minimize and the per-image terms to log."""
        recon = reconstruction_loss(self.hparams.recon, self.decoder(self.encode(x)), x)
        return recon.mean(), {"loss": recon}

    def step(self, batch, stage: str) -> torch.Tensor:
        x = batch[0]
        if stage != "train" or self.global_step == 0:  # cheap, and catches bad data early
            self.check_range(x)
        objective, terms = self.losses(x)
        self.tally(stage, len(x), **{name: value.mean() for name, value in terms.items()})
        return objective

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    @torch.no_grad()
    def interpolate(self, x_a: torch.Tensor, x_b: torch.Tensor, steps: int = 8) -> torch.Tensor:
        """Decoded points on the line between two images' codes: [steps, C, H, W]."""
        z_a, z_b = self.encode(x_a[None])[0], self.encode(x_b[None])[0]
        weights = torch.linspace(0, 1, steps, device=z_a.device)[:, None]
        return self.decode(torch.lerp(z_a, z_b, weights))


class VAE(Autoencoder):
    """Variational autoencoder: q(z|x) = N(mu, diag(sigma^2)) by the reparameterization trick,
    prior N(0, I), loss = reconstruction + beta * KL (closed form), per image.

    `kl_warmup_epochs` ramps the KL weight from 0 to `beta` during training; the logged `loss`
    is always the negative ELBO (beta = 1). At test time `log_prob_samples` > 0 also logs an
    importance-sampled estimate of log p(x) with that many samples.
    """

    variational = True

    def __init__(
        self,
        encoder,
        decoder,
        optimizer,
        scheduler=None,
        latent_dim: PositiveInt = 20,
        recon: Reconstruction = "bce",
        beta: NonNegative = 1.0,
        kl_warmup_epochs: Count = 0,
        log_prob_samples: Count = 0,
        **speed,
    ):
        if log_prob_samples > 0 and recon != "bce":
            raise LitlabError("model.log_prob_samples needs model.recon=bce (Bernoulli pixels)")
        options = {
            "beta": beta,
            "kl_warmup_epochs": kl_warmup_epochs,
            "log_prob_samples": log_prob_samples,
        }
        super().__init__(
            encoder, decoder, optimizer, scheduler, latent_dim, recon, options=options, **speed
        )

    def terms(self, stage: str) -> tuple[str, ...]:
        log_prob = stage == "test" and self.hparams.log_prob_samples > 0
        return ("loss", "recon", "kl") + (("log_prob",) if log_prob else ())

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the code used to reconstruct, interpolate and plot."""
        return self.posterior(x)[0]

    def kl_weight(self) -> float:
        warmup = self.hparams.kl_warmup_epochs
        if not self.training or warmup <= 0:
            return self.hparams.beta
        batches = max(self.trainer.num_training_batches, 1)
        progress = self.current_epoch + self.trainer.fit_loop.epoch_loop.batch_idx / batches
        return self.hparams.beta * min(1.0, progress / warmup)

    def losses(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        mu, logvar = self.posterior(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        recon = reconstruction_loss(self.hparams.recon, self.decoder(z), x)
        kl = gaussian_kl(mu, logvar)
        objective = (recon + self.kl_weight() * kl).mean()
        terms = {"loss": recon + kl, "recon": recon, "kl": kl}
        if self.hparams.log_prob_samples > 0 and not self.training and self.trainer.testing:
            terms["log_prob"] = self.log_prob(x, self.hparams.log_prob_samples)
        return objective, terms

    @torch.no_grad()
    def sample(self, n: int) -> torch.Tensor:
        """`n` images decoded from the prior, intensities in [0, 1]."""
        return self.decode(torch.randn(n, self.hparams.latent_dim, device=self.device))

    @torch.no_grad()
    def log_prob(self, x: torch.Tensor, k: int = 100) -> torch.Tensor:
        """log p(x) per image by importance sampling with q(z|x):
        log mean_k p(x|z_k) p(z_k) / q(z_k|x). Pixels are scored as Bernoulli means (BCE)."""
        if self.hparams.recon != "bce":
            raise LitlabError("log_prob needs model.recon=bce (a Bernoulli likelihood)")
        mu, logvar = self.posterior(x)
        std = torch.exp(0.5 * logvar)
        z = mu + std * torch.randn(k, *mu.shape, device=mu.device)  # [k, B, D]
        log_q = torch.distributions.Normal(mu, std).log_prob(z).sum(-1)
        log_prior = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        logits = self.decoder(z.flatten(0, 1)).unflatten(0, (k, len(x)))
        log_px_z = (
            -F.binary_cross_entropy_with_logits(logits, x.expand(k, *x.shape), reduction="none")
            .flatten(2)
            .sum(-1)
        )
        return torch.logsumexp(log_px_z + log_prior - log_q, dim=0) - math.log(k)
