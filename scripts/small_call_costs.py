"""Where the time of one small LSTM2000 call goes (T2's size by default): the module against the op it calls,
with and without a graph, at T and at T = 1 (the fixed cost of a call), beside torch's autograd floor.

    python scripts/small_call_costs.py                  # B=1 H=8 D=2 T=100
    python scripts/small_call_costs.py --H 32 --T 1000

Each figure is the best of 5 runs of --calls calls (a loop of a few microseconds is mostly noise on a shared
2-core machine: compare figures from one run only). Run it from outside the repository root, or with the package
installed (pytest-benchmark's bench/test_bench_limits.py times the floor and nn.Linear in the bench itself).
"""

from __future__ import annotations

import argparse
import time

import torch

import lstm_ext
from lstm_ext import ops
from lstm_ext.cli import _int_at_least
from lstm_ext.config import CellConfig


def best_us(fn, calls: int) -> float:
    for _ in range(max(calls // 10, 10)):
        fn()
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - start) / calls)
    return best * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in [("B", 1), ("H", 8), ("D", 2), ("T", 100), ("calls", 3000)]:
        p.add_argument(f"--{name}", type=_int_at_least(1), default=default)
    a = p.parse_args()
    torch.manual_seed(0)
    module = lstm_ext.LSTM2000(a.D, a.H)
    params = list(module.parameters())
    detached = [t.detach() for t in params]
    x, x1 = torch.randn(a.T, a.B, a.D), torch.randn(1, a.B, a.D)
    cfg = CellConfig()
    leaf = torch.randn(4, requires_grad=True)

    def fwd_bwd(forward):
        def run():
            for t in params:
                t.grad = None
            forward()[0].sum().backward()

        return run

    def floor():
        leaf.grad = None
        leaf.sum().backward()

    cases = [
        ("module fwd+bwd (the bench's T2 call)", fwd_bwd(lambda: module(x))),
        ("module fwd", lambda: module(x)),
        ("op fwd+bwd", fwd_bwd(lambda: ops.layer(x, *params, None, None, cfg))),
        ("op fwd (records the graph)", lambda: ops.layer(x, *params, None, None, cfg)),
        ("op fwd, no graph", lambda: ops.layer(x, *detached, None, None, cfg)),
        ("op fwd, no graph, T=1 (fixed cost)", lambda: ops.layer(x1, *detached, None, None, cfg)),
        ("autograd floor: a.sum().backward(), 4 elements", floor),
    ]
    print(f"LSTM2000 B={a.B} H={a.H} D={a.D} T={a.T}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name, fn in cases:
        print(f"  {name:48s} {best_us(fn, a.calls):8.1f} us")


if __name__ == "__main__":
    main()
