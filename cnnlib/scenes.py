"""Detection and segmentation scenes composed from MNIST-style images, and PASCAL VOC
(chapter 6: boxes and NMS, the R-CNN family, YOLO, Faster R-CNN and FCN pages).

No detection data set can be downloaded everywhere, so ``make_scenes`` pastes real MNIST or
Fashion-MNIST images onto a blank canvas: a few objects per scene at random scales and
positions, some overlapping, some cut by the border. Everything is exact: the box of an object
is the tight box of its visible ink, its label is the image's class, and the mask gives each
pixel its object's class + 1 (0 is background; where objects overlap, the one pasted last).
The same seed gives the same scenes.

Scenes are held whole as tensors; boxes are a **padded tensor**: ``boxes`` (N, K, 4) in pixels,
corner format (x1, y1, x2, y2), and ``labels`` (N, K) with -1 in the unused slots (K is the
largest object count). ``SceneLoader`` batches them like ``cnnlib.data``'s loaders:

    train_loader, test_loader = scenes.loaders(batch_size=64, train_size=4000, test_size=500)
    for x, target in train_loader: ...
    # x: float (B, 1, 96, 96) in [0, 1]; target: {"boxes": (B, K, 4), "labels": (B, K),
    #                                              "masks": (B, 96, 96) int64}

``SceneLoader(..., augment=[v2.RandomHorizontalFlip()], resize=48)`` moves the boxes and masks
with the pixels (torchvision's ``transforms.v2``). ``to_list(target)`` turns a padded batch into
the list of dicts that torchvision's detectors and torchmetrics' mean average precision take.
``loaders(source="voc")`` reads PASCAL VOC (from ``$CNNLIB_DATA/VOC`` in torchvision's layout,
downloaded when allowed) into the same tensors.
"""
import os
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import config, data
from ._validate import _is_int, positive_int

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
IGNORE = 255  # mask value of pixels no class is scored on (VOC's object outlines)


@dataclass
class Scenes:
    images: torch.Tensor   # uint8 (N, C, H, W)
    boxes: torch.Tensor    # float (N, K, 4), corner format, pixels; padding rows are 0
    labels: torch.Tensor   # int64 (N, K), -1 marks padding
    masks: torch.Tensor    # uint8 (N, H, W): 0 background, class + 1, IGNORE
    classes: tuple

    def __len__(self):
        return len(self.images)

    def target(self, i):
        """The boxes and labels of scene i, without padding."""
        keep = self.labels[i] >= 0
        return {"boxes": self.boxes[i][keep], "labels": self.labels[i][keep]}


# ---- scenes from MNIST-style images ---------------------------------------------------------

def _overlaps_too_much(box, placed, max_overlap):
    """Reject a box whose intersection covers more than max_overlap of either box's area."""
    for other in placed:
        w = min(box[2], other[2]) - max(box[0], other[0])
        h = min(box[3], other[3]) - max(box[1], other[1])
        if w > 0 and h > 0:
            inter = w * h
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
            if inter > max_overlap * smaller:
                return True
    return False


def _glyph(image, side):
    """A 28x28 uint8 image resized to side x side, as float in [0, 1]."""
    x = image.float().div(255)[None, None]
    return F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)[0, 0]


