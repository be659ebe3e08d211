"""cnnlib.config: settings from the environment, read strictly."""
import pytest
import torch

from cnnlib import config


@pytest.mark.parametrize("value,allowed", [("1", True), ("true", True), (" Yes ", True), ("ON", True),
                                           ("0", False), ("False", False), ("no", False), (" off", False),
                                           ("", True)])
def test_download_takes_the_usual_true_and_false_words(monkeypatch, value, allowed):
    monkeypatch.setenv("CNNLIB_DOWNLOAD", value)
    assert config.download_allowed() is allowed


def test_download_refuses_other_words_naming_the_variable(monkeypatch):
    monkeypatch.setenv("CNNLIB_DOWNLOAD", "maybe")
    with pytest.raises(ValueError, match=r"CNNLIB_DOWNLOAD='maybe'.*1/0, true/false"):
        config.download_allowed()


@pytest.mark.parametrize("value", ["cpu", " CPU ", "Cpu\n"])
def test_device_variable_is_normalised(monkeypatch, value):
    monkeypatch.setenv("CNNLIB_DEVICE", value)
    assert config.device() == torch.device("cpu")


def test_device_variable_that_names_no_device_is_refused(monkeypatch):
    monkeypatch.setenv("CNNLIB_DEVICE", "gpu")
    with pytest.raises(ValueError, match=r"CNNLIB_DEVICE='gpu'.*cpu, cuda"):
        config.device()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_device_variable_asking_for_absent_cuda_says_so(monkeypatch):
    monkeypatch.setenv("CNNLIB_DEVICE", "CUDA:0")
    with pytest.raises(ValueError, match=r"CNNLIB_DEVICE='CUDA:0'.*no CUDA"):
        config.device()
