"""The modules under torch.distributed: DistributedDataParallel on two CPU processes (gloo) gives each rank the
gradients of the whole batch, as one process computes them."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import lstm_ext

pytestmark = pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")

WORLD = 2


def model_and_batch():
    torch.manual_seed(0)
    model = lstm_ext.LSTM2000(3, 5, num_layers=2, bidirectional=True, batch_first=True).double()
    x = torch.randn(4, 8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))  # (B, T, D)
    return model, x


def loss_of(model, x):
    y, (h_n, c_n) = model(x)
    return y.square().sum() + h_n.sin().sum() + c_n.sum()


def ddp_rank(rank, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        model, x = model_and_batch()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        rows = x.shape[0] // WORLD
        loss_of(ddp, x[rank * rows : (rank + 1) * rows]).backward()
        torch.save([p.grad for p in model.parameters()], f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_distributed_data_parallel(tmp_path):
    mp.spawn(ddp_rank, args=(str(tmp_path / "init"), str(tmp_path / "grads")), nprocs=WORLD)
    model, x = model_and_batch()
    (loss_of(model, x) / WORLD).backward()  # DDP averages the ranks' gradients
    for rank in range(WORLD):
        grads = torch.load(tmp_path / f"grads.{rank}")
        for (name, p), g in zip(model.named_parameters(), grads):
            torch.testing.assert_close(g, p.grad, rtol=1e-10, atol=1e-12, msg=f"rank {rank}: {name}")