def _compose(sources, source_labels, size, count, scale, max_overlap, border, g):
    """One scene: (canvas (size, size), boxes [[x1, y1, x2, y2]], labels [c], mask)."""
    canvas = torch.zeros(size, size)
    mask = torch.zeros(size, size, dtype=torch.uint8)
    boxes, labels = [], []
    for _ in range(count):
        for _attempt in range(20):
            i = int(torch.randint(len(sources), (1,), generator=g))
            side = int(torch.randint(scale[0], scale[1] + 1, (1,), generator=g))
            lo, hi = -int(border * side), size - side + int(border * side)
            x0, y0 = (int(v) for v in torch.randint(lo, hi + 1, (2,), generator=g))
            glyph = _glyph(sources[i], side)
            # the part of the glyph that lands on the canvas
            gx0, gy0 = max(0, -x0), max(0, -y0)
            gx1, gy1 = min(side, size - x0), min(side, size - y0)
            piece = glyph[gy0:gy1, gx0:gx1]
            ink = piece > 0.3
            if ink.sum() < 8:
                continue
            rows, cols = ink.any(1).nonzero()[:, 0], ink.any(0).nonzero()[:, 0]
            box = [x0 + gx0 + int(cols[0]), y0 + gy0 + int(rows[0]),
                   x0 + gx0 + int(cols[-1]) + 1, y0 + gy0 + int(rows[-1]) + 1]
            if _overlaps_too_much(box, boxes, max_overlap):
                continue
            region = (slice(y0 + gy0, y0 + gy1), slice(x0 + gx0, x0 + gx1))
            canvas[region] = torch.maximum(canvas[region], piece)
            mask[region][ink] = int(source_labels[i]) + 1
            boxes.append(box)
            labels.append(int(source_labels[i]))
            break
    # an object partly hidden by a later one keeps only its visible pixels in the mask; its box
    # stays the box of all its ink on the canvas (as a person would draw it around the digit)
    return canvas, boxes, labels, mask


_SCENE_CLASSES = {"MNIST": data.MNIST_CLASSES, "FashionMNIST": data.FASHION_MNIST_CLASSES}


def _is_range(v, low, high):
    """v is (min, max), two integers with low <= min <= max <= high."""
    return (isinstance(v, (tuple, list)) and len(v) == 2 and all(_is_int(x) for x in v)
            and low <= v[0] <= v[1] <= high)


def _check_scene_arguments(n, source, size, objects, scale, max_overlap, border):
    """The canonical source name; ValueError for anything no scene can be made of."""
    name = data.canonical_name(source)
    if name not in _SCENE_CLASSES:
        raise ValueError(f"source must be MNIST or FashionMNIST (28x28 grey images, any case), got {source!r}")
    if not _is_int(n) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    positive_int("size", size)
    if not _is_range(objects, 0, float("inf")):
        raise ValueError(f"objects must be (min, max) with 0 <= min <= max, got {objects!r}")
    if not _is_range(scale, 1, size):
        raise ValueError(f"scale must be (min, max) with 1 <= min <= max <= size ({size}), got {scale!r}")
    if not 0 <= border < 1:
        raise ValueError(f"border must be in [0, 1), got {border!r}")
    if not 0 <= max_overlap <= 1:
        raise ValueError(f"max_overlap must be in [0, 1], got {max_overlap!r}")
    return name


def make_scenes(n, source="MNIST", train=True, *, size=96, objects=(1, 4), scale=(20, 40),
                max_overlap=0.35, border=0.2, seed=0, root=None):
    """n scenes of size x size pixels, each with objects[0]..objects[1] objects, each a
    source image (MNIST or FashionMNIST in any case, from the train or test split) scaled to a
    square of scale[0]..scale[1] pixels, allowed to reach beyond the border by `border` of its
    side and to cover at most max_overlap of another object's box. Deterministic for a given
    seed. An object that finds no place in 20 tries is left out; if a scene then holds fewer
    than objects[0], one warning says how many scenes did (the scenes are still returned)."""
    name = _check_scene_arguments(n, source, size, objects, scale, max_overlap, border)
    images, image_labels = data.load(name, train, root)
    g = torch.Generator().manual_seed(seed)
    k = objects[1]
    out_images = torch.zeros(n, 1, size, size, dtype=torch.uint8)
    out_boxes = torch.zeros(n, k, 4)
    out_labels = torch.full((n, k), -1, dtype=torch.int64)
    out_masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for s in range(n):
        count = int(torch.randint(objects[0], objects[1] + 1, (1,), generator=g))
        canvas, boxes, labels, mask = _compose(images[:, 0], image_labels, size, count, scale,
                                               max_overlap, border, g)
        out_images[s, 0] = (canvas * 255).round().to(torch.uint8)
        out_masks[s] = mask
        if boxes:
            out_boxes[s, :len(boxes)] = torch.tensor(boxes, dtype=torch.float32)
            out_labels[s, :len(labels)] = torch.tensor(labels)
    _warn_if_short(out_labels, objects[0])
    return Scenes(out_images, out_boxes, out_labels, out_masks, _SCENE_CLASSES[name])


