"""Load the compiled extension and check that it was built for the torch that runs it."""

from __future__ import annotations

import torch

REBUILD = "rebuild it against the installed torch with:  pip install --no-build-isolation --force-reinstall --no-deps ."


def _load():
    try:
        from . import _build_info
    except ImportError as e:
        raise ImportError(f"lstm_ext: the compiled extension is missing ({e}); {REBUILD}") from e
    built, running = _build_info.TORCH_VERSION, torch.__version__
    if built != running:
        raise ImportError(f"lstm_ext was built for torch {built} but torch {running} is installed; {REBUILD}")
    try:
        from . import _C  # noqa: F401  (registers the torch.ops.lstm_ext ops)
    except ImportError as e:
        raise ImportError(f"lstm_ext: the compiled extension failed to load ({e}); {REBUILD}") from e
    return _build_info


build_info = _load()
