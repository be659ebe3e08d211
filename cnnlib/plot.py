"""Figures a reader would rather look at than read: image grids, confusion matrices, mistakes.

Used from chapters/00_introduction (image grids, the confusion matrix) on."""
import math

import matplotlib.pyplot as plt
import torch


BOOK_WIDTH = 6.8   # inches: the book's column is about 680 px wide at matplotlib's 100 dpi


def image_grid(images, titles=None, ncols=6, scale=1.3, cmap="gray"):
    """Show images (N, C, H, W) in a grid, each with an optional title; returns the figure.

    Each image is `scale` inches wide, less if the row would be wider than the book's column,
    so that titles stay readable where the book shows the figure.
    """
    images = images.detach().cpu().float()
    if images.max() > 1.5:  # uint8 pixels
        images = images / 255
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    size = min(scale, BOOK_WIDTH / ncols)
    title_lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    fontsize = 10 if size >= 1.1 else 9
    row_height = size + title_lines * fontsize * 1.5 / 72  # room for the titles above each row
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, row_height * nrows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i]
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap=cmap)
        else:
            lo, hi = img.min(), img.max()
            ax.imshow(((img - lo) / (hi - lo + 1e-8)).permute(1, 2, 0))
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=fontsize)
    fig.tight_layout()
    return fig


def confusion_matrix(preds, labels, class_names):
    """Counts of (true class, predicted class) as a k x k tensor."""
    k = len(class_names)
    idx = labels.cpu().long() * k + preds.cpu().long()
    return torch.bincount(idx, minlength=k * k).view(k, k)


def plot_confusion_matrix(preds, labels, class_names, normalize=True):
    """Heat map of the confusion matrix; rows are true classes, columns predictions."""
    cm = confusion_matrix(preds, labels, class_names).float()
    if normalize:
        cm = cm / cm.sum(dim=1, keepdim=True).clamp(min=1)
    fig, ax = plt.subplots(figsize=(5.6, 5))
    im = ax.imshow(cm, cmap="Blues")
    k = len(class_names)
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(k):
        for j in range(k):
            v = cm[i, j].item()
            ax.text(j, i, f"{v:.2f}" if normalize else f"{int(v)}", ha="center", va="center",
                    fontsize=6, color="white" if v > cm.max().item() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    return fig


def misclassified(images, preds, labels, class_names, n=18, ncols=6):
    """A grid of the first n images the model got wrong, titled 'true -> predicted'."""
    wrong = (preds != labels).nonzero().flatten()[:n]
    titles = [f"{class_names[labels[i]]}\n→ {class_names[preds[i]]}" for i in wrong.tolist()]
    return image_grid(images[wrong.cpu()], titles, ncols=ncols)
