"""scripts/torch_cuda_build_check.sh's guards, on the CPU: it stops with a clear message before any build when it
lacks what the GPU machine's build needs. Its build itself downloads torch's CUDA wheel (gigabytes), so it is run by
hand, not here."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "torch_cuda_build_check.sh"


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "WORK": str(tmp_path / "work"), **env}
    return subprocess.run(["bash", str(SCRIPT)], env=full_env, capture_output=True, text=True, timeout=120)


def _venv_with_this_python(tmp_path: Path) -> Path:
    """A stand-in venv whose python is the one running the tests (torch as installed here)."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    return venv


def test_without_nvcc_it_stops_and_names_cuda_home(tmp_path):
    proc = _run(tmp_path, CUDA_HOME=str(tmp_path / "no-cuda"), VENV=str(_venv_with_this_python(tmp_path)))
    assert proc.returncode == 2
    assert "set CUDA_HOME" in proc.stderr
    assert not (tmp_path / "work" / "src").exists()


def test_a_torch_without_cuda_stops_it_before_the_build(tmp_path):
    import torch

    if torch.version.cuda:
        pytest.skip("this torch has CUDA: the guard cannot be shown with it")
    cuda_home = tmp_path / "cuda"
    (cuda_home / "bin").mkdir(parents=True)
    (cuda_home / "bin" / "nvcc").write_text("#!/bin/sh\nexit 0\n")
    (cuda_home / "bin" / "nvcc").chmod(0o755)
    proc = _run(tmp_path, CUDA_HOME=str(cuda_home), VENV=str(_venv_with_this_python(tmp_path)))
    assert proc.returncode != 0
    assert "has no CUDA" in proc.stderr
    assert not (tmp_path / "work" / "src").exists()
