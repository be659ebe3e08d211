import pytest
import torch

from cnnlib.models import lenet5, lenet5_d2l, lenet5_modern


@pytest.mark.parametrize("build", [lenet5, lenet5_d2l, lenet5_modern])
def test_output_shape_and_parameter_count(build):
    model = build(num_classes=10)
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    # conv1 6*(1*25+1) + conv2 16*(6*25+1) + fc 400*120+120 + 120*84+84 + 84*10+10
    assert sum(p.numel() for p in model.parameters()) == 156 + 2416 + 48120 + 10164 + 850 == 61706


def test_in_channels_and_classes():
    assert lenet5(num_classes=7, in_channels=3)(torch.zeros(2, 3, 28, 28)).shape == (2, 7)


def test_wrong_channels_say_so():
    with pytest.raises(ValueError, match="1-channel images, got 3 channels"):
        lenet5()(torch.zeros(1, 3, 28, 28))


def test_wrong_size_says_so():
    with pytest.raises(ValueError, match="expects 28x28 images, got 16x16"):
        lenet5()(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        lenet5()(torch.zeros(28, 28))


def test_scaled_tanh_is_lecuns():
    from cnnlib.models.lenet import ScaledTanh
    x = torch.linspace(-4, 4, 81)
    torch.testing.assert_close(ScaledTanh()(x), 1.7159 * torch.tanh(2 * x / 3))
    torch.testing.assert_close(ScaledTanh()(torch.tensor([1.0, -1.0])), torch.tensor([1.0, -1.0]), atol=1e-4, rtol=0)
    assert any(isinstance(x, ScaledTanh) for x in lenet5(scaled_tanh=True).modules())
    assert not any(isinstance(x, ScaledTanh) for x in lenet5().modules())
