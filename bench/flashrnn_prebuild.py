"""Build FlashRNN's CUDA kernels for the benchmark grid's cases in parallel, before the benchmarks time them.

FlashRNN (the GPU peer of bench/test_bench_cuda.py) compiles a kernel with nvcc for every hidden size, batch size
and dtype, on first use; one after another, the grid's builds took over 400 s on an H100. Here each case's build
(benchlib.flashrnn_module: the fused kernel, else the alternating one, with the variants FlashRNN's autotuning
tries) runs in one of ``--jobs`` worker processes; the builds land in torch's extension cache, each under a name
of its own (benchlib.patch_flashrnn_builds), where the benchmark process then finds them. A case FlashRNN
refuses is reported here with its errors; its benchmark skips with the same reasons.

    python bench/flashrnn_prebuild.py [--jobs N]        # what scripts/gpu_check.sh runs before the FlashRNN group
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402


def build_keys(cases) -> list[benchlib.Case]:
    """One case per FlashRNN build: the CUDA cases with distinct (dtype, B, H), in the grid's order."""
    seen, out = set(), []
    for case in cases:
        key = (case.dtype, case.B, case.H)
        if case.device == "cuda" and key not in seen:
            seen.add(key)
            out.append(case)
    return out


def build(case: benchlib.Case) -> dict:
    """In a worker: FlashRNN's kernels for ``case``, built by one small forward+backward."""
    import torch

    start = time.perf_counter()
    m, errors = benchlib.flashrnn_module(case, torch.device("cuda"), getattr(torch, case.dtype))
    return {"case": f"{case.dtype} B={case.B} H={case.H}", "backend": m.backend if m is not None else None,
            "errors": errors, "seconds": time.perf_counter() - start}  # fmt: skip


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jobs", type=int, default=max(1, min(8, (os.cpu_count() or 2) // 2)),
                   help="worker processes, each building one case at a time (default: half the cores, at most 8)")
    args = p.parse_args(argv)
    if args.jobs < 1:
        p.error(f"--jobs must be >= 1, got {args.jobs}")
    try:
        import flashrnn  # noqa: F401
    except ImportError as e:
        print(f"flashrnn is not installed ({e}): nothing to build; its benchmark cases will skip")
        return 0
    keys = build_keys(benchlib.cuda_cases())
    # torch's builds run ninja with MAX_JOBS compilers (default: every core): share the cores among the workers
    os.environ.setdefault("MAX_JOBS", str(max(1, (os.cpu_count() or 2) // args.jobs)))
    print(f"building FlashRNN for {len(keys)} cases on {args.jobs} workers, MAX_JOBS={os.environ['MAX_JOBS']} each",
          flush=True)
    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        results = list(pool.map(build, keys))
    for r in results:
        what = f"built ({r['backend']})" if r["backend"] else "refused: " + "; ".join(r["errors"])
        print(f"{r['case']}: {what}, {r['seconds']:.0f} s")
    built = sum(r["backend"] is not None for r in results)
    print(f"{built} of {len(results)} cases built in {time.perf_counter() - start:.0f} s wall")
    return 0


if __name__ == "__main__":
    sys.exit(main())
