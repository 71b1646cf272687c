"""Copy a pretrained encoder's trunk into a classifier net (the article's sec. 2: a VAE can
pretrain a CNN)."""

from pathlib import Path

from torch import nn

from litlab.errors import LitlabError
from litlab.run.checkpoints import load_checkpoint

SOURCE, TARGET = "encoder.features.", "features."


def load_pretrained(net: nn.Module, ckpt_path: str | Path) -> list[str]:
    """Load `encoder.features.*` of a checkpoint into `net.features`; returns the keys copied."""
    state = load_checkpoint(ckpt_path)["state_dict"]
    trunk = {k[len(SOURCE) :]: v for k, v in state.items() if k.startswith(SOURCE)}
    features = getattr(net, "features", None)
    if not trunk or features is None:
        raise LitlabError(
            f"{ckpt_path} has no convolutional encoder trunk ({SOURCE}*) for "
            f"{type(net).__name__}.features; pretrain with model=vae_conv"
        )
    expected = features.state_dict()
    for key, value in expected.items():
        if key not in trunk or trunk[key].shape != value.shape:
            there = tuple(trunk[key].shape) if key in trunk else "missing"
            raise LitlabError(
                f"the pretraining checkpoint's encoder does not fit the classifier: "
                f"{TARGET}{key} is {there} there but {tuple(value.shape)} here; give both the "
                "same channels, kernel_size and pooling"
            )
    features.load_state_dict({k: trunk[k] for k in expected})
    return [TARGET + k for k in expected]
