"""Load the compiled extension and check that it was built for the torch that runs it."""

from __future__ import annotations

import os

import torch

REBUILD = "rebuild it against the installed torch with:  pip install --no-build-isolation --force-reinstall --no-deps ."


def _load():
    try:
        from . import _build_info
    except ImportError as e:
        here = os.path.dirname(os.path.abspath(__file__))
        hint = ""
        if os.path.exists(os.path.join(here, os.pardir, "CMakeLists.txt")):
            hint = (f" You are importing the source tree {os.path.dirname(here)}, which holds no build: run from "
                    "another directory (or use `pytest`/`lstm-ext` rather than `python -m`), or")
        raise ImportError(f"lstm_ext: the compiled extension is missing ({e}).{hint} {REBUILD}") from e
    built, running = _build_info.TORCH_VERSION, torch.__version__
    if built != running:
        raise ImportError(f"lstm_ext was built for torch {built} but torch {running} is installed; {REBUILD}")
    try:
        from . import _C  # noqa: F401  (registers the torch.ops.lstm_ext ops)
    except ImportError as e:
        raise ImportError(f"lstm_ext: the compiled extension failed to load ({e}); {REBUILD}") from e
    if not torch.ops.lstm_ext.cpu_kernel_supported():
        raise ImportError(f"lstm_ext's CPU kernel was built for AVX2+FMA and this CPU lacks them; {REBUILD} "
                          "-C cmake.define.LSTM_EXT_CPU_AVX2=OFF")
    return _build_info


build_info = _load()
