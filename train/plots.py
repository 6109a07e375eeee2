"""The two pictures of a run: the loss curve and predictions on a few training examples."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from nsa.generate.shards import open_store
from nsa.train.augment import apply_augment
from nsa.train.checkpoint import read_metrics
from nsa.train.data import StoreInfo
from nsa.train.model import NSAModel


def plot_loss(metrics_path: Path, out: Path) -> Path:
    """Loss (log scale) and learning rate against step, from metrics.jsonl."""
    rows = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], label="BCE loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    lr_ax = ax.twinx()
    lr_ax.plot([r["step"] for r in rows], [r["lr"] for r in rows], color="tab:orange",
               alpha=0.6, label="learning rate")
    lr_ax.set_ylabel("learning rate")
    fig.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


@torch.no_grad()
def plot_predictions(model: NSAModel, store: StoreInfo, out: Path, n: int = 4) -> Path:
    """Rows of image | label map | predicted map for the first ``n`` examples of the
    store's first chunk, in the centred view (no random augmentation)."""
    data = open_store(store.path).read_chunk(0)
    n = min(n, len(data.images))
    stacked = torch.from_numpy(
        np.concatenate([data.images[:n], data.masks[:n]], axis=-1).transpose(0, 3, 1, 2).copy()
    )
    view = apply_augment(stacked, store.augment.eval_params(n), store.augment.output_size)
    view = view.float() / 255.0
    c = store.channels
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    maps = torch.sigmoid(model(view[:, :c].to(device))).float().cpu()
    model.train(was_training)
    fig, axes = plt.subplots(n, 3, figsize=(7.5, 2.5 * n), squeeze=False)
    for i in range(n):
        image = view[i, :c].permute(1, 2, 0).numpy()
        panels = [(image.squeeze(-1) if c == 1 else image, "image"),
                  (view[i, c].numpy(), "label"), (maps[i, 0].numpy(), "prediction")]
        for ax, (picture, title) in zip(axes[i], panels, strict=True):
            ax.imshow(picture, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title if i == 0 else "")
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return out
