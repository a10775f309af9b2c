"""What the installed build says about itself (lstm_ext.build_info, `lstm-ext info`)."""

from __future__ import annotations

import subprocess
import sys

import torch

import lstm_ext


def test_cpu_kernels_run_on_torchs_openmp_pool_when_torch_has_one():
    """With an OpenMP torch the kernels must be built with OpenMP too: their own threads would compete with
    the pool's spinning workers after every torch op (the forward at B=32 H=128 ran 2x slower). A build
    directory configured without it (e.g. -DCMAKE_DISABLE_FIND_PACKAGE_OpenMP=ON) fails here."""
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        assert lstm_ext.build_info.CPU_OPENMP in (True, False)
        return
    assert lstm_ext.build_info.CPU_OPENMP, (
        "lstm_ext was built without OpenMP although torch uses it: delete build/ and reinstall with "
        "pip install --no-build-isolation --force-reinstall --no-deps ."
    )


def test_info_names_the_build():
    out = subprocess.run([sys.executable, "-m", "lstm_ext", "info"], capture_output=True, text=True, check=True,
                         cwd="/")  # fmt: skip
    assert f"built for torch {lstm_ext.build_info.TORCH_VERSION}" in out.stdout
    assert "CPU kernel threads: " + ("torch OpenMP pool" if lstm_ext.build_info.CPU_OPENMP else "own") in out.stdout


def test_the_package_is_marked_typed():
    """PEP 561: type checkers read the annotations of the installed package (lstm_ext/py.typed is in the wheel)."""
    from importlib.resources import files

    assert files("lstm_ext").joinpath("py.typed").is_file()
