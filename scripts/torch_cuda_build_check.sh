#!/usr/bin/env bash
# The GPU machine's build, on a machine without a GPU: builds lstm_ext with its CUDA kernels against the torch the
# lent GPUs run (torch 2.11.0+cu130, Python 3.12), through scripts/gpu_check.sh's own `build` stage, then runs the
# test suite under that torch (the CPU tests; the CUDA ones skip). Run it before spending GPU time on a change.
#
# What it checks that the CPU CI does not: that the torch-facing CUDA files (csrc/cuda/*.cpp, with torch's CUDA
# headers) compile, that the whole extension links against a CUDA torch, and that the Python side runs under that
# torch and Python. tests/test_cuda_compile.py compiles the kernels with nvcc alone, without torch. Nothing here
# runs a kernel: only a GPU can.
#
#   scripts/torch_cuda_build_check.sh                  # every test
#   scripts/torch_cuda_build_check.sh tests/test_build.py -x     # pytest's arguments, paths from the repository root
#
# Environment: VENV (default /tmp/lstm_ext_torch_cuda: made on first use, then reused), PYTHON_BIN (python3.12),
# TORCH_VERSION (2.11.0), CUDA_HOME (/usr/local/cuda: nvcc 13 and the CUDA runtime's headers and libraries), WORK
# (/tmp/lstm_ext_torch_cuda_check: the copy of the working tree that is built, and the logs).
#
# The first run downloads torch's CUDA wheel from PyPI with its nvidia-* packages: about 4.6 GB on disk, about a
# minute here. This is deliberate, in a venv of its own; never let pip resolve a bare `torch` in the main one.
#
# Two things torch's CMake needs on our CPU machines, set below: nvcc found under CUDA_HOME/bin (torch's FindCUDA
# takes the toolkit's root from nvcc's path, and /usr/local/bin/nvcc is a wrapper script), and NVRTC and cuBLAS's
# headers, which our toolkit lacks, taken from the nvidia-* packages that came with torch.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-/tmp/lstm_ext_torch_cuda}"
PYTHON_BIN="${PYTHON_BIN:-python3.12}"
TORCH_VERSION="${TORCH_VERSION:-2.11.0}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
WORK="${WORK:-/tmp/lstm_ext_torch_cuda_check}"
PY="$VENV/bin/python"

if ! "$PYTHON_BIN" -V >/dev/null 2>&1 && [ "$PYTHON_BIN" = python3.12 ] && command -v pyenv >/dev/null; then
  # our machines: Python 3.12 is a pyenv version that is not the global one
  PYTHON_BIN="$(pyenv root)/versions/$(pyenv versions --bare | grep '^3\.12' | tail -n 1)/bin/python3.12"
fi
if [ ! -x "$CUDA_HOME/bin/nvcc" ]; then
  echo "no nvcc at $CUDA_HOME/bin/nvcc: set CUDA_HOME to the CUDA toolkit" >&2
  exit 2
fi
[ -x "$PY" ] || "$PYTHON_BIN" -m venv "$VENV"
# (again after an install that was cut off)
if ! "$PY" -c "import torch, numpy, tqdm, matplotlib, pytest, hypothesis, pytest_benchmark, scikit_build_core" 2>/dev/null
then
  echo "installing into $VENV: torch==$TORCH_VERSION from PyPI (the CUDA build, about 4.6 GB) and the test tools"
  "$PY" -m pip install -q "torch==$TORCH_VERSION" numpy tqdm matplotlib pytest hypothesis pytest-benchmark \
    scikit-build-core ninja cmake
fi
"$PY" -c "import torch, sys; assert torch.version.cuda, 'torch ' + torch.__version__ + ' has no CUDA'; \
print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"

# The nvidia-* packages' include/ and the NVRTC library (layouts of the CUDA 13 wheels, nvidia/cu13/, and of the
# CUDA 12 ones, nvidia/<package>/).
read -r NV_INCLUDE NVRTC < <("$PY" - <<'EOF'
import glob, os, nvidia
dirs = [p for d in nvidia.__path__ for p in glob.glob(os.path.join(d, "*"))]
inc = ":".join(p + "/include" for p in dirs if os.path.isfile(os.path.join(p, "include", "cublas_v2.h")))
lib = sorted(p for d in dirs for p in glob.glob(os.path.join(d, "lib", "libnvrtc.so.*[0-9]")))
print(inc or "-", lib[0] if lib else "-")
EOF
)
if [ "$NV_INCLUDE" = "-" ] || [ "$NVRTC" = "-" ]; then
  echo "cuBLAS's headers or NVRTC not found among torch's nvidia-* packages in $VENV" >&2
  exit 2
fi

# The working tree as it is (committed or not), without the main checkout's build/ (a CPU build of the same wheel
# tag), built and tested in a copy of its own; the copy's build/ is kept, so that a second run builds incrementally.
mkdir -p "$WORK/src"
find "$WORK/src" -mindepth 1 -maxdepth 1 ! -name build -exec rm -rf {} +
(cd "$ROOT" && git ls-files -z -co --exclude-standard | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$WORK/src"

export PATH="$VENV/bin:$CUDA_HOME/bin:$PATH" CPATH="$NV_INCLUDE${CPATH:+:$CPATH}"
export CMAKE_ARGS="-DCUDA_nvrtc_LIBRARY=$NVRTC${CMAKE_ARGS:+ $CMAKE_ARGS}"
OUT="$WORK/out" WORK="$WORK/check" PYTHON="$PY" "$WORK/src/scripts/gpu_check.sh" build
echo "build log: $WORK/check/build.log"

# plain pytest from the copy's root, as gpu_check.sh runs it: tests/ goes first on sys.path, not the root, so the
# installed lstm_ext is imported, not the sources (testpaths: tests/ unless the arguments name tests)
cd "$WORK/src"
"$VENV/bin/pytest" -q -p no:cacheprovider "$@"
