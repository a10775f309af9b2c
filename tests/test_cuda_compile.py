"""The CUDA sources, checked on a machine without a GPU (design.md §5, issue 5).

- Every ``csrc/cuda/*.cu`` compiles with nvcc alone (no torch headers: the kernels are torch-free) for sm_75
  (T4) and sm_90 (H100/H200), each file in ONE nvcc call for both architectures, with the flags the CMake build
  gives nvcc. Skipped when no nvcc is found.
- ``-Xptxas -v``: every instantiation of the forward and backward kernels and of the paper nets' training kernel
  exists for both architectures and none spills registers (the table of registers per kernel is printed; ``pytest -s`` shows it).
- ``csrc/cuda/ops_cuda.cpp`` and ``paper_ops_cuda.cpp`` (the torch-facing files, built only against a CUDA torch) type-checks with g++
  -fsyntax-only against the installed torch's headers and the CUDA headers (a CPU torch lacks one generated
  header, c10/cuda/impl/cuda_cmake_macros.h: a stub stands in).
- The kernels' logic runs under a CPU emulation of the CUDA execution model (csrc/cuda/emu/: one host thread
  per CUDA thread, all CTAs at once) against the CPU kernels, for every cell configuration and every launch
  mode (one CTA per tile, CTA groups with the flag barrier, split reductions, more tiles than groups (side by side, in one round or several), U in
  global memory), in float64, float32, float16 and bfloat16, with every vector access checked for alignment (a
  GPU faults where a CPU does not); the paper nets' training kernel likewise against the CPU trainer. Needs only g++. It does not replace running on a GPU: no warps, no CUDA memory model, no
  device math.
- The launch planner, run on the host with an H100's limits (csrc/cuda/emu/plan_print.cpp), plans the CUDA
  issue's benchmark sizes as intended (tiles side by side in one round; 16-bit backward tiles on the tensor cores).
- ``bench/gpu_step_costs.cu`` (what a step's building blocks cost; ``scripts/gpu_check.sh micro``) builds for both.

Run with ``pytest tests/test_cuda_compile.py`` (about 3 minutes on 2 cores: nvcc and the emulation are slow).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"
CUDA_SOURCES = sorted((CSRC / "cuda").glob("*.cu"))
ARCHS = ("75", "90")


def _find_nvcc() -> str | None:
    found = shutil.which("nvcc")
    if found:
        return found
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvcc").exists():
            return str(Path(home) / "bin" / "nvcc")
    return None


NVCC = _find_nvcc()
GXX = shutil.which("g++")
needs_nvcc = pytest.mark.skipif(NVCC is None, reason="nvcc not found (set CUDA_HOME or put nvcc on PATH)")

# What CMake passes to nvcc for these files (CMAKE_CUDA_STANDARD 20, torch's --expt-* flags, Release -O3, and our
# -lineinfo).
NVCC_FLAGS = ["-std=c++20", "--expt-relaxed-constexpr", "--expt-extended-lambda", "-O3", "-DNDEBUG", "-lineinfo", "-I",
              str(CSRC)]

# The instantiations the launchers can pick: batch tiles 1, 2, 4, 8 (float64: up to 2).
DTYPES = {"f": "float32", "d": "float64", "6__half": "float16", "13__nv_bfloat16": "bfloat16"}
TILES = {"float32": (1, 2, 4, 8), "float64": (1, 2), "float16": (1, 2, 4, 8), "bfloat16": (1, 2, 4, 8)}
KERNEL_RE = re.compile(r"_ZN8lstm_ext4cuda6detail\d+(forward|backward)_kernelI(f|d|6__half|13__nv_bfloat16)Li(\d+)E")
PAPER_KERNEL_RE = re.compile(r"_ZN8lstm_ext4cuda6detail\d+(paper_train)_kernelI(f|d)E")  # one CTA per net: tile 1


def _parse_ptxas(output: str) -> dict:
    """{(direction, dtype, tile, arch): {"registers", "spill_stores", "spill_loads", "stack"}} from -Xptxas -v."""
    result = {}
    current = None
    for line in output.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for 'sm_(\d+)'", line)
        if m:
            k = KERNEL_RE.search(m.group(1))
            p = PAPER_KERNEL_RE.search(m.group(1))
            if k:
                current = (k.group(1), DTYPES[k.group(2)], int(k.group(3)), m.group(2))
            elif p:
                current = (p.group(1), DTYPES[p.group(2)], 1, m.group(2))
            else:
                current = None
            if current:
                result[current] = {}
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            result[current].update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            result[current]["registers"] = int(m.group(1))
    return result


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    """{source name: (returncode, nvcc output)}: each .cu compiled once, both architectures in one call."""
    out_dir = tmp_path_factory.mktemp("nvcc")
    results = {}
    for src in CUDA_SOURCES:
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
        cmd = [NVCC, *NVCC_FLAGS, *gencode, "-Xptxas", "-v", "-c", str(src), "-o", str(out_dir / (src.stem + ".o"))]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        results[src.name] = (proc.returncode, proc.stdout + proc.stderr)
    return results


@pytest.fixture(scope="module")
def kernels(compiled):
    table = {}
    for _, output in compiled.values():
        table.update(_parse_ptxas(output))
    return table


def _table(kernels: dict) -> str:
    lines = [f"{'kernel':<9} {'dtype':<9} {'tile':>4} {'arch':>5} {'regs':>5} {'spill st/ld':>12} {'stack':>6}"]
    for (direction, dtype, tile, arch), v in sorted(kernels.items()):
        lines.append(
            f"{direction:<9} {dtype:<9} {tile:>4} {'sm_' + arch:>5} {v.get('registers', -1):>5} "
            f"{v.get('spill_stores', -1):>5}/{v.get('spill_loads', -1):<6} {v.get('stack', -1):>6}"
        )
    return "\n".join(lines)


def test_there_are_cuda_sources():
    names = {p.name for p in CUDA_SOURCES}
    assert {"recurrence_fwd.cu", "recurrence_bwd.cu", "paper_train.cu"} <= names, names


@needs_nvcc
@pytest.mark.parametrize("source", [p.name for p in CUDA_SOURCES])
def test_cuda_source_compiles(compiled, source):
    rc, output = compiled[source]
    assert rc == 0, f"nvcc failed on {source}:\n{output[-6000:]}"
    assert "error" not in output.lower().replace("0 errors", ""), output[-6000:]


@needs_nvcc
def test_every_kernel_instantiated_for_both_archs(compiled, kernels):
    want = {
        (direction, dtype, tile, arch)
        for direction in ("forward", "backward")
        for dtype, tiles in TILES.items()
        for tile in tiles
        for arch in ARCHS
    } | {("paper_train", dtype, 1, arch) for dtype in ("float32", "float64") for arch in ARCHS}
    missing = sorted(want - set(kernels))
    assert not missing, f"kernels missing from the ptxas output: {missing}"


@needs_nvcc
def test_no_register_spills(compiled, kernels):
    table = _table(kernels)
    print("\nptxas -v, per kernel:\n" + table)
    incomplete = [k for k, v in kernels.items() if not {"registers", "spill_stores", "spill_loads"} <= set(v)]
    assert not incomplete, f"could not read ptxas -v for {incomplete}"
    spilling = [k for k, v in kernels.items() if v["spill_stores"] or v["spill_loads"]]
    assert not spilling, f"register spills in {spilling}\n{table}"


@needs_nvcc
def test_step_costs_benchmark_builds(tmp_path):
    """bench/gpu_step_costs.cu (the per-step building blocks, run by scripts/gpu_check.sh micro on a GPU) compiles
    and links for both architectures, its cluster kernels included for sm_90."""
    src = ROOT / "bench" / "gpu_step_costs.cu"
    gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in ARCHS]
    cmd = [NVCC, "-std=c++20", "--expt-relaxed-constexpr", "-O3", "-I", str(CSRC), *gencode, "-Xptxas", "-v",
           str(src), "-o", str(tmp_path / "step_costs")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "step_costs").exists()
    for kernel in ("cluster_barrier_steps", "dsmem_exchange_steps", "group_barrier_steps", "l2_exchange_steps"):
        assert re.search(rf"Compiling entry function '\S*{kernel}\S*' for 'sm_90'", proc.stderr), kernel


def _cuda_include() -> Path | None:
    for base in ([Path(NVCC).resolve().parents[1]] if NVCC else []) + [Path("/usr/local/cuda")]:
        if (base / "include" / "cuda_runtime.h").exists():
            return base / "include"
    return None


@pytest.mark.skipif(GXX is None, reason="g++ not found")
@pytest.mark.parametrize("source", ["ops_cuda.cpp", "paper_ops_cuda.cpp"])
def test_torch_facing_file_type_checks(tmp_path, source):
    torch = pytest.importorskip("torch")
    import sysconfig

    cuda_inc = _cuda_include()
    if cuda_inc is None:
        pytest.skip("no CUDA headers (cuda_runtime.h) found")
    torch_inc = Path(torch.__file__).parent / "include"
    stub = tmp_path / "stub"
    if not (torch_inc / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").exists():
        (stub / "c10" / "cuda" / "impl").mkdir(parents=True)
        (stub / "c10" / "cuda" / "impl" / "cuda_cmake_macros.h").write_text("#pragma once\n")
    cmd = [
        GXX, "-std=c++20", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-unused-parameter",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "-I", str(CSRC), "-isystem", str(stub), "-isystem", str(torch_inc),
        "-isystem", str(torch_inc / "torch" / "csrc" / "api" / "include"), "-isystem", str(cuda_inc),
        "-isystem", sysconfig.get_paths()["include"],
        str(CSRC / "cuda" / source),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]


def _emulation_check(tmp_path: Path, program: str, cpu_source: str) -> str:
    """Builds csrc/cuda/emu/<program>.cpp with the CPU kernel it checks against, runs its CI subset; its stdout."""
    exe = tmp_path / program
    build = [
        GXX, "-std=c++20", "-O1", "-pthread", "-I", str(CSRC),
        str(CSRC / "cuda" / "emu" / f"{program}.cpp"), str(CSRC / "cpu" / cpu_source), "-o", str(exe),
    ]
    proc = subprocess.run(build, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run = subprocess.run([str(exe), "ci"], capture_output=True, text=True, timeout=600)
    print("\n" + run.stdout[-2000:])
    assert run.returncode == 0, (run.stdout + run.stderr)[-6000:]
    return run.stdout


@pytest.mark.skipif(GXX is None, reason="g++ not found")
def test_kernels_under_cpu_emulation(tmp_path):
    """The kernels' code (recurrence_kernels.cuh), run by host threads, against the CPU kernels (emu/emu_check.cpp),
    in every storage type the CUDA ops take (the 16-bit ones within one unit in the last place)."""
    out = _emulation_check(tmp_path, "emu_check", "recurrence_cpu.cpp")
    for dtype in ("f64", "f32", "f16", "bf16"):
        match = re.search(rf"^{dtype}: (\d+) cases$", out, re.MULTILINE)
        assert match and int(match.group(1)) > 0, f"no {dtype} case ran:\n{out[-2000:]}"


@pytest.mark.skipif(GXX is None, reason="g++ not found")
def test_paper_kernel_under_cpu_emulation(tmp_path):
    """The paper nets' training kernel (paper_train_kernel.cuh), run by host threads, against the CPU trainer
    (emu/paper_emu_check.cpp): every net variant, both dtypes, state in shared or global memory."""
    out = _emulation_check(tmp_path, "paper_emu_check", "paper_train.cpp")
    assert "112 cases, 0 failures" in out, out[-2000:]


@pytest.mark.skipif(GXX is None, reason="g++ not found")
def test_h100_plans_of_the_benchmark_sizes(tmp_path):
    """The planner, run on the host with an H100's limits (emu/plan_print.cpp), for the CUDA issue's sizes: at H=1024
    a group runs all its batch tiles side by side in one round, forward and backward (the H100 run's backward had
    fp32 B=256 run 128 tiles one after another, a group barrier per tile and step), and the 16-bit backward runs
    tiles of 8 rows on the tensor cores (its operand held only rounded: the float copy did not fit beside U); groups
    of 2 to 16 CTAs are planned as thread-block clusters, exchanging r_t / da_t in shared memory."""
    exe = tmp_path / "plan_print"
    proc = subprocess.run([GXX, "-std=c++20", "-O1", "-I", str(CSRC), str(CSRC / "cuda" / "emu" / "plan_print.cpp"),
                           "-o", str(exe)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60, check=True).stdout
    print("\n" + out)
    plans = {}
    for line in out.splitlines():
        dtype, B, H, direction, *fields = line.split()
        plans[dtype, int(B[2:]), int(H[2:]), direction] = {k: int(v) for k, v in (f.split("=") for f in fields)}
    assert len(plans) == 18 and all(p["ok"] == 1 for p in plans.values()), out
    for key in [(dtype, B, 1024, d) for dtype, B in (("float32", 256), ("bfloat16", 64)) for d in ("fwd", "bwd")]:
        p = plans[key]
        assert p["n_groups"] < p["n_tiles"] and p["rounds"] == 1, (key, p)
    for key in [("bfloat16", 16, 1024, "bwd"), ("bfloat16", 64, 1024, "bwd"), ("float16", 16, 768, "bwd")]:
        assert plans[key]["bt"] == 8 and plans[key]["mma"] == 1, (key, plans[key])
    # groups of 2 to 16 CTAs as thread-block clusters (the cluster barrier), larger ones with the flag barrier; r_t
    # or da_t through distributed shared memory where that layout fits (not at bf16 B=64 H=512: 221 KB already)
    for key, p in plans.items():
        assert p["cluster"] == int(1 < p["group"] <= 16), (key, p)
        assert p["dsmem"] <= p["cluster"], (key, p)
    for dtype, B, H in [("float32", 64, 128), ("float32", 64, 256), ("bfloat16", 16, 256)]:
        for direction in ("fwd", "bwd"):
            assert plans[dtype, B, H, direction]["dsmem"] == 1, (dtype, B, H, direction, plans[dtype, B, H, direction])


@pytest.mark.skipif(GXX is None, reason="g++ not found")
def test_emulated_16bit_conversions_match_torch(tmp_path):
    """The emulation's __float2half_rn / __float2bfloat16_rn (emu/emulate.h) round as torch does (to nearest
    even, overflow to inf, subnormals, ties), bit for bit: the 16-bit checks above compare both sides on inputs
    rounded by them, so a wrong rounding would pass those unseen."""
    import numpy as np
    import torch

    src = tmp_path / "conv.cpp"
    src.write_text(
        '#include "cuda/emu/emulate.h"\n#include <cstdio>\n#include <cstdlib>\n'
        "int main(int argc, char** argv) {\n  for (int i = 1; i < argc; ++i) {\n"
        "    const float x = std::strtof(argv[i], nullptr);\n"
        '    std::printf("%u %u\\n", __float2half_rn(x).bits, __float2bfloat16_rn(x).bits);\n  }\n}\n'
    )
    exe = tmp_path / "conv"
    build = subprocess.run([GXX, "-std=c++20", "-O1", "-pthread", "-I", str(CSRC), str(src), "-o", str(exe)],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    rng = np.random.default_rng(0)
    edges = [0.0, -0.0, 65504.0, 65519.0, 65520.0, 1e6, 3.4e38, -3.4e38, 1e-8, 5.96e-8, 2.98e-8, 1.0 + 2**-11,
             1.0 + 3 * 2**-11, 1.0 + 2**-8, 1.0 + 3 * 2**-8]  # fmt: skip
    xs = np.concatenate([
        (rng.standard_normal(1000) * 10.0 ** rng.integers(-8, 6, 1000)).astype(np.float32),
        np.array(edges, dtype=np.float32),
    ])  # fmt: skip
    run = subprocess.run([str(exe), *[repr(float(x)) for x in xs]], capture_output=True, text=True, timeout=60)
    got = [tuple(int(v) for v in line.split()) for line in run.stdout.splitlines()]
    t = torch.from_numpy(xs)
    want = list(zip(t.to(torch.float16).view(torch.int16).numpy().astype(np.uint16).tolist(),
                    t.to(torch.bfloat16).view(torch.int16).numpy().astype(np.uint16).tolist()))  # fmt: skip
    bad = [(float(x), g, w) for x, g, w in zip(xs, got, want) if g != w]
    assert len(got) == len(xs) and not bad, bad[:5]
