"""Offline with downloads on: a missing data set is reported as a network problem, not as a
corrupt file to delete. The network is cut by making torchvision's download function raise
what urllib raises offline."""
import urllib.error

import pytest
from torchvision.datasets import cifar, mnist

from cnnlib import data


@pytest.fixture
def no_network(monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError(OSError(-3, "Temporary failure in name resolution"))
    for module in (mnist, cifar):
        monkeypatch.setattr(module, "download_and_extract_archive", offline)
    monkeypatch.setenv("CNNLIB_DOWNLOAD", "1")


@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST", "CIFAR10"])
def test_offline_with_downloads_on_names_the_network(no_network, tmp_path, name):
    with pytest.raises(data.DatasetNotFoundError) as err:
        data.load(name, root=tmp_path)
    message = str(err.value)
    assert f"{name} is not in" in message and str(tmp_path) in message
    assert "downloads are on, but the download failed" in message and "no network" in message
    assert "Temporary failure in name resolution" in message
    assert "corrupt" not in message and "Delete it" not in message
