"""Test cases shared by the op tests (test_ops.py on the CPU, test_cuda.py on a GPU)."""

from __future__ import annotations

import itertools
import math

import torch

from lstm_ext.config import FEEDBACKS, SQUASHES, CellConfig


def all_configs(block_sizes=(1, 2, 3), truncate=(False, True)):
    """Every cell configuration: 1997/2000 cell x block sizes x feedback x squash x truncate."""
    return [
        CellConfig(fg, bs, fb, sq, tr)
        for fg, bs, fb, sq, tr in itertools.product((True, False), block_sizes, FEEDBACKS, SQUASHES, truncate)
    ]


def cfg_id(cfg: CellConfig) -> str:
    return f"{'2000' if cfg.forget_gate else '1997'}-S{cfg.block_size}-{cfg.feedback}-{cfg.squash}" + (
        "-trunc" if cfg.truncate else ""
    )


def make_inputs(cfg, T, B, C, dtype=torch.float64, seed=0, device="cpu"):
    """A (T,B,G), U (G,R), r0 (B,R), s0 (B,C): drawn in float64 on the CPU, then cast and moved, so that the
    float64 reference sees exactly the values the kernel sees."""
    g = torch.Generator().manual_seed(seed)
    G, R = cfg.gate_rows(C), cfg.recurrent_size(C)
    A = torch.randn(T, B, G, generator=g, dtype=torch.float64)
    U = torch.randn(G, R, generator=g, dtype=torch.float64) / math.sqrt(max(R, 1))
    r0 = 0.5 * torch.randn(B, R, generator=g, dtype=torch.float64)
    s0 = torch.randn(B, C, generator=g, dtype=torch.float64)
    return [t.to(device=device, dtype=dtype) for t in (A, U, r0, s0)]


def tolerances(dtype: torch.dtype, n: int) -> dict:
    """The tolerance of the op against the float64 reference, for a result built from n rounding stages.

    n = T for y, r_T, s_T, dA, dr0, ds0 (one recurrence step per stage; the per-step products are short) and
    n = T*B for dU (a sum over all steps and batch rows). Rounding errors of independent stages add like a
    random walk, so:
      float32: rtol = atol = 8 * sqrt(n) * eps(float32), i.e. |got - want| <= 8 sqrt(n) eps (1 + |want|)
               (the kernel's float32 exp is <= 1 ulp, its sigmoid <= 2.5, its tanh <= 5.4: csrc/cell.h);
      float64: rtol = 1e-10, atol = 1e-12 (rounding is ~1e-15; anything above 1e-10 is a bug, not rounding).
    """
    if dtype == torch.float64:
        return dict(rtol=1e-10, atol=1e-12)
    assert dtype == torch.float32, dtype
    tol = 8 * math.sqrt(max(n, 1)) * torch.finfo(torch.float32).eps
    return dict(rtol=tol, atol=tol)
