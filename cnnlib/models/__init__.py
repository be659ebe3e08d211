"""Model families, one module each, with a builder per variant."""
from .lenet import LeNet, lenet5, lenet5_d2l, lenet5_modern, xavier_init
