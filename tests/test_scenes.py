"""cnnlib.scenes: determinism, boxes consistent with masks, batches, and the VOC reader."""
import numpy as np
import pytest
import torch
from PIL import Image

from cnnlib import data, scenes


@pytest.fixture(scope="module")
def small():
    try:
        return scenes.make_scenes(40, seed=3)
    except data.DatasetNotFoundError:
        pytest.skip("MNIST is not on this machine")


def test_same_seed_same_scenes(small):
    again = scenes.make_scenes(40, seed=3)
    for name in ("images", "boxes", "labels", "masks"):
        assert torch.equal(getattr(small, name), getattr(again, name))
    other = scenes.make_scenes(40, seed=4)
    assert not torch.equal(small.images, other.images)


def test_shapes_and_padding(small):
    assert small.images.shape == (40, 1, 96, 96) and small.images.dtype == torch.uint8
    assert small.boxes.shape == (40, 4, 4) and small.labels.shape == (40, 4)
    counts = (small.labels >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() <= 4 and counts.float().std() > 0
    for i in range(40):  # the objects come first, then padding
        n = int(counts[i])
        assert (small.labels[i, n:] == -1).all() and (small.boxes[i, n:] == 0).all()


def test_boxes_agree_with_masks_and_ink(small):
    saw_border = False
    for i in range(len(small)):
        t = small.target(i)
        b = t["boxes"]
        assert (b[:, 2:] > b[:, :2]).all() and ((b >= 0) & (b <= 96)).all()
        saw_border |= bool((b == 0).any() or (b == 96).any())
        inside_some_box = torch.zeros(96, 96, dtype=torch.bool)
        for (x1, y1, x2, y2), c in zip(b.long().tolist(), t["labels"].tolist()):
            region = small.masks[i, y1:y2, x1:x2]
            assert (region == c + 1).any()          # each object has pixels of its class
            inside_some_box[y1:y2, x1:x2] = True
            # the tight box: ink on each of its four edges
            ink = small.images[i, 0, y1:y2, x1:x2] > 0
            assert ink[0].any() and ink[-1].any() and ink[:, 0].any() and ink[:, -1].any()
        mask = small.masks[i]
        assert not ((mask > 0) & ~inside_some_box).any()  # no labelled pixel outside every box
        assert set(mask.unique().tolist()) <= {0} | {c + 1 for c in t["labels"].tolist()}
    assert saw_border


def test_loader_batches_dict_targets(small):
    loader = scenes.SceneLoader(small, 16, shuffle=True, drop_last=True, device="cpu")
    batches = list(loader)
    assert len(batches) == len(loader) == 2
    x, t = batches[0]
    assert x.shape == (16, 1, 96, 96) and x.dtype == torch.float32 and x.max() <= 1
    assert t["boxes"].shape == (16, 4, 4) and t["masks"].shape == (16, 96, 96)
    assert t["masks"].dtype == torch.int64
    # the targets travel with their images
    i = int((small.images.flatten(1).float() == (x[0].flatten() * 255).round()).all(1).nonzero()[0])
    assert torch.equal(t["boxes"][0], small.boxes[i]) and torch.equal(t["masks"][0], small.masks[i].long())
    listed = scenes.to_list(t)
    assert len(listed) == 16 and len(listed[0]["boxes"]) == int((small.labels[i] >= 0).sum())


def write_fake_voc(root, ids=("2008_000001", "2008_000002", "2008_000003")):
    base = root / "VOCdevkit" / "VOC2012"
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationClass"):
        (base / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for n, name in enumerate(ids):
        w, h = 120 + 10 * n, 80
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(base / "JPEGImages" / f"{name}.jpg")
        objects = "".join(
            f"<object><name>{cls}</name><bndbox><xmin>{x1}</xmin><ymin>{y1}</ymin>"
            f"<xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
            for cls, (x1, y1, x2, y2) in [("dog", (11, 21, 60, 70)), ("person", (61, 1, w, 40))][: n + 1])
        (base / "Annotations" / f"{name}.xml").write_text(
            f"<annotation><filename>{name}.jpg</filename><size><width>{w}</width>"
            f"<height>{h}</height><depth>3</depth></size>{objects}</annotation>")
        mask = np.zeros((h, w), dtype=np.uint8)
        mask[20:70, 10:60] = 12       # dog is class 11, + 1
        mask[19, 10:60] = 255         # an outline pixel row
        m = Image.fromarray(mask, mode="P")
        m.putpalette([0, 0, 0] * 256)
        m.save(base / "SegmentationClass" / f"{name}.png")
    for split in ("Main", "Segmentation"):
        (base / "ImageSets" / split / "train.txt").write_text("\n".join(ids[:2]) + "\n")
        (base / "ImageSets" / split / "val.txt").write_text(ids[2] + "\n")


def test_voc_layout_reader(tmp_path, monkeypatch):
    write_fake_voc(tmp_path / "VOC")
    monkeypatch.setenv("CNNLIB_DATA", str(tmp_path))
    s = scenes.voc_scenes(image_set="train", size=60, segmentation=True, download=False)
    assert s.images.shape == (2, 3, 60, 60) and s.classes == scenes.VOC_CLASSES
    assert s.labels.tolist() == [[11, -1], [11, 14]]
    # VOC's 1-based inclusive (11, 21, 60, 70) on a 120x80 image is (10, 20, 60, 70), scaled by 0.5, 0.75
    assert torch.allclose(s.boxes[0, 0], torch.tensor([5.0, 15.0, 30.0, 52.5]))
    assert set(s.masks[0].unique().tolist()) == {0, 12, scenes.IGNORE}
    train, test = scenes.loaders(2, source="voc", size=60, segmentation=True, device="cpu")
    x, t = next(iter(train))
    assert x.shape == (2, 3, 60, 60) and t["masks"].shape == (2, 60, 60)
    assert len(test.scenes) == 1 and scenes.to_list(next(iter(test))[1])[0]["labels"].tolist() == [11, 14]


def test_voc_missing_says_where(tmp_path):
    with pytest.raises(data.DatasetNotFoundError, match="VOC"):
        scenes.voc_scenes(tmp_path, download=False)


def test_some_objects_overlap_and_sizes_vary(small):
    from cnnlib import boxes
    overlapping = 0
    for i in range(len(small)):
        b = small.target(i)["boxes"]
        iou = boxes.box_iou(b, b).fill_diagonal_(0)
        overlapping += int((iou > 0).any())
    assert overlapping >= 2
    real = small.boxes[small.labels >= 0]
    heights = real[:, 3] - real[:, 1]
    assert heights.min() < 20 and heights.max() > 26  # a 20-40 px square holds a digit about 0.7 as tall


# ---- the VOC reader on hostile or broken files (each case failed before its fix) ------------

def fake_voc(tmp_path, monkeypatch):
    write_fake_voc(tmp_path / "VOC")
    monkeypatch.setenv("CNNLIB_DATA", str(tmp_path))
    return tmp_path / "VOC" / "VOCdevkit" / "VOC2012"


def set_train_ids(base, *ids):
    (base / "ImageSets" / "Main" / "train.txt").write_text("\n".join(ids) + "\n")


def write_annotation(base, name, objects, w=120, h=80):
    (base / "Annotations" / f"{name}.xml").write_text(
        f"<annotation><size><width>{w}</width><height>{h}</height></size>{objects}</annotation>")


def voc_object(cls="dog", box=("11", "21", "60", "70")):
    coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
    return f"<object><name>{cls}</name><bndbox>{coords}</bndbox></object>"


def read(**kwargs):
    return scenes.voc_scenes(image_set="train", size=60, download=False, **kwargs)


def test_voc_refuses_image_ids_that_leave_the_root(tmp_path, monkeypatch):
    base = fake_voc(tmp_path, monkeypatch)
    elsewhere = tmp_path / "elsewhere"  # ../../../../elsewhere/x/secret from JPEGImages
    (elsewhere / "x").mkdir(parents=True), (elsewhere / "Annotations").mkdir()
    Image.new("RGB", (32, 32)).save(elsewhere / "x" / "secret.jpg")
    (elsewhere / "Annotations" / "secret.xml").write_text(f"<annotation>{voc_object('cat')}</annotation>")
    set_train_ids(base, "2008_000001", "../../../../elsewhere/x/secret")
    with pytest.raises(data.DatasetCorruptError, match=r"train\.txt.*'\.\./\.\./\.\./\.\./elsewhere/x/secret'"):
        read()
    # a sub-folder, and a file linked to outside the root, are refused too
    (base / "JPEGImages" / "sub").mkdir()
    Image.new("RGB", (32, 32)).save(base / "JPEGImages" / "sub" / "2008_000001.jpg")
    set_train_ids(base, "sub/2008_000001")
    with pytest.raises(data.DatasetCorruptError, match="'sub/2008_000001'"):
        read()
    (base / "JPEGImages" / "linked.jpg").symlink_to(elsewhere / "x" / "secret.jpg")
    write_annotation(base, "linked", voc_object())
    set_train_ids(base, "linked")
    with pytest.raises(data.DatasetCorruptError, match=r"'linked'.*outside"):
        read()


@pytest.mark.parametrize("text,expected", [
    ("", r"2008_000002\.xml is not valid XML \(line 1, column 0\)"),
    ("<annotation><object><name>dog</name>\n<bndbox><xmin>1</xmin>",
     r"2008_000002\.xml is not valid XML \(line 2, column \d+\)"),
])
def test_voc_broken_annotation_names_the_file_and_line(tmp_path, monkeypatch, text, expected):
    base = fake_voc(tmp_path, monkeypatch)
    (base / "Annotations" / "2008_000002.xml").write_text(text)
    with pytest.raises(data.DatasetCorruptError, match=expected):
        read()


@pytest.mark.parametrize("obj,expected", [
    (voc_object("dgo"), r"2008_000002\.xml: <object> 2 is of class 'dgo', not one of the 20 VOC classes"),
    ("<object><name>dog</name></object>", r"2008_000002\.xml: <object> 2 \('dog'\) has no <bndbox>"),
    (voc_object(box=("eleven", "21", "60", "70")), r"2008_000002\.xml: <object> 2 \('dog'\): <xmin> is 'eleven', not a number"),
    ("<object><name>dog</name><bndbox><xmin>1</xmin></bndbox></object>", r"2008_000002\.xml: <object> 2 \('dog'\) has no <ymin>"),
    ("<object><bndbox><xmin>1</xmin></bndbox></object>", r"2008_000002\.xml: <object> 2 has no <name>"),
])
def test_voc_bad_object_names_the_file_and_what_is_wrong(tmp_path, monkeypatch, obj, expected):
    base = fake_voc(tmp_path, monkeypatch)
    write_annotation(base, "2008_000002", voc_object("person") + obj)
    with pytest.raises(data.DatasetCorruptError, match=expected):
        read()


def test_voc_truncated_image_names_the_file(tmp_path, monkeypatch):
    base = fake_voc(tmp_path, monkeypatch)
    path = base / "JPEGImages" / "2008_000002.jpg"
    path.write_bytes(path.read_bytes()[:600])
    with pytest.raises(data.DatasetCorruptError, match=r"JPEGImages/2008_000002\.jpg cannot be read as an image"):
        read()


def test_voc_impossible_boxes_are_clipped_or_dropped_with_one_warning(tmp_path, monkeypatch):
    base = fake_voc(tmp_path, monkeypatch)  # image 2008_000002 is 130 x 80 pixels
    write_annotation(base, "2008_000002", "".join([
        voc_object("dog", ("11", "21", "60", "70")),        # kept as it is
        voc_object("cat", ("40", "21", "20", "70")),        # inverted: dropped
        voc_object("person", ("61", "1", "6000", "40")),    # beyond the right edge: clipped
        voc_object("horse", ("500", "10", "600", "30")),    # wholly outside: dropped
    ]))
    with pytest.warns(UserWarning) as caught:
        s = read()
    assert len(caught) == 1
    assert "2 boxes dropped (inverted, or no area inside the image; the first in " in str(caught[0].message)
    assert "2008_000002.xml" in str(caught[0].message) and "1 box clipped to its image" in str(caught[0].message)
    assert s.labels[1].tolist() == [11, 14]
    sx, sy = 60 / 130, 60 / 80
    assert torch.allclose(s.boxes[1, 1], torch.tensor([60 * sx, 0, 60, 40 * sy]))
    assert ((s.boxes >= 0) & (s.boxes <= 60)).all()


def test_voc_limit_zero_means_no_images(tmp_path, monkeypatch):
    fake_voc(tmp_path, monkeypatch)
    assert len(read(limit=0)) == 0 and len(read(limit=1)) == 1 and len(read()) == 2
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=rf"limit must be None or a non-negative integer, got {bad!r}"):
            read(limit=bad)


# ---- make_scenes' arguments (each case failed before its fix) --------------------------------

def test_source_names_any_case_get_their_own_class_names(small):
    lower = scenes.make_scenes(5, "mnist", seed=3)
    assert lower.classes == data.MNIST_CLASSES
    assert torch.equal(lower.images, scenes.make_scenes(5, "MNIST", seed=3).images)
    try:
        fashion = scenes.make_scenes(2, "fashion-mnist", seed=3)
    except data.DatasetNotFoundError:
        pytest.skip("Fashion-MNIST is not on this machine")
    assert fashion.classes == data.FASHION_MNIST_CLASSES
    with pytest.raises(ValueError, match="source must be MNIST or FashionMNIST .*, got 'CIFAR10'"):
        scenes.make_scenes(2, "CIFAR10")


@pytest.mark.parametrize("kwargs,expected", [
    ({"objects": (3, 1)}, r"objects must be \(min, max\) with 0 <= min <= max, got \(3, 1\)"),
    ({"objects": 4}, r"objects must be \(min, max\) with 0 <= min <= max, got 4"),
    ({"objects": (-1, 2)}, r"objects must be \(min, max\) with 0 <= min <= max, got \(-1, 2\)"),
    ({"scale": (40, 20)}, r"scale must be \(min, max\) with 1 <= min <= max <= size \(96\), got \(40, 20\)"),
    ({"scale": (200, 200)}, r"scale must be \(min, max\) with 1 <= min <= max <= size \(96\), got \(200, 200\)"),
    ({"scale": (0, 0)}, r"scale must be \(min, max\) with 1 <= min <= max <= size \(96\), got \(0, 0\)"),
    ({"size": 0}, r"size must be a positive integer, got 0"),
    ({"size": 96.0}, r"size must be a positive integer, got 96.0"),
    ({"border": 2.0}, r"border must be in \[0, 1\), got 2.0"),
    ({"border": -0.1}, r"border must be in \[0, 1\), got -0.1"),
    ({"max_overlap": 1.5}, r"max_overlap must be in \[0, 1\], got 1.5"),
])
def test_impossible_scene_arguments_are_refused(kwargs, expected):
    with pytest.raises(ValueError, match=expected):
        scenes.make_scenes(2, **kwargs)


def test_negative_count_is_refused():
    with pytest.raises(ValueError, match="n must be a non-negative integer, got -1"):
        scenes.make_scenes(-1)


def test_scenes_too_small_for_the_objects_warn_once(small):
    with pytest.warns(UserWarning, match=r"of 6 scenes hold fewer than objects\[0\]=30 objects") as caught:
        crowded = scenes.make_scenes(6, objects=(30, 30), seed=0)
    assert len(caught) == 1
    assert ((crowded.labels >= 0).sum(1) < 30).any()


# ---- SceneLoader: geometric changes move the boxes and masks with the pixels ---------------

def batches(loader):
    return [(x.clone(), {k: v.clone() for k, v in t.items()}) for x, t in loader]


def check_targets_agree(x, t):
    """Every labelled mask pixel lies in a box of its class; boxes inside the image, not empty."""
    h, w = x.shape[-2:]
    for i in range(len(x)):
        keep = t["labels"][i] >= 0
        b, labels = t["boxes"][i][keep], t["labels"][i][keep]
        assert (b[:, 2:] > b[:, :2]).all() and (b[:, [0, 2]] <= w).all() and (b[:, [1, 3]] <= h).all()
        assert (b >= 0).all() and (t["boxes"][i][~keep] == 0).all()
        assert keep.sort(descending=True, stable=True).values.tolist() == keep.tolist()  # objects first
        covered = torch.zeros(h, w, dtype=torch.int64)
        for (x1, y1, x2, y2), c in zip(b.floor().long().tolist(), labels.tolist()):
            region = covered[y1:y2 + 1, x1:x2 + 1]
            region[t["masks"][i, y1:y2 + 1, x1:x2 + 1] == c + 1] = 1
        assert not ((t["masks"][i] > 0) & (covered == 0)).any()


def test_default_loader_is_the_scenes_unchanged(small):
    loader = scenes.SceneLoader(small, 16, shuffle=True, device="cpu", seed=5)
    seen = 0
    for x, t in loader:
        order = t["labels"].new_tensor([int((small.images.flatten(1) == (x[j] * 255).round().flatten().to(torch.uint8)).all(1).nonzero()[0]) for j in range(len(x))])
        assert torch.equal(x, small.images[order].float() / 255)
        assert torch.equal(t["boxes"], small.boxes[order]) and torch.equal(t["labels"], small.labels[order])
        assert torch.equal(t["masks"], small.masks[order].long())
        seen += len(x)
    assert seen == len(small)


def test_resize_scales_boxes_and_masks_with_the_images(small):
    x, t = next(iter(scenes.SceneLoader(small, 8, resize=48, device="cpu")))
    assert x.shape == (8, 1, 48, 48) and t["masks"].shape == (8, 48, 48) and t["masks"].dtype == torch.int64
    assert torch.equal(t["boxes"], small.boxes[:8] / 2) and torch.equal(t["labels"], small.labels[:8])
    assert torch.equal(t["masks"], torch.nn.functional.interpolate(
        small.masks[:8, None].float(), size=48, mode="nearest-exact")[:, 0].long())
    check_targets_agree(x, t)
    x, t = next(iter(scenes.SceneLoader(small, 4, resize=(48, 192), device="cpu")))
    assert x.shape == (4, 1, 48, 192)
    assert torch.equal(t["boxes"], small.boxes[:4] * torch.tensor([2, 0.5, 2, 0.5]))


def test_a_v2_flip_moves_boxes_and_masks(small):
    from torchvision.transforms import v2
    x, t = next(iter(scenes.SceneLoader(small, 8, augment=[v2.RandomHorizontalFlip(p=1.0)], device="cpu")))
    assert torch.equal(x, small.images[:8].flip(-1).float() / 255)
    assert torch.equal(t["masks"], small.masks[:8].flip(-1).long())
    real = small.labels[:8] >= 0
    mirrored = small.boxes[:8][..., [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([96, 0, 96, 0])
    assert torch.equal(t["boxes"][real], mirrored[real]) and torch.equal(t["labels"], small.labels[:8])
    check_targets_agree(x, t)


def test_v2_crops_and_shifts_drop_boxes_that_leave_the_image(small):
    from torchvision.transforms import v2
    augment = [v2.RandomAffine(degrees=0, translate=(0.4, 0.4)), v2.RandomCrop(64)]
    loader = scenes.SceneLoader(small, 10, shuffle=True, augment=augment, device="cpu", seed=1)
    first = batches(loader)
    assert torch.equal(first[0][0], batches(loader)[0][0])                 # the same epoch again
    loader.set_epoch(1)
    assert not torch.equal(first[0][0], batches(loader)[0][0])             # another epoch, other draws
    n_objects = 0
    for x, t in first:
        assert x.shape[-2:] == (64, 64) and t["masks"].shape[-2:] == (64, 64)
        check_targets_agree(x, t)
        n_objects += int((t["labels"] >= 0).sum())
    assert n_objects < int((small.labels >= 0).sum())                      # some boxes left the image


def test_plain_batch_augmentations_must_say_they_move_no_pixels(small):
    from cnnlib import regularize
    with pytest.raises(ValueError, match=r"augment= got random_flip.*cannot move boxes or masks.*v2\.RandomHorizontalFlip\(\) for data\.random_flip"):
        scenes.SceneLoader(small, 8, augment=[data.random_flip(1.0)], device="cpu")
    noisy = scenes.SceneLoader(small, 8, augment=[scenes.pixels_only(regularize.gaussian_noise(0.1))], device="cpu")
    (x, t), (again, _) = next(iter(noisy)), next(iter(noisy))
    assert torch.equal(x, again) and not torch.equal(x, small.images[:8].float() / 255)
    assert torch.equal(t["boxes"], small.boxes[:8]) and torch.equal(t["masks"], small.masks[:8].long())


def test_normalize_comes_after_the_transforms(small):
    from torchvision.transforms import v2
    loader = scenes.SceneLoader(small, 4, augment=[v2.RandomHorizontalFlip(p=1.0)], normalize=((0.5,), (0.25,)),
                                device="cpu")
    x, _ = next(iter(loader))
    assert torch.allclose(x, (small.images[:4].flip(-1).float() / 255 - 0.5) / 0.25)


def test_test_scenes_come_from_the_test_split_so_no_digit_is_seen_in_training(monkeypatch):
    # each split's digits are a filled square of its own grey level; a scene shows which split it drew on
    def fake_load(name, train, root=None):
        images = torch.zeros(50, 1, 28, 28, dtype=torch.uint8)
        images[..., 6:22, 6:22] = 200 if train else 100
        return images, torch.arange(50) % 10
    monkeypatch.setattr(scenes.data, "load", fake_load)
    train, test = scenes.loaders(8, train_size=16, test_size=16)
    assert train.scenes.images.max() == 200   # a test-split digit is never brighter than 100
    assert test.scenes.images.max() == 100    # no training digit (200) in any test scene


def test_draw_puts_box_edges_on_pixel_edges_and_labels_above_or_below():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    image = torch.zeros(1, 12, 12)
    fig, ax = plt.subplots()
    scenes.draw(ax, image, torch.tensor([[2.0, 3.0, 5.0, 11.0]]), labels=[7])
    scenes.draw(ax, image, torch.tensor([[2.0, 3.0, 5.0, 11.0]]), labels=[1], text_below=True)
    box = ax.patches[0]
    # imshow centres pixel 2 on x = 2, so its left edge (the box's x1 = 2) is at 1.5
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (1.5, 2.5, 3.0, 8.0)
    above, below = ax.texts
    assert above.get_position() == (1.5, 2.5) and above.get_va() == "bottom"
    assert below.get_position() == (1.5, 10.5) and below.get_va() == "top"
    plt.close(fig)


def test_collect_detections_runs_the_decoder_and_drops_the_padding(small):
    loader = scenes.SceneLoader(small, 16)
    calls = []

    def decode(model, x):
        calls.append(len(x))
        return [{"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.zeros(1, dtype=torch.long)}
                for _ in x]

    model = torch.nn.Identity().train()
    predictions, truths, images = scenes.collect_detections(model, loader, decode)
    assert not model.training and calls == [16, 16, 8]
    assert len(predictions) == len(truths) == len(images) == 40
    assert torch.equal(images, loader.scenes.images) if images.dtype == torch.uint8 else images.shape[0] == 40
    for t, i in zip(truths, range(40)):
        real = small.labels[i] >= 0
        assert torch.equal(t["labels"], small.labels[i][real]) and torch.equal(t["boxes"], small.boxes[i][real])


def test_mask_legend_uses_the_colours_draw_gives_each_class():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    mask = torch.zeros(12, 12, dtype=torch.uint8)
    mask[2:6, 2:6], mask[7:11, 7:11] = 4, 5             # digits 3 and 4 (mask = class + 1)
    fig, ax = plt.subplots()
    scenes.draw(ax, torch.zeros(1, 12, 12), mask=mask, num_classes=11)
    legend = scenes.mask_legend(fig, [str(d) for d in range(10)], num_classes=11)
    overlay = ax.images[1].get_array()
    for row, col, k in [(3, 3, 3), (8, 8, 4)]:
        assert np.allclose(overlay[row, col, :3], legend.legend_handles[k].get_facecolor()[:3])
    assert not np.allclose(overlay[3, 3, :3], overlay[8, 8, :3], atol=0.1)   # 3 and 4: distinct colours
    assert overlay[0, 0, 3] == 0                                             # background left clear
    colours = {scenes.mask_colour(k, 11) for k in range(1, 11)}
    assert len(colours) == 10
    assert [t.get_text() for t in legend.get_texts()] == [str(d) for d in range(10)]
    plt.close(fig)
