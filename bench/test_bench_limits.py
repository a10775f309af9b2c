"""What this machine allows: the two limits the issue's targets T2 and T3 run into (CPU, measured in the same run).

  autograd floor   ``a.sum().backward()`` on a 4-element float32 tensor: the least the backward of any autograd
                   module costs here (the engine and torch.autograd's Python), before any work of its own.
                   T2 asks for LSTM2000's whole forward+backward in a tenth of nn.LSTM's time.
  linear layer     ``torch.nn.Linear(2, 32)`` forward+backward on T2's input (T=100, B=1, D=2), timed as the
                   peers are: LSTM2000's input projection alone, as torch's own layer (one product, two
                   parameters, no recurrence). What the simplest module costs in T2's harness.
  matmul rate      ``torch.mm`` of two 1024 x 1024 float32 matrices on torch's threads: the arithmetic rate of
                   the machine in the best case. T3 asks for 10x the reference loop's speed on a layer whose
                   forward+backward is a fixed number of multiply-adds (bench/report.py prints the rate it needs).
  step products    the recurrent products of a wide layer's forward (B=32, H=1024, T=100) one step at a time,
                   ``torch.addmm`` (32 x 1024 by 1024 x 4096) on torch's threads, without any cell math: what
                   MKL makes of them, beside the fused CPU kernel's own panel kernel, where nn.LSTM (oneDNN) is
                   faster than LSTM2000.
"""

import pytest
import torch

import benchlib

MM_N = 1024


@pytest.mark.quick
def test_autograd_floor(benchmark, bench_opts):
    a = torch.randn(4, requires_grad=True)

    def setup():
        a.grad = None

    def fn():
        a.sum().backward()

    benchlib.run_limit(benchmark, "autograd_floor", fn, setup, bench_opts)


@pytest.mark.quick
def test_linear_layer(benchmark, bench_opts):
    B, H, D, T = 1, 8, 2, 100  # T2's size
    torch.manual_seed(0)
    lin = torch.nn.Linear(D, 4 * H)
    x = torch.randn(T, B, D)

    def setup():
        for p in lin.parameters():
            p.grad = None

    def fn():
        lin(x).sum().backward()

    benchlib.run_limit(benchmark, "linear_layer", fn, setup, bench_opts, B=B, H=H, D=D, T=T)


@pytest.mark.quick
def test_matmul_rate(benchmark, bench_opts):
    x, y = torch.randn(MM_N, MM_N), torch.randn(MM_N, MM_N)
    out = torch.empty(MM_N, MM_N)

    def fn():
        torch.mm(x, y, out=out)

    benchlib.run_limit(benchmark, "matmul_rate", fn, lambda: None, bench_opts, flop=2 * MM_N**3)


STEP_B, STEP_H, STEP_T = 32, 1024, 100


def test_step_products(benchmark, bench_opts):
    h, Ut = torch.randn(STEP_B, STEP_H), torch.randn(STEP_H, 4 * STEP_H)
    A = torch.randn(STEP_T, STEP_B, 4 * STEP_H)
    out = torch.empty(STEP_B, 4 * STEP_H)

    def fn():
        for t in range(STEP_T):
            torch.addmm(A[t], h, Ut, out=out)

    benchlib.run_limit(benchmark, "step_products", fn, lambda: None, bench_opts,
                       flop=2 * STEP_T * STEP_B * 4 * STEP_H * STEP_H, B=STEP_B, H=STEP_H, T=STEP_T)  # fmt: skip
