"""The DCGAN networks' own checks (the GAN training loop is tested in test_gan.py)."""
import pytest
import torch

from cnnlib.models import dcgan_discriminator, dcgan_generator


@pytest.mark.parametrize("labels", [[0, 10], [-1, 3]])
def test_conditional_networks_name_the_label_range(labels):
    g, d = dcgan_generator(latent_dim=8, channels=4, num_classes=10), dcgan_discriminator(channels=4, num_classes=10)
    y = torch.tensor(labels)
    message = rf"class labels y must be in \[0, 9\] \(num_classes=10\), got values from {min(labels)} to {max(labels)}"
    with pytest.raises(ValueError, match=message):
        g(torch.randn(2, 8), y)
    with pytest.raises(ValueError, match=message):
        d(torch.zeros(2, 1, 28, 28), y)


def test_conditional_networks_want_integer_labels():
    g = dcgan_generator(latent_dim=8, channels=4, num_classes=10)
    with pytest.raises(ValueError, match="class labels y must be integers, got dtype torch.float32"):
        g(torch.randn(2, 8), torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="a conditional generator needs class labels y"):
        g(torch.randn(2, 8))
    assert g(torch.randn(2, 8), torch.tensor([0, 9])).shape == (2, 1, 28, 28)