def _warn_if_short(labels, least):
    counts = (labels >= 0).sum(1)
    short = int((counts < least).sum())
    if short:
        warnings.warn(f"make_scenes: {short} of {len(labels)} scenes hold fewer than objects[0]={least} "
                      f"objects (as few as {int(counts.min())}): no room for more in 20 tries each; "
                      f"use fewer or smaller objects, or a larger size", stacklevel=3)


# ---- PASCAL VOC into the same tensors -------------------------------------------------------

def _corrupt(path, what):
    return data.DatasetCorruptError(f"{path}: {what}")


def _voc_tree(annotation):
    """The parsed annotation; a file that is not XML names itself and the parser's line."""
    try:
        return ET.parse(annotation).getroot()
    except ET.ParseError as err:
        line, column = err.position
        raise data.DatasetCorruptError(f"{annotation} is not valid XML (line {line}, column {column}): "
                                       f"{err}") from err


def _voc_object(obj, k, annotation, classes):
    """(box [x1, y1, x2, y2] in pixels from 0, label) of the k-th <object> (from 1)."""
    name = obj.findtext("name")
    if name is None:
        raise _corrupt(annotation, f"<object> {k} has no <name>")
    name = name.strip()
    if name not in classes:
        raise _corrupt(annotation, f"<object> {k} is of class {name!r}, not one of the {len(classes)} VOC "
                                   f"classes ({', '.join(classes)})")
    bb = obj.find("bndbox")
    if bb is None:
        raise _corrupt(annotation, f"<object> {k} ({name!r}) has no <bndbox>")
    coords = []
    for tag in ("xmin", "ymin", "xmax", "ymax"):
        text = bb.findtext(tag)
        if text is None:
            raise _corrupt(annotation, f"<object> {k} ({name!r}) has no <{tag}> in its <bndbox>")
        try:
            coords.append(float(text))
        except ValueError:
            raise _corrupt(annotation, f"<object> {k} ({name!r}): <{tag}> is {text.strip()!r}, not a number") from None
    x1, y1, x2, y2 = coords
    # VOC counts pixels from 1 and includes the last one: (xmin - 1, ymin - 1, xmax, ymax)
    return [x1 - 1, y1 - 1, x2, y2], classes.index(name)


def _voc_objects(annotation, classes):
    boxes, labels = [], []
    for k, obj in enumerate(_voc_tree(annotation).iter("object"), start=1):
        box, label = _voc_object(obj, k, annotation, classes)
        boxes.append(box)
        labels.append(label)
    return boxes, labels


def _fit_to_image(boxes, labels, width, height):
    """Clip boxes to the image and drop those left with no area (inverted, or wholly outside):
    (boxes (n, 4), labels (n,), number clipped, number dropped)."""
    b = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    clipped = torch.stack([b[:, 0].clamp(0, width), b[:, 1].clamp(0, height),
                           b[:, 2].clamp(0, width), b[:, 3].clamp(0, height)], dim=1)
    keep = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    n_clipped = int(((clipped != b).any(1) & keep).sum())
    return clipped[keep], torch.tensor(labels, dtype=torch.int64)[keep], n_clipped, int((~keep).sum())


