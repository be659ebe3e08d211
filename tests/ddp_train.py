"""Worker for test_distributed.py: the same small run, under torchrun or in one process.

    torchrun --standalone --nproc_per_node 2 tests/ddp_train.py OUT.pt GLOBAL_BATCH
    python tests/ddp_train.py OUT.pt GLOBAL_BATCH
"""
import os
import sys

import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(__file__))
from test_train import blobs  # noqa: E402

from cnnlib import data, fit  # noqa: E402


def main(out, global_batch, checkpoint=None, epochs=3):
    world = int(os.environ.get("WORLD_SIZE", "1"))  # fit wraps the model in DDP itself
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2))
    train = data.TensorLoader(*blobs(256), global_batch // world, shuffle=True, drop_last=True, device="cpu")
    test = data.TensorLoader(*blobs(100, 1), 64, device="cpu")
    hist = fit(model, train, test, epochs=epochs, optimizer=torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9),
               progress=False, checkpoint=checkpoint, resume=checkpoint is not None,
               device="cpu")  # gloo on the CPU, also on a machine with GPUs
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({"model": model.state_dict(),
                    "history": hist.rows}, out)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *(sys.argv[3:4] or [None]), *map(int, sys.argv[4:5]))
