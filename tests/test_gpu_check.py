"""scripts/gpu_check.sh's plumbing, on the CPU: what comes back from a lent GPU machine must fit its limits.

The device tool returns at most 8 files from $OUT and kills a command after 10 minutes, so the script keeps its
logs outside $OUT, refreshes a few files there after every stage (summary, environment, benchmark JSON and table,
one archive of the logs) and, with DEADLINE_S, skips what cannot start in time. Its GPU stages cannot run here;
the bench stage with a CPU selection (LSTM_EXT_BENCH_ARGS) exercises the same paths.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
MAX_FILES_BACK = 8


def _run(tmp_path: Path, *stages: str, **env: str) -> tuple[subprocess.CompletedProcess, Path]:
    out, work = tmp_path / "out", tmp_path / "work"
    # not as an xdist worker: pytest-benchmark disables benchmarks when it sees PYTEST_XDIST_WORKER
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_XDIST")}
    full_env.update(OUT=str(out), WORK=str(work), **env)
    proc = subprocess.run(["bash", str(SCRIPT), *stages], env=full_env, capture_output=True, text=True, timeout=600)
    return proc, out


def test_bench_stage_returns_few_files_with_the_results(tmp_path):
    proc, out = _run(
        tmp_path,
        "bench",
        LSTM_EXT_BENCH_ARGS="bench/test_bench_cpu.py -k float32-B1-H8-D2-T100-fwdbwd-LSTM --bench-target-s 0.05",
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= MAX_FILES_BACK, files
    assert {"summary.txt", "env.txt", "gpu.json", "gpu.md", "logs.tar.gz"} <= set(files), files
    bench = json.loads((out / "gpu.json").read_text())
    names = sorted(b["name"] for b in bench["benchmarks"])
    assert names == [
        "test_lstm[cpu-float32-B1-H8-D2-T100-fwdbwd-LSTM1997]",
        "test_lstm[cpu-float32-B1-H8-D2-T100-fwdbwd-LSTM2000]",
    ]
    summary = (out / "summary.txt").read_text()
    assert "PASS  bench-custom" in summary and "all passed" in summary, summary
    with tarfile.open(out / "logs.tar.gz") as tar:
        logs = {Path(n).name for n in tar.getnames()}
    assert {"bench_custom.log", "bench_custom.json", "gpu.md", "env.txt"} <= logs, logs


def test_a_stage_that_cannot_start_before_the_deadline_is_skipped_and_fails(tmp_path):
    proc, out = _run(tmp_path, "bench", DEADLINE_S="5", LSTM_EXT_BENCH_ARGS="bench/test_bench_cpu.py")
    assert proc.returncode != 0
    summary = (out / "summary.txt").read_text()
    assert "SKIP  bench-custom" in summary and "SOME FAILED" in summary, summary
    assert not (out / "gpu.json").exists()


def test_failing_cuda_tests_are_run_again_without_clusters(tmp_path):
    """The test stage with a stand-in pytest (first on PATH) whose CUDA tests fail unless LSTM_EXT_CUDA_CLUSTER=0:
    the stage fails, and its summary says the same tests pass without thread-block clusters."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pytest"
    fake.write_text('#!/usr/bin/env bash\necho "pytest $* cluster=${LSTM_EXT_CUDA_CLUSTER-unset}"\n'
                    'if [ "$1" = tests/test_cuda.py ] && [ "${LSTM_EXT_CUDA_CLUSTER-}" != 0 ]; then exit 1; fi\n')
    fake.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    proc, out = _run(tmp_path, "test", PATH=path, PYTHON="true")
    summary = (out / "summary.txt").read_text()
    assert proc.returncode != 0
    assert "FAIL  tests-cuda " in summary and "PASS  tests-cuda-noclusters " in summary, summary
    assert "PASS  tests-rest " in summary, summary
    proc, out = _run(tmp_path, "test", PATH=path, PYTHON="true", LSTM_EXT_CUDA_CLUSTER="0")  # clusters already off
    assert "tests-cuda-noclusters" not in (out / "summary.txt").read_text()


@pytest.mark.parametrize("stage", ["build", "test", "sanitize", "bench", "repro"])
def test_every_stage_is_documented(stage):
    head = SCRIPT.read_text().split("set -uo pipefail")[0]
    assert f"#   {stage} " in head


def test_gpu_profile_script_times_the_ops_on_the_cpu(tmp_path):
    """scripts/gpu_profile.py (the profile stage's timing table, and the op call it gives ncu) on the CPU kernels."""
    import sys

    script = str(ROOT / "scripts" / "gpu_profile.py")
    args = ["--device", "cpu", "--cases", "float32:1:8", "float64:3:16", "--T", "10", "30", "--calls", "2"]
    proc = subprocess.run([sys.executable, script, *args], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| float")]
    assert [r.split("|")[1:4] for r in rows] == [[" float32 ", " 1 ", " 8 "], [" float64 ", " 3 ", " 16 "]]
    proc = subprocess.run([sys.executable, script, "--device", "cpu", "--ncu", "float32:2:8:5:bwd"], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0 and "ran bwd torch.float32 B=2 H=8 T=5 twice" in proc.stdout, proc.stderr[-3000:]


def test_flashrnn_kernels_are_built_in_parallel_before_their_benchmarks(tmp_path):
    """The bench stage's groups, with a stand-in pytest and python that log their calls: the fused ops first,
    then the per-step loops, then bench/flashrnn_prebuild.py, then FlashRNN's benchmarks."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    for name in ("pytest", "python"):
        fake = bin_dir / name
        fake.write_text(f'#!/usr/bin/env bash\necho "{name} $*" >>{calls}\n')
        fake.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    proc, out = _run(tmp_path, "bench", PATH=path, PYTHON=str(bin_dir / "python"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = calls.read_text().splitlines()
    selections = [ln.split(" -k ")[1].split(" --")[0] for ln in lines if ln.startswith("pytest ")]
    assert selections == ["nn.LSTM or LSTM2000 or LSTM1997", "ref2000 or jit2000 or ref1997 or jit1997", "flashrnn"]
    assert lines.index("python bench/flashrnn_prebuild.py") == len(lines) - 2, lines  # just before FlashRNN's
    assert "PASS  bench-flashrnn-build" in (out / "summary.txt").read_text()


def test_the_flashrnn_builds_outcome_goes_into_the_summary(tmp_path):
    """What bench/flashrnn_prebuild.py reports (here a stand-in python's lines) reaches summary.txt."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "pytest").write_text("#!/usr/bin/env bash\nexit 0\n")
    (bin_dir / "python").write_text('#!/usr/bin/env bash\necho "float16 B=16 H=768: refused: cuda_fused: E"\n'
                                     'echo "20 of 21 cases built in 150 s wall"\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    path = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    _, out = _run(tmp_path, "bench", PATH=path, PYTHON=str(bin_dir / "python"))
    summary = (out / "summary.txt").read_text()
    assert "20 of 21 cases built in 150 s wall" in summary and "H=768: refused" in summary, summary
