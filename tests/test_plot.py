import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from cnnlib import plot  # noqa: E402


def test_each_label_points_at_its_own_marker_and_no_two_overlap():
    # a crowded corner: three points close together, as on the comparison page's scatter
    xs, ys = [1.0, 1.05, 1.1, 5.0, 9.0], [80.0, 80.3, 79.8, 85.0, 90.0]
    names = ["AlexNet", "VGG-11-BN", "DenseNet-BC-40", "ResNet-18", "GoogLeNet"]
    fig, ax = plt.subplots(figsize=(6.8, 4))
    ax.scatter(xs, ys)
    ax.margins(0.3)
    fig.canvas.draw()
    labels = plot.label_points(ax, xs, ys, names)
    renderer = fig.canvas.get_renderer()
    assert [t.get_text() for t in labels] == names
    assert [t.xy for t in labels] == list(zip(xs, ys))          # the line ends at the label's own point
    assert all(t.arrow_patch is not None for t in labels)
    boxes = [t.get_window_extent(renderer) for t in labels]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    plt.close(fig)


def test_no_label_line_crosses_another_label_on_the_table_pages_scatter():
    # the stored scatter of the table of all models (multiply-adds, mean accuracy), where a line
    # once ran through a neighbour's label and made it look like that model's
    macs = [416_520, 12_664_064, 10_774_528, 9_691_392, 8_772_340, 16_817_776, 28_573_184, 13_809_252]
    acc = [73.49, 75.35, 81.05, 39.56, 52.59, 80.22, 81.21, 76.92]
    names = ["LeNet-5", "AlexNet", "VGG-11-BN", "NiN", "DLfS deep CNN", "GoogLeNet", "ResNet-18",
             "DenseNet-BC-40"]
    fig, ax = plt.subplots(figsize=(6.8, 4.2))
    ax.scatter(macs, acc)
    ax.set_xscale("log")
    ax.margins(x=0.25, y=0.2)
    fig.canvas.draw()
    labels = plot.label_points(ax, macs, acc, names)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in labels]
    points = [ax.transData.transform(p) for p in zip(macs, acc)]
    for i, (box, point) in enumerate(zip(boxes, points)):
        centre = ((box.x0 + box.x1) / 2, (box.y0 + box.y1) / 2)
        for j, other in enumerate(boxes):
            if j != i:
                assert not plot._crosses((point, centre), other), f"{names[i]}'s line crosses {names[j]}"
                assert not other.overlaps(box)
        assert not any(box.contains(*p) for p in points)
    plt.close(fig)


def test_label_points_refuses_mismatched_lengths():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="same length, got 2, 2, 1"):
        plot.label_points(ax, [1, 2], [1, 2], ["a"])
    plt.close(fig)


def test_row_titles_sit_left_of_their_row_and_clear_of_the_row_above():
    import torch
    names = ["T-shirt/top", "Trouser", "Pullover", "Ankle boot"]
    fig = plot.image_grid(torch.rand(32, 1, 28, 28), ncols=8, scale=0.7, row_titles=names)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    first = fig.axes[::8]                       # the first image of each row
    assert fig.get_size_inches()[0] <= plot.BOOK_WIDTH + 1e-9
    for row, (ax, name) in enumerate(zip(first, names)):
        label = [t for t in ax.texts if t.get_text() == name]
        assert len(label) == 1
        box, image = label[0].get_window_extent(renderer), ax.get_window_extent(renderer)
        assert box.x1 <= image.x0 and box.x0 >= 0          # left of the row, inside the figure
        assert image.y0 <= box.y0 and box.y1 <= image.y1    # within its row's height
    plt.close(fig)


def test_row_titles_must_match_the_rows():
    import torch
    with pytest.raises(ValueError, match="3 entries for 4 rows"):
        plot.image_grid(torch.rand(32, 1, 28, 28), ncols=8, row_titles=["a", "b", "c"])
