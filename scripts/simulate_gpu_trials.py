"""How fast can ``lstm-ext reproduce --device cuda`` be, whatever the GPU? A simulation on the CPU.

``--device cuda`` runs the trials as threads of one process (``runner._side_by_side``, ``runner._cuda_worker``):
each thread generates its chunks, calls ``paper_train`` (a CUDA kernel that releases the GIL while the thread
waits for it) and checks the stopping rule in Python. Here the op is replaced by a wait of ``--gpu-ns`` per
sequence step with the GIL released, a GPU as fast as that and with an SM for every thread; everything else
(the generators, the rules, the thread pool) is the real code. The aggregate rate then shows where the
Python of the trials, one GIL for all of them, caps the design. For comparison, the real CPU op trains the
same row in one thread (what one core gives ``--device cpu``).

    python scripts/simulate_gpu_trials.py --row 4-T100 --threads 1,4,16,64
"""

from __future__ import annotations

import argparse
import time

import torch

from lstm_ext.cli import _int_at_least
from lstm_ext.experiments import rows as rows_mod
from lstm_ext.experiments import runner
from lstm_ext.experiments.protocol import run_trial
from lstm_ext.paper import net as net_mod


def _simulated_call(gpu_ns: float):
    """PaperNet._call that waits ``gpu_ns`` per sequence step (GIL released) and returns the statistics of an
    evaluation of the chunk's shape (computed once per size: the simulated nets do not learn)."""
    real_call = net_mod.PaperNet._call
    cache = {}

    def call(self, batch, lr, learn, update, return_outputs, gradient="truncated"):
        key = (batch.n, return_outputs)
        if key not in cache:
            cache[key] = real_call(self, batch, 0.0, False, "sequence", return_outputs)
        time.sleep(int(batch.lengths.sum()) * gpu_ns * 1e-9)
        return cache[key]

    return call


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--row", default="4-T100", help="a row key of the reports")
    p.add_argument("--threads", default="1,4,16,64", help="trials side by side, comma-separated")
    p.add_argument("--budget", type=_int_at_least(1), default=20_000, help="training sequences per trial")
    p.add_argument("--gpu-ns", type=float, default=300.0, help="simulated GPU time per sequence step of one trial")
    args = p.parse_args()
    row = next((r for r in rows_mod.all_rows() if r.key == args.row), None)
    if row is None:
        raise SystemExit(f"no row {args.row!r}")
    torch.set_num_threads(1)

    run_trial(row, 0, budget=2 * 256, prefetch=False)  # warm up
    start = time.perf_counter()
    rec = run_trial(row, 0, budget=args.budget, prefetch=False)
    print(f"row {row.key}, {args.budget:,} sequences per trial")
    print(f"real CPU op, one thread (one core of --device cpu): "
          f"{rec['steps'] / (time.perf_counter() - start) / 1e6:.1f} M steps/s")  # fmt: skip

    net_mod.PaperNet._call = _simulated_call(args.gpu_ns)
    run_trial(row, 0, budget=2 * 256, prefetch=False)  # fill the statistics cache
    print(f"simulated GPU, {args.gpu_ns:.0f} ns per step per trial, trials as threads of one process:")
    print("| trials side by side | M steps/s | with no Python at all | share |")
    print("|---:|---:|---:|---:|")
    for threads in (int(t) for t in args.threads.split(",")):
        tasks = [(row, t, 0, args.budget) for t in range(threads)]
        start = time.perf_counter()
        # runner._worker: run_trial with the chunks generated in line, as runner._cuda_worker has them
        steps = sum(r["steps"] for _, r in runner._side_by_side(tasks, threads, runner._worker))
        rate = steps / (time.perf_counter() - start) / 1e6
        ideal = threads / args.gpu_ns * 1e3
        print(f"| {threads} | {rate:.1f} | {ideal:.1f} | {rate / ideal:.0%} |")


if __name__ == "__main__":
    main()
