"""Figures of a run: learning curves and a confusion matrix.

Plain matplotlib `Figure`s, outside pyplot: no display and no global state needed, and a
notebook shows one by evaluating it.
"""

import torch


def learning_curves(history: dict[str, dict[int, float]]):
    """One panel per loss or metric, its train and val values per epoch.

    `history` maps a logged name ("train/loss", "val/acc") to its value per epoch.
    """
    from matplotlib.figure import Figure

    names = sorted({key.split("/", 1)[1] for key in history}, key=lambda n: (n != "loss", n))
    panels = max(len(names), 1)
    fig = Figure(figsize=(4.5 * panels, 3.5), layout="tight")
    for ax, name in zip(fig.subplots(1, panels, squeeze=False)[0], names, strict=False):
        for stage, style in (("train", "o-"), ("val", "s--")):
            values = history.get(f"{stage}/{name}", {})
            epochs = sorted(values)
            if epochs:
                ax.plot([e + 1 for e in epochs], [values[e] for e in epochs], style, label=stage)
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def confusion_matrix(counts: torch.Tensor, class_names: list[str]):
    """Counts of true (rows) against predicted (columns) classes, coloured by each row's share."""
    from matplotlib.figure import Figure

    counts = counts.cpu()
    n = len(counts)
    share = counts / counts.sum(dim=1, keepdim=True).clamp(min=1)
    side = max(4.0, 0.55 * n + 2)
    fig = Figure(figsize=(side + 1, side), layout="tight")
    ax = fig.subplots()
    image = ax.imshow(share.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    for i in range(n):
        for j in range(n):
            if counts[i, j]:
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, int(counts[i, j]), ha="center", va="center", color=color, fontsize=8)
    names = [str(name) for name in class_names]
    ax.set_xticks(range(n), names, rotation=45 if max(map(len, names)) > 2 else 0, ha="right")
    ax.set_yticks(range(n), names)
    accuracy = counts.diag().sum().item() / max(counts.sum().item(), 1)
    ax.set(xlabel="predicted", ylabel="true", title=f"test accuracy {accuracy:.4f}")
    return fig
