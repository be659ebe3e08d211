"""cnnlib: the models, data and training loop of the course *CNNs from the ground up*.

Taught in: chapters/00_introduction/01_the_course.ipynb (what cnnlib holds); every chapter uses it."""
import os

# OpenMP threads that spin while they wait make torch 10x slower on a CPU whose cores are
# shared (two threads on a 2-core laptop or Colab VM with anything else running); sleeping
# waits cost almost nothing when the cores are free. Effective if cnnlib is imported before torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
from . import arith, budget, config, data, models, plot, train
from .train import evaluate, fit, predict, seed_everything, train_fresh

__all__ = ["arith", "budget", "config", "data", "evaluate", "fit", "models", "plot", "predict",
           "seed_everything", "setup", "train", "train_fresh"]

__version__ = "0.1.0"


def setup(seed=0):
    """Seed everything and print the budget and device this notebook runs with."""
    seed_everything(seed)
    print(config.describe())
    return config.device()
