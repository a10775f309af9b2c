"""lstm_ext: the original LSTM, fast and faithful.

Fused CPU (and CUDA) kernels for the 1997 cell (no forget gate) and the 2000 cell (forget gate),
nn.LSTM drop-ins ``LSTM1997`` and ``LSTM2000``, and the plain-PyTorch oracle ``lstm_ext.reference``.
"""

from ._build import build_info
from . import ops
from .config import CellConfig

__version__ = "0.1.0"
__all__ = ["CellConfig", "build_info", "ops", "__version__"]