def _check_voc_image_path(path, image_dir, root, split_file):
    """An id of ImageSets must name a file in JPEGImages: no '/', no '..', no link outside root."""
    path = Path(path)
    image_id = os.path.relpath(path, image_dir)[:-len(".jpg")]
    if path.parent != image_dir:
        raise _corrupt(split_file, f"the image id {image_id!r} is not a plain file name in {image_dir}; "
                                   f"refusing to read {path}")
    if not path.resolve().is_relative_to(root.resolve()):
        raise _corrupt(split_file, f"the image id {image_id!r} leads to {path.resolve()}, outside {root}; "
                                   f"refusing to read it")


def _read_image(path, mode=None):
    """A PIL image, converted to mode; a file that is there but unreadable names itself."""
    from PIL import Image
    try:
        image = Image.open(path)
        return image.convert(mode) if mode else image.copy()
    except FileNotFoundError:
        raise
    except (OSError, SyntaxError) as err:  # truncated, not an image at all
        raise data.DatasetCorruptError(f"{path} cannot be read as an image: {err}") from err


def _check_limit(limit):
    if limit is not None and (not _is_int(limit) or limit < 0):
        raise ValueError(f"limit must be None or a non-negative integer, got {limit!r}")


def _warn_about_boxes(n_clipped, n_dropped, first_dropped):
    if n_dropped or n_clipped:
        dropped = (f"{n_dropped} {'box' if n_dropped == 1 else 'boxes'} dropped (inverted, or no area inside "
                   f"the image; the first in {first_dropped})") if n_dropped else "no box dropped"
        warnings.warn(f"voc_scenes: {dropped}; {n_clipped} {'box' if n_clipped == 1 else 'boxes'} clipped "
                      f"to its image", stacklevel=3)


