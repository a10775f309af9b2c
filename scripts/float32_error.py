"""How far the float32 kernel's outputs are from float64, beside the float32 reference loop's (ATen's products).

    python scripts/float32_error.py [--widths 16 64 256 1030 4096] [--batch 64] [--steps 1] [--device cpu|cuda]

For each cell (2000 with tanh squashes, 1997 with the paper's) and width H it runs lstm_ext.ops.recurrence and
lstm_ext.reference.recurrence_ref in float32 on the same inputs (tests/cases.py's) on the device, and prints the
largest absolute error of y and s_T against the float64 reference (on the CPU), in units of float32 eps. The step
product sums H terms per output: on the CPU the panel kernel in blocks of 64 (csrc/cpu/panel_gemm.h, kBlockK) and
the reference's through MKL; on a GPU the CUDA kernel's step_product (csrc/cuda/recurrence_kernels.cuh) and
cuBLAS without TF32 (scripts/gpu_check.sh runs it there). H = 4096 needs about 1.5 GB (a few seconds).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from cases import make_inputs  # noqa: E402

from lstm_ext import ops  # noqa: E402
from lstm_ext.cli import _int_at_least  # noqa: E402
from lstm_ext.config import CellConfig  # noqa: E402
from lstm_ext.reference import recurrence_ref  # noqa: E402

CELLS = {"2000/tanh": CellConfig(), "1997/paper": CellConfig(False, 1, "cells", "paper")}


def errors(cfg: CellConfig, T: int, B: int, H: int, device: str = "cpu") -> dict[str, float]:
    """Largest |float32 - float64| of y and s_T, in float32 eps, for the kernel and for the reference loop."""
    eps = torch.finfo(torch.float32).eps
    inputs = make_inputs(cfg, T, B, H, torch.float32, device=device)
    with torch.no_grad():
        kernel = ops.recurrence(*inputs, cfg)
        loop = recurrence_ref(*inputs, cfg)
        exact = recurrence_ref(*[t.cpu().double() for t in inputs], cfg)
    out = {}
    for name, i in (("y", 0), ("s_T", 2)):
        out[f"{name} kernel"] = (kernel[i].cpu().double() - exact[i]).abs().max().item() / eps
        out[f"{name} loop"] = (loop[i].cpu().double() - exact[i]).abs().max().item() / eps
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=_int_at_least(1), nargs="+", default=[16, 64, 256, 1030, 4096])
    parser.add_argument("--batch", type=_int_at_least(1), default=64)
    parser.add_argument("--steps", type=_int_at_least(1), default=1)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: this torch sees no CUDA device")
    torch.backends.cuda.matmul.allow_tf32 = False  # the reference loop's products in true float32
    print(f"max |float32 - float64| in float32 eps, B={args.batch} T={args.steps}, {args.device}")
    print("| cell | H | y kernel | y reference loop | s_T kernel | s_T reference loop |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, cfg in CELLS.items():
        for H in args.widths:
            try:
                e = errors(cfg, args.steps, args.batch, H, args.device)
            except RuntimeError as err:  # e.g. no launch configuration of the CUDA kernel for this width
                print(f"| {label} | {H} | {str(err).splitlines()[0][:100]} | | | |")
                continue
            print(f"| {label} | {H} | {e['y kernel']:.1f} | {e['y loop']:.1f} | {e['s_T kernel']:.1f} | "
                  f"{e['s_T loop']:.1f} |")


if __name__ == "__main__":
    main()
