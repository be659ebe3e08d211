"""cnnlib: the models, data and training loop of the course *CNNs from the ground up*."""
from . import arith, budget, config, data, models, plot, train
from .train import evaluate, fit, predict, seed_everything

__version__ = "0.1.0"


def setup(seed=0):
    """Seed everything and print the budget and device this notebook runs with."""
    seed_everything(seed)
    print(config.describe())
    return config.device()