def voc_scenes(root=None, year="2012", image_set="train", *, size=224, segmentation=False,
               download=None, limit=None):
    """PASCAL VOC images resized (warped) to size x size, with boxes and labels from the
    annotations and, if segmentation, masks from SegmentationClass (0 background, class + 1,
    IGNORE on object outlines; images without a mask come only from the segmentation list).
    torchvision's VOCDetection / VOCSegmentation find (or download) the files; limit takes the
    first `limit` images of the image set.

    The files are not trusted: an image id must name a file inside the root; a broken
    annotation or image raises DatasetCorruptError naming the file (and the line, for XML);
    boxes are clipped to their image and those left with no area dropped, with one warning."""
    import torchvision
    from PIL import Image

    _check_limit(limit)
    root = Path(root or Path(config.data_root()) / "VOC")
    download = config.download_allowed() if download is None else download
    kind = torchvision.datasets.VOCSegmentation if segmentation else torchvision.datasets.VOCDetection
    try:
        ds = kind(str(root), year=year, image_set=image_set, download=download)
    except RuntimeError as err:
        raise data.DatasetNotFoundError(
            f"PASCAL VOC {year} is not under {root}/VOCdevkit/VOC{year} ({err}); allow downloads "
            f"(CNNLIB_DOWNLOAD=1) or put the VOCtrainval tar's contents there.") from err
    voc_root = Path(ds.root) / torchvision.datasets.voc.DATASET_YEAR_DICT[year]["base_dir"]
    split_file = voc_root / "ImageSets" / ("Segmentation" if segmentation else "Main") / f"{image_set}.txt"
    names = ds.images if limit is None else ds.images[:limit]
    for path in names:
        _check_voc_image_path(path, voc_root / "JPEGImages", root, split_file)
    annotations = [voc_root / "Annotations" / (Path(p).stem + ".xml") for p in names]
    parsed = [_voc_objects(a, VOC_CLASSES) for a in annotations]
    n = len(names)
    images = torch.zeros(n, 3, size, size, dtype=torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    fitted, n_clipped, n_dropped, first_dropped = [], 0, 0, None
    for i, (path, (b, c)) in enumerate(zip(names, parsed)):
        image = _read_image(path, "RGB")
        b, c, clipped, dropped = _fit_to_image(b, c, image.width, image.height)
        n_clipped, n_dropped = n_clipped + clipped, n_dropped + dropped
        first_dropped = first_dropped or (annotations[i] if dropped else None)
        sx, sy = size / image.width, size / image.height
        fitted.append((b * torch.tensor([sx, sy, sx, sy]), c))
        images[i] = torch.from_numpy(np.array(image.resize((size, size), Image.BILINEAR))).permute(2, 0, 1)
        if segmentation:
            m = torch.from_numpy(np.array(_read_image(ds.masks[i]).resize((size, size), Image.NEAREST)))
            masks[i] = torch.where(m == IGNORE, m, m.clamp(max=len(VOC_CLASSES)))
    _warn_about_boxes(n_clipped, n_dropped, first_dropped)
    k = max([len(c) for _, c in fitted] + [1])
    boxes, labels = torch.zeros(n, k, 4), torch.full((n, k), -1, dtype=torch.int64)
    for i, (b, c) in enumerate(fitted):
        boxes[i, :len(c)], labels[i, :len(c)] = b, c
    return Scenes(images, boxes, labels, masks, VOC_CLASSES)


# ---- batches --------------------------------------------------------------------------------

def pixels_only(augment):
    """Mark a batch augmentation (x, generator) -> x that changes pixel values only (noise,
    brightness), never where they are, so that SceneLoader may use it: boxes and masks stay."""
    def changed(x, generator):
        return augment(x, generator)
    changed.pixels_only = True
    changed.__qualname__ = f"pixels_only({getattr(augment, '__qualname__', augment)})"
    return changed


def _check_scene_augment(augment):
    """v2 transforms (they move boxes and masks too) or functions marked pixels_only."""
    from torchvision.transforms import v2
    for aug in augment:
        if not (isinstance(aug, v2.Transform) or getattr(aug, "pixels_only", False)):
            name = getattr(aug, "__qualname__", repr(aug))
            raise ValueError(
                f"SceneLoader's augment= got {name}, a batch function that may move pixels but cannot move "
                f"boxes or masks with them. Pass torchvision.transforms.v2 transforms, which move all three "
                f"(v2.RandomHorizontalFlip() for data.random_flip, v2.RandomCrop or v2.RandomAffine for "
                f"random_crop / random_affine), or wrap a function that changes pixel values only as "
                f"scenes.pixels_only(fn).")
    return tuple(augment)


def _resize_batch(x, target, size):
    """Images bilinear (as TensorLoader), masks nearest, boxes scaled: all to `size`."""
    h, w = x.shape[-2:]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    new_h, new_w = x.shape[-2:]
    masks = F.interpolate(target["masks"][:, None].float(), size=size, mode="nearest-exact")[:, 0]
    scale = torch.tensor([new_w / w, new_h / h, new_w / w, new_h / h], device=x.device)
    return x, {**target, "boxes": target["boxes"] * scale, "masks": masks.to(target["masks"].dtype)}


def _transform_one(transform, image, boxes, labels, mask):
    """One image, its boxes (padded to K) and mask through a v2 transform; boxes left with no
    area are dropped, the rest come first again, then padding."""
    from torchvision import tv_tensors
    real = labels >= 0
    b = tv_tensors.BoundingBoxes(boxes[real], format="XYXY", canvas_size=tuple(image.shape[-2:]))
    image, b, mask = transform(tv_tensors.Image(image), b, tv_tensors.Mask(mask))
    b = b.as_subclass(torch.Tensor)
    kept = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    out_boxes, out_labels = torch.zeros_like(boxes), torch.full_like(labels, -1)
    out_boxes[:int(kept.sum())], out_labels[:int(kept.sum())] = b[kept], labels[real][kept]
    return image.as_subclass(torch.Tensor), out_boxes, out_labels, mask.as_subclass(torch.Tensor)


def _transform_batch(transform, x, target):
    parts = [_transform_one(transform, *one) for one in zip(x, target["boxes"], target["labels"], target["masks"])]
    images, boxes, labels, masks = (torch.stack(p) for p in zip(*parts))
    return images, {**target, "boxes": boxes, "labels": labels, "masks": masks}


class SceneLoader(data.TensorLoader):
    """Batches (images, {"boxes", "labels", "masks"}) of Scenes, shuffled like TensorLoader.

    resize= scales the boxes and resizes the masks (nearest) with the images. augment= takes
    torchvision.transforms.v2 transforms, applied to each image with its boxes
    (tv_tensors.BoundingBoxes) and mask (tv_tensors.Mask), so a flip or crop moves all three;
    boxes left with no area are dropped. Their random draws depend on (seed, epoch) only.
    A plain batch function (x, generator) cannot move boxes, so it is refused unless marked
    pixels_only(fn). normalize= comes last. Without these the scenes pass unchanged."""

    def __init__(self, scenes, batch_size, *, augment=(), **kwargs):
        super().__init__(scenes.images, torch.arange(len(scenes)), batch_size,
                         augment=_check_scene_augment(augment), **kwargs)
        self.scenes = scenes
        self.targets = {"boxes": scenes.boxes.to(self.device), "labels": scenes.labels.to(self.device),
                        "masks": scenes.masks.to(self.device)}

    def prepare(self, images, generator=None):
        """Only to float in [0, 1]: resize, augment and normalize need the targets (__iter__)."""
        return images.float().div_(255) if images.dtype == torch.uint8 else images.float()

    def __iter__(self):
        seeds = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch + 1)
        g = torch.Generator(device=self.device).manual_seed(self.seed * 100_003 + self.epoch + 1)
        for x, index in super().__iter__():
            target = {k: v[index] for k, v in self.targets.items()}
            if self.resize:
                x, target = _resize_batch(x, target, self.resize)
            if self.augment:
                x, target = self._augment(x, target, int(torch.randint(2**62, (1,), generator=seeds)), g)
            if self.mean is not None:
                x = (x - self.mean) / self.std
            yield x, {**target, "masks": target["masks"].long()}

    def _augment(self, x, target, seed, g):
        with torch.random.fork_rng(devices=[]):  # v2 transforms draw from the global generator
            torch.manual_seed(seed)
            for aug in self.augment:
                if getattr(aug, "pixels_only", False):
                    x = aug(x, g)
                else:
                    x, target = _transform_batch(aug, x, target)
        return x, target


