import pytest
import torch
import torch.nn as nn

from cnnlib import data, train
from cnnlib.models import MLP, mlp, softmax_regression


def count(model):
    return sum(p.numel() for p in model.parameters())


def test_softmax_regression_is_one_linear_layer():
    model = softmax_regression()
    assert len(model.linear_layers) == 1
    assert count(model) == 784 * 10 + 10
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)


@pytest.mark.parametrize("hidden, expected", [
    ((256,), 784 * 256 + 256 + 256 * 10 + 10),
    ((256, 128), 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10),
    ((), 784 * 10 + 10),
])
def test_parameter_counts(hidden, expected):
    assert count(mlp(hidden=hidden)) == expected


def test_shapes_for_images_and_flat_vectors():
    model = MLP(num_inputs=12, hidden=(8, 8), num_outputs=3)
    assert model(torch.randn(4, 3, 2, 2)).shape == (4, 3)
    assert model(torch.randn(4, 12)).shape == (4, 3)
    one_d = MLP(num_inputs=1, hidden=(16,), num_outputs=1, activation=nn.Tanh)
    assert one_d(torch.linspace(-1, 1, 7).unsqueeze(1)).shape == (7, 1)


def test_activation_and_dropout_layers():
    model = mlp(hidden=(32, 16), activation=nn.Sigmoid, dropout=0.3)
    kinds = [type(m) for m in model.layers]
    assert kinds == [nn.Flatten, nn.Linear, nn.Sigmoid, nn.Dropout, nn.Linear, nn.Sigmoid, nn.Dropout, nn.Linear]
    assert all(m.p == 0.3 for m in model.layers if isinstance(m, nn.Dropout))
    assert not any(isinstance(m, nn.Dropout) for m in mlp(hidden=(32,)).layers)
    prelu = mlp(hidden=(8, 8), activation=nn.PReLU)  # one instance per layer, not shared
    acts = [m for m in prelu.layers if isinstance(m, nn.PReLU)]
    assert len(acts) == 2 and acts[0] is not acts[1]


def test_dropout_acts_only_in_training():
    torch.manual_seed(0)
    model = mlp(num_inputs=20, hidden=(64,), num_classes=2, dropout=0.5)
    x = torch.randn(8, 20)
    model.eval()
    torch.testing.assert_close(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("bad, hint", [
    (torch.rand(2, 1, 32, 32), "num_inputs=1024"),
    (torch.rand(2, 3, 28, 28), "num_inputs=2352"),
    (torch.rand(784), "batch dimension"),
])
def test_wrong_input_size_raises_a_clear_error(bad, hint):
    with pytest.raises(ValueError, match=hint):
        mlp()(bad)


def test_bad_dropout_is_refused():
    with pytest.raises(ValueError, match="dropout"):
        mlp(dropout=1.0)


def xor_images(n, seed):
    """4x4 uint8 images; the class is the XOR of two pixels being bright: not linearly separable."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 4, 4), generator=g, dtype=torch.uint8)
    bright = images[:, 0, 0, :2] > 127
    labels = (bright[:, 0] ^ bright[:, 1]).long()
    return images, labels


def test_a_small_mlp_learns_xor_with_fit_and_a_linear_model_cannot():
    train_set = data.TensorLoader(*xor_images(2048, 0), 256, shuffle=True, drop_last=True, device="cpu")
    test_set = data.TensorLoader(*xor_images(512, 1), 256, device="cpu")
    accuracy = {}
    for name, hidden in [("mlp", (32,)), ("linear", ())]:
        torch.manual_seed(0)
        model = MLP(16, hidden, 2)
        opt = torch.optim.Adam(model.parameters(), lr=3e-2)
        history = train.fit(model, train_set, test_set, epochs=20, optimizer=opt, progress=False, verbose=False)
        accuracy[name] = history.last["val_acc"]
    assert accuracy["mlp"] > 0.9
    assert accuracy["linear"] < 0.7
