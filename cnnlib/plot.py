"""Figures a reader would rather look at than read: image grids, confusion matrices, mistakes.

Used from chapters/00_introduction (image grids, the confusion matrix) on."""
import math

import matplotlib.pyplot as plt
import torch


BOOK_WIDTH = 6.8   # inches: the book's column is about 680 px wide at matplotlib's 100 dpi


def image_grid(images, titles=None, ncols=6, scale=1.3, cmap="gray", row_titles=None):
    """Show images (N, C, H, W) in a grid, each with an optional title; returns the figure.

    Each image is `scale` inches wide, less if the row would be wider than the book's column,
    so that titles stay readable where the book shows the figure. `row_titles`, one a row,
    are written left of each row, in a margin of their own (a title above the row would
    touch the row before it).
    """
    images = images.detach().cpu().float()
    if images.max() > 1.5:  # uint8 pixels
        images = images / 255
    n = len(images)
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    if row_titles is not None and len(row_titles) != nrows:
        raise ValueError(f"row_titles has {len(row_titles)} entries for {nrows} rows")
    margin = 0.0 if row_titles is None else 0.1 + 0.06 * max(len(str(t)) for t in row_titles)
    size = min(scale, (BOOK_WIDTH - margin) / ncols)
    title_lines = max((str(t).count("\n") + 1 for t in titles), default=0) if titles is not None else 0
    fontsize = 10 if size >= 1.1 else 9
    row_height = size + title_lines * fontsize * 1.5 / 72  # room for the titles above each row
    fig, axes = plt.subplots(nrows, ncols, figsize=(margin + size * ncols, row_height * nrows),
                             squeeze=False)
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
    for ax, label in zip(axes[:, 0], row_titles if row_titles is not None else []):
        ax.text(-0.08, 0.5, str(label), transform=ax.transAxes, ha="right", va="center",
                fontsize=8)
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


# Places tried for a label, in points from its marker: close first, then further out.
_LABEL_OFFSETS = [(dx * r, dy * r) for r in (1, 2, 3, 4, 5) for dx, dy in
                  ((8, 6), (8, -12), (-8, 6), (-8, -12), (0, 12), (0, -18), (12, 0), (-12, 0))]


def label_points(ax, xs, ys, names, fontsize=8):
    """Name each point of a scatter plot, each label joined to its own point by a thin line.

    A label goes to the first place (tried from close to far) where it stays inside the axes and
    overlaps no other label and no marker, where its line crosses no other label, and where no
    other label's line crosses it; with no free place it takes the place with the fewest of
    these faults, and its line still shows whose label it is. Returns the annotations, in the
    order of `names`.
    """
    if not len(xs) == len(ys) == len(names):
        raise ValueError(f"xs, ys and names must have the same length, got {len(xs)}, {len(ys)}, {len(names)}")
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    markers = [ax.transData.transform((x, y)) for x, y in zip(xs, ys)]
    taken, lines, labels = [], [], []
    for x, y, name, marker in zip(xs, ys, names, markers):
        best = None
        for dx, dy in _LABEL_OFFSETS:
            text = ax.annotate(name, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize=fontsize,
                               ha="left" if dx > 0 else "right" if dx < 0 else "center", va="center",
                               arrowprops=dict(arrowstyle="-", lw=0.5, color="0.4", shrinkA=0, shrinkB=3))
            box = text.get_window_extent(renderer).expanded(1.05, 1.15)
            line = (marker, ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2))
            faults = (sum(box.padded(4).contains(*m) for m in markers)
                      + sum(box.overlaps(b) or _crosses(line, b) for b in taken)
                      + sum(_crosses(other, box) for other in lines)
                      + 2 * (not (inside.x0 <= box.x0 and box.x1 <= inside.x1
                                  and inside.y0 <= box.y0 and box.y1 <= inside.y1)))
            if best is None or faults < best[0]:
                if best is not None:
                    best[1].remove()
                best = (faults, text, box, line)
            else:
                text.remove()
            if faults == 0:
                break
        _, text, box, line = best
        taken.append(box)
        lines.append(line)
        labels.append(text)
    return labels


def _crosses(line, box, samples=50):
    """Whether the segment `line` ((x0, y0), (x1, y1)), in display pixels, passes through `box`."""
    (x0, y0), (x1, y1) = line
    return any(box.contains(x0 + (x1 - x0) * t / samples, y0 + (y1 - y0) * t / samples)
               for t in range(samples + 1))