def to_list(target):
    """A padded batch of targets -> [{"boxes": (n_i, 4), "labels": (n_i,)}] per image."""
    out = []
    for boxes, labels in zip(target["boxes"], target["labels"]):
        keep = labels >= 0
        out.append({"boxes": boxes[keep], "labels": labels[keep]})
    return out


def loaders(batch_size=64, *, train_size=4000, test_size=500, source="MNIST", device=None,
            seed=0, eval_batch_size=256, **scene_kwargs):
    """(train_loader, test_loader) of scenes; source "MNIST", "FashionMNIST" or "voc".

    MNIST-style scenes: training scenes are composed from the training split, test scenes from
    the test split (other seeds), scene_kwargs go to make_scenes. VOC: "train" and "val" image
    sets, scene_kwargs go to voc_scenes (size=..., segmentation=...)."""
    if source.lower() == "voc":
        train = voc_scenes(image_set="train", limit=train_size, **scene_kwargs)
        test = voc_scenes(image_set="val", limit=test_size, **scene_kwargs)
    else:
        train = make_scenes(train_size, source, True, seed=seed, **scene_kwargs)
        test = make_scenes(test_size, source, False, seed=seed + 1, **scene_kwargs)
    return (SceneLoader(train, batch_size, shuffle=True, drop_last=True, device=device, seed=seed),
            SceneLoader(test, max(batch_size, eval_batch_size), device=device, seed=seed))


