"""Data-parallel training under torchrun: the process group, each rank's share, the reductions.

fit() calls these when it runs under ``torchrun --nproc_per_node N``: every process trains a
replica of the model wrapped in DistributedDataParallel (which averages the gradients), on its
own share of every epoch, and the metrics are summed over the processes.
Taught in: chapters/90_appendix/01_data_parallel.ipynb.
"""
import os

import torch


def setup(device, train_step=None):
    """(device, (rank, world_size)) under torchrun, initialising the process group once; else (device, None).

    The backend follows the training device: NCCL for CUDA, gloo for the CPU (also on a machine
    with GPUs). A CUDA device without an index becomes this process's GPU, cuda:LOCAL_RANK.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device, None
    if train_step is not None:
        raise ValueError("a train_step under torchrun would train each process's own copy (DDP averages the "
                         "gradients of the wrapped model's forward only): use loss_fn, or one process")
    import torch.distributed as dist
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device, (dist.get_rank(), dist.get_world_size())


def wrap(model, device, dist, train_loader, val_loader):
    """Each loader keeps this rank's share; the model is wrapped in DDP (its weights stay `model`'s)."""
    from torch.nn.parallel import DistributedDataParallel
    shard(train_loader, *dist)
    if val_loader is not None:
        shard(val_loader, *dist)
    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def shard(loader, rank, world_size):
    """Under data parallelism each rank must see its own share of every epoch."""
    from torch.utils.data.distributed import DistributedSampler
    if hasattr(loader, "shard"):
        loader.shard(rank, world_size)
    elif not isinstance(getattr(loader, "sampler", None), DistributedSampler):
        raise ValueError(f"under torchrun every process would see all of a {type(loader).__name__}'s batches: "
                         "use a cnnlib loader (data.TensorLoader, data.loaders) or a torch DataLoader "
                         "with a DistributedSampler")


def all_reduce(tensors):
    """Sum each tensor over the processes, in place."""
    import torch.distributed as dist
    for t in tensors:
        dist.all_reduce(t)
