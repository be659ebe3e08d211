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


def _checks():
    """Every other place in cnnlib that asks for an integer: (name, call with the value)."""
    from cnnlib import data, gan, generalize, scenes

    class Generator(torch.nn.Module):
        def __init__(self, latent_dim):
            super().__init__()
            self.latent_dim = latent_dim

    def latent_dim(value):
        try:
            gan.GAN(Generator(value), torch.nn.Identity())
        except TypeError as error:
            if "latent_dim" in str(error):
                raise
        except Exception:   # the probe of this stand-in generator fails after the check passed
            pass

    return [("kfold's k", lambda v: generalize._check_integer("k", v, "the number of folds")),
            ("scenes' limit", scenes._check_limit),
            ("data's resize", data._check_resize),
            ("the generator's latent_dim", latent_dim)]


@pytest.mark.parametrize("value", [7, np.int64(7), torch.tensor(7)])
@pytest.mark.parametrize("name, check", _checks())
def test_every_integer_check_takes_the_integers_positive_int_takes(name, check, value):
    check(value)


@pytest.mark.parametrize("value", [True, 7.0, "7", torch.tensor([7, 8])])
@pytest.mark.parametrize("name, check", _checks())
def test_every_integer_check_refuses_what_positive_int_refuses(name, check, value):
    with pytest.raises((TypeError, ValueError)):
        check(value)
