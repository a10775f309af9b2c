"""lstm_ext: the original LSTM, fast and faithful.

Fused CPU (and CUDA) kernels for the 1997 cell (no forget gate) and the 2000 cell (forget gate),
nn.LSTM drop-ins ``LSTM1997`` and ``LSTM2000``, and the plain-PyTorch oracle ``lstm_ext.reference``.
"""

from ._build import build_info
from . import functional, ops
from .config import CellConfig
from .modules import LSTM1997, LSTM2000, convert_nn_lstm, lstm1997_state_dict_from_nn_lstm

__version__ = "0.1.0"
__all__ = [
    "CellConfig",
    "LSTM1997",
    "LSTM2000",
    "build_info",
    "convert_nn_lstm",
    "functional",
    "lstm1997_state_dict_from_nn_lstm",
    "ops",
    "__version__",
]