def mask_colour(k, num_classes=None):
    """The RGB colour draw() gives mask value k (class k - 1): tab10's ten distinct colours when
    the mask has at most 10 classes besides the background (num_classes counts it), else tab20's."""
    import matplotlib
    classes = (num_classes or 11) - 1
    colours = matplotlib.colormaps["tab10" if classes <= 10 else "tab20"].colors
    return colours[(int(k) - 1) % len(colours)]


def mask_legend(fig, classes, num_classes=None, **kwargs):
    """A legend below a figure of masks: one swatch per class, in draw()'s colours."""
    from matplotlib.patches import Patch
    handles = [Patch(color=mask_colour(k + 1, num_classes or len(classes) + 1), alpha=0.55, label=str(name))
               for k, name in enumerate(classes)]
    kwargs = {"loc": "lower center", "ncol": min(len(handles), 10), "fontsize": 7, "frameon": False,
              "handlelength": 1.2, "columnspacing": 0.8, **kwargs}
    return fig.legend(handles=handles, **kwargs)


@torch.no_grad()
def collect_detections(model, loader, decode):
    """Run a detector over a scene loader: (predictions, truths, images), one dict per image
    ({"boxes", "scores", "labels"} and {"boxes", "labels"}, on the CPU, padding removed), as
    torchmetrics' MeanAveragePrecision and boxes.mean_average_precision take them.

    decode(model, images) -> one prediction dict per image: the detector's own read-out
    (yolo.decode after the forward pass, or models.rcnn.detections)."""
    model.eval()
    predictions, truths, images = [], [], []
    for x, target in loader:
        predictions += [{k: v.cpu() for k, v in p.items()} for p in decode(model, x)]
        truths += [{k: v.cpu() for k, v in t.items()} for t in to_list(target)]
        images.append(x.cpu())
    return predictions, truths, torch.cat(images)


# ---- drawing --------------------------------------------------------------------------------

def draw(ax, image, boxes=(), labels=None, scores=None, classes=None, color="lime", mask=None,
         num_classes=None, title=None, text_below=False):
    """Show one image (C, H, W) on a matplotlib axis with boxes (corner format) and their
    labels / scores, and optionally a mask (H, W) overlaid in colour (0 transparent).

    imshow centres pixel i on the coordinate i, so a box edge at x (the left edge of pixel x) is
    drawn at x - 0.5. Labels sit above each box, or below it with text_below=True (for a second
    set of boxes drawn over the first, such as the truth under the detections)."""
    import matplotlib.patches as patches

    image = image.detach().cpu().float()
    image = image / 255 if image.max() > 1 else image
    ax.imshow(image.permute(1, 2, 0).squeeze(-1), cmap="gray", vmin=0, vmax=1)
    if mask is not None:
        mask = mask.detach().cpu().long()
        overlay = np.zeros((*mask.shape, 4))
        for k in mask.unique().tolist():
            if k not in (0, IGNORE):
                overlay[mask.numpy() == k] = (*mask_colour(k, num_classes or int(mask.max()) + 1), 0.55)
        ax.imshow(overlay, interpolation="nearest")
    for k, box in enumerate(torch.as_tensor(boxes).detach().cpu().tolist()):
        x1, y1, x2, y2 = (v - 0.5 for v in box)
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=color, lw=1.3))
        text = ""
        if labels is not None:
            c = int(labels[k])
            text = classes[c] if classes else str(c)
        if scores is not None:
            text += f" {float(scores[k]):.2f}"
        if text:
            ax.text(x1, y2 if text_below else y1, text.strip(), color="black", fontsize=7,
                    va="top" if text_below else "bottom",
                    bbox=dict(facecolor=color, alpha=0.8, pad=0.5, edgecolor="none"))
    ax.set_xticks([]), ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=9)
    return ax
