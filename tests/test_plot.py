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


def test_label_points_refuses_mismatched_lengths():
    fig, ax = plt.subplots()
    with pytest.raises(ValueError, match="same length, got 2, 2, 1"):
        plot.label_points(ax, [1, 2], [1, 2], ["a"])
    plt.close(fig)
