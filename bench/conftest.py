"""pytest configuration of the benchmark suite (pytest-benchmark).

    pytest bench/ --benchmark-only -m quick                                    # the four issue targets (~25 s)
    pytest bench/ --benchmark-only --benchmark-json=bench/results/cpu.json     # the whole CPU grid (~5 min)
    python -m bench.report bench/results/cpu.json --out bench/results          # Markdown table + PNG plots

Run ``pytest`` (not ``python -m pytest``, which would put the source tree, with no compiled extension, first on
sys.path). Options: --bench-target-s, --bench-min-rounds, --bench-max-rounds, --bench-slow-peer-max-T,
--bench-all-peers, --bench-threads (see ``pytest bench/ --help``).
"""

from __future__ import annotations

import math
import os
import platform

import pytest
import torch

import benchlib
from benchlib import Options


def pytest_addoption(parser):
    g = parser.getgroup("lstm_ext bench")
    g.addoption("--bench-target-s", type=float, default=1.0,
                help="measured seconds per benchmark (rounds = this / one call, bounded) [1.0]")
    g.addoption("--bench-min-rounds", type=int, default=5, help="fewest timed rounds per benchmark [5]")
    g.addoption("--bench-max-rounds", type=int, default=200, help="most timed rounds per benchmark [200]")
    g.addoption("--bench-slow-peer-max-T", type=int, default=10000,
                help="run the per-step loops (reference, TorchScript) only up to this T; 0 = always [10000]")
    g.addoption("--bench-all-peers", action="store_true",
                help="run the per-step loops on every case (no T or backward-work limit; slow: hours)")
    g.addoption("--bench-threads", type=int, default=0,
                help="torch.set_num_threads for the run; 0 keeps torch's default [0]")


def pytest_configure(config):
    config.addinivalue_line("markers", "quick: the issue's four target cases (run with -m quick)")
    check_options(config)
    threads = config.getoption("--bench-threads", 0)
    if threads:
        torch.set_num_threads(threads)


def check_options(config) -> None:
    """A usage error (pytest's exit status 4) for option values no benchmark can run with, before any runs."""
    target_s = config.getoption("--bench-target-s", 1.0)
    min_rounds = config.getoption("--bench-min-rounds", 5)
    max_rounds = config.getoption("--bench-max-rounds", 200)
    problems = [
        (not math.isfinite(target_s) or target_s <= 0, f"--bench-target-s must be a finite number > 0, got {target_s}"),
        (min_rounds < 1, f"--bench-min-rounds must be >= 1, got {min_rounds}"),
        (max_rounds < min_rounds, f"--bench-max-rounds ({max_rounds}) must be >= --bench-min-rounds ({min_rounds})"),
        (config.getoption("--bench-slow-peer-max-T", 0) < 0, "--bench-slow-peer-max-T must be >= 0 (0: always)"),
        (config.getoption("--bench-threads", 0) < 0, "--bench-threads must be >= 0 (0: torch's default)"),
    ]
    for bad, message in problems:
        if bad:
            raise pytest.UsageError(message)


@pytest.fixture(scope="session")
def bench_opts(pytestconfig) -> Options:
    all_peers = pytestconfig.getoption("--bench-all-peers")
    return Options(
        target_s=pytestconfig.getoption("--bench-target-s"),
        min_rounds=pytestconfig.getoption("--bench-min-rounds"),
        max_rounds=pytestconfig.getoption("--bench-max-rounds"),
        slow_peer_max_T=0 if all_peers else pytestconfig.getoption("--bench-slow-peer-max-T"),
        slow_peer_max_bwd_work=0 if all_peers else benchlib.SLOW_PEER_MAX_BWD_WORK,
        threads=pytestconfig.getoption("--bench-threads"),
    )


def pytest_report_header(config):
    threads = torch.get_num_threads()
    cores = os.cpu_count() or 1
    line = f"lstm_ext bench: torch {torch.__version__}, {threads} torch threads on {cores} logical cores"
    if hasattr(os, "getloadavg"):
        load = os.getloadavg()[0]
        line += f", load average {load:.1f}"
        if threads > 1 and load > 0.5:
            line += (f"\nWARNING: the machine is busy (load {load:.1f}); with {threads} OpenMP threads a descheduled "
                     "thread stalls every parallel region (100x slower timings were seen). "
                     "Consider --bench-threads=1.")
    return line


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, with family/model/stepping when the name is generic."""
    fields = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break  # the first processor is enough
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
    except OSError:
        pass
    name = fields.get("model name") or platform.processor() or platform.machine()
    if not any(ch.isdigit() for ch in name) and "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')}, stepping {fields.get('stepping', '?')})"
    return name


def pytest_benchmark_update_machine_info(config, machine_info):
    import lstm_ext

    info = {
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "lstm_ext_version": getattr(lstm_ext, "__version__", "?"),
        "lstm_ext_cpu_avx2": getattr(lstm_ext.build_info, "CPU_AVX2", None),
        "lstm_ext_cpu_panel_kernel": torch.ops.lstm_ext.cpu_panel_kernel(),
        "lstm_ext_cpu_openmp": getattr(lstm_ext.build_info, "CPU_OPENMP", None),
        "lstm_ext_with_cuda": getattr(lstm_ext.build_info, "WITH_CUDA", None),
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    machine_info["lstm_ext_bench"] = info


# ---- results so far, after every benchmark (LSTM_EXT_BENCH_PARTIAL_JSON) ---------------------------------------
# pytest-benchmark writes --benchmark-json only when the session ends, so a run killed at a time limit (the lent
# GPU machine allows 10 minutes a command) would leave nothing. With LSTM_EXT_BENCH_PARTIAL_JSON=PATH the results
# so far are rewritten to PATH after each benchmark, in the same format (without the raw timings), so that
# `python -m bench.report PATH` reads them.


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    yield  # the benchmark fixture has finished its rounds and statistics by now
    path = os.environ.get("LSTM_EXT_BENCH_PARTIAL_JSON")
    if path:
        write_partial_json(item.config, path)


def write_partial_json(config, path: str) -> None:
    """The benchmarks finished so far, as pytest-benchmark's JSON (include_data=False), written atomically."""
    import json

    bs = getattr(config, "_benchmarksession", None)
    if bs is None:
        return
    done = [b for b in bs.benchmarks if b and not b.has_error]
    if not done:
        return
    if not hasattr(config, "_lstm_ext_partial_info"):
        commit_info = config.hook.pytest_benchmark_generate_commit_info(config=config)
        config._lstm_ext_partial_info = (bs.get_machine_info(), commit_info)
    machine_info, commit_info = config._lstm_ext_partial_info
    output = config.hook.pytest_benchmark_generate_json(
        config=config, benchmarks=done, include_data=False, machine_info=machine_info, commit_info=commit_info
    )
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(output, f, indent=1, default=str)
    os.replace(tmp, path)
