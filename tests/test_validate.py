"""cnnlib._validate: the one positive-integer check (fit, the data loaders)."""
import re

import numpy as np
import pytest
import torch

from cnnlib._validate import positive_int


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2), torch.tensor(5)])
def test_integers_of_every_library_are_taken_as_python_ints(value):
    assert positive_int("n", value) == int(value) and type(positive_int("n", value)) is int


@pytest.mark.parametrize("value", [0, -2, 2.0, 2.5, True, "3", None, torch.tensor([1, 2]), torch.tensor(2.0)])
def test_anything_else_is_refused_naming_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match="^" + re.escape(f"size must be a positive integer, got {value!r}") + "$"):
        positive_int("size", value)


def test_a_minimum_and_what_else_is_accepted_are_said():
    with pytest.raises(ValueError, match=r"stride must be an integer >= 2, got 1"):
        positive_int("stride", 1, minimum=2)
    with pytest.raises(ValueError, match=r"train_size must be a positive integer \(or None for the whole split\)"):
        positive_int("train_size", 0, also=" (or None for the whole split)")


def test_the_data_loaders_use_it():
    from cnnlib import data
    data._check_size("train_size", np.int64(5))
    with pytest.raises(ValueError, match=r"test_size must be a positive integer \(or None"):
        data._check_size("test_size", False)
