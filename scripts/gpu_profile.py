"""Where the CUDA recurrence's time goes: the ops alone (no module, no projection), timed at two sequence lengths,
split into a cost per step (the slope) and a fixed cost per call (the intercept), beside nn.LSTM's (cuDNN's)
per-step cost and the launch plan of each op; or one op call for Nsight Compute (`ncu`) to profile.

    python scripts/gpu_profile.py                          # the default cases, T = 100 and 500
    python scripts/gpu_profile.py --cases float32:1:32 bfloat16:64:1024 --T 200 1000
    ncu --clock-control none --set full -k regex:forward_kernel --launch-skip 1 --launch-count 1 \\
        python scripts/gpu_profile.py --ncu float32:1:32:1000:fwd

The H100 benchmark (bench/results/h100.md) left two questions this answers: what the forward's 1.9-7.6 us per
step at H <= 128 is made of (the op's slope against its fixed cost; ncu's warp stall reasons), and how much of the
slowness at H = 1024 is the plan (groups with more batch tiles than they run side by side: "serial" below is the
number of rounds of tiles one group runs one after the other). `--device cpu` runs the same timings on the CPU kernels (a check of the script).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch

import lstm_ext  # noqa: F401  (registers torch.ops.lstm_ext)
from lstm_ext.cli import _int_at_least
from lstm_ext.config import CellConfig

OPS = torch.ops.lstm_ext
DEFAULT_CASES = ["float32:1:8", "float32:1:32", "float32:64:32", "float32:1:128", "float32:64:128",
                 "float32:64:256", "float32:256:1024", "bfloat16:16:256", "bfloat16:64:512",
                 "bfloat16:64:1024"]  # fmt: skip
CFG = CellConfig()  # the 2000 cell, blocks of 1, feedback "cells", tanh: nn.LSTM's
CONFIG_ARGS = (CFG.forget_gate, CFG.block_size, CFG.feedback, CFG.squash, CFG.truncate)


def parse_case(text: str):
    dtype, B, H, *rest = text.split(":")
    return (getattr(torch, dtype), int(B), int(H), *rest)


def op_inputs(dtype, B, H, T, device):
    g = torch.Generator().manual_seed(0)
    G = CFG.gate_rows(H)
    A = torch.randn(T, B, G, generator=g).to(device, dtype)
    U = (torch.randn(G, H, generator=g) / H**0.5).to(device, dtype)
    r0, s0 = torch.zeros(B, H, device=device, dtype=dtype), torch.zeros(B, H, device=device, dtype=dtype)
    return A, U, r0, s0


def forward_call(A, U, r0, s0):
    with torch.no_grad():
        return OPS.recurrence(A, U, r0, s0, None, *CONFIG_ARGS)


def backward_call(A, U, r0, s0):
    """The backward op on the saved tensors of one forward (computed once, outside the timed call)."""
    y, r_T, s_T, act, s_all = OPS.recurrence_forward(A, U, r0, s0, None, *CONFIG_ARGS)
    dy, dr, ds = torch.ones_like(y), torch.ones_like(r_T), torch.ones_like(s_T)
    return lambda: OPS.recurrence_backward(dy, dr, ds, U, r0, s0, y, act, s_all, None, *CONFIG_ARGS)


def median_seconds(fn, device, calls: int) -> float:
    for _ in range(2):
        fn()
    times = []
    for _ in range(calls):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def per_step(timer, T1: int, T2: int):
    """(cost per step, fixed cost per call) in microseconds, from the median times at T1 and T2."""
    t1, t2 = timer(T1), timer(T2)
    slope = (t2 - t1) / (T2 - T1)
    return slope * 1e6, (t1 - slope * T1) * 1e6


def plan(dtype, B, H, device, backward):
    if device != "cuda":
        return "-"
    p = OPS.cuda_launch_plan(H, B, dtype, *CONFIG_ARGS, backward, torch.cuda.current_device())
    bt, group, n_groups, n_tiles, threads, ksplit, u_smem, smem = p[:8]
    side = p[10]  # tiles a group runs side by side, in `serial` rounds one after another
    serial = -(-n_tiles // (n_groups * side))
    barrier = "" if group == 1 else ", cluster barrier" if p[11] else ", flag barrier"
    barrier += ", r via DSMEM" if p[12] else ""
    return (f"bt {bt}, group {group}{barrier}, groups {n_groups}, side by side {side}, serial {serial}, "
            f"threads {threads}, ksplit {ksplit}, U {'smem' if u_smem else 'global'}, {smem // 1024} KB")  # fmt: skip


def timings(cases, T1, T2, device, calls):
    print("| dtype | B | H | fwd µs/step | fwd fixed µs | bwd µs/step | bwd fixed µs | nn.LSTM fwd µs/step "
          "| forward plan | backward plan |\n|---|---:|---:|---:|---:|---:|---:|---:|---|---|")  # fmt: skip
    for text in cases:
        dtype, B, H = parse_case(text)[:3]
        def inputs(T):
            return op_inputs(dtype, B, H, T, device)

        fwd = per_step(lambda T: median_seconds(functools.partial(forward_call, *inputs(T)), device, calls), T1, T2)
        bwd = per_step(lambda T: median_seconds(backward_call(*inputs(T)), device, calls), T1, T2)
        lstm = torch.nn.LSTM(H, H).to(device, dtype)

        def cudnn(T):
            x = torch.randn(T, B, H, device=device, dtype=dtype)
            with torch.no_grad():
                return median_seconds(lambda: lstm(x), device, calls)

        ref = per_step(cudnn, T1, T2)
        print(f"| {str(dtype).removeprefix('torch.')} | {B} | {H} | {fwd[0]:.2f} | {fwd[1]:.0f} | {bwd[0]:.2f} "
              f"| {bwd[1]:.0f} | {ref[0]:.2f} | {plan(dtype, B, H, device, False)} "
              f"| {plan(dtype, B, H, device, True)} |", flush=True)  # fmt: skip


def ncu_case(text: str, device: str):
    """Two calls of one op (the first a warm-up for --launch-skip 1), then a synchronize."""
    dtype, B, H, T, which = parse_case(text)
    inputs = op_inputs(dtype, B, H, int(T), device)
    fn = functools.partial(forward_call, *inputs) if which == "fwd" else backward_call(*inputs)
    fn()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    print(f"ran {which} {dtype} B={B} H={H} T={T} twice; forward plan: {plan(dtype, B, H, device, False)}; "
          f"backward plan: {plan(dtype, B, H, device, True)}")  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=DEFAULT_CASES, help="dtype:B:H ...")
    ap.add_argument("--T", nargs=2, type=_int_at_least(1), default=[100, 500], metavar=("T1", "T2"))
    ap.add_argument("--calls", type=_int_at_least(1), default=10, help="timed calls per point (their median)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--ncu", metavar="DTYPE:B:H:T:fwd|bwd", help="run one op twice for ncu instead")
    a = ap.parse_args(argv)
    if a.ncu:
        ncu_case(a.ncu, a.device)
    else:
        timings(a.cases, *a.T, a.device, a.calls)


if __name__ == "__main__":
    main()
