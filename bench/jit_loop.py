"""The reference per-step LSTM loop, written so that ``torch.jit.script`` can compile it.

The same computation as ``lstm_ext.reference.recurrence_ref`` for the standard configuration
(``block_size=1``, ``feedback="cells"``, ``squash="tanh"``, no truncation), the one the modules use:

    A = x W_ih^T + (b_ih + b_hh)              all steps at once
    a_t = A[t] + h_{t-1} W_hh^T               one matmul per step
    2000 cell (gates i, f, g, o):  c_t = f * c_{t-1} + i * g
    1997 cell (gates i, g, o):     c_t =     c_{t-1} + i * g
    h_t = o * tanh(c_t)

``ScriptedLoopLSTM`` wraps it as an nn.LSTM-shaped module (single layer, unidirectional, time-major) so that the
benchmark can time it with the same ``y, _ = m(x); y.sum().backward()`` as every other peer.
"""

import warnings
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn


def loop_2000(A: Tensor, U: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    ys: List[Tensor] = []
    Ut = U.t()
    for A_t in A.unbind(0):  # unbind, not A[t]: a backward linear in T, as in lstm_ext.reference
        a = A_t + torch.mm(h, Ut)
        gates = a.chunk(4, 1)
        i = torch.sigmoid(gates[0])
        f = torch.sigmoid(gates[1])
        g = torch.tanh(gates[2])
        o = torch.sigmoid(gates[3])
        c = f * c + i * g
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys), h, c


def loop_1997(A: Tensor, U: Tensor, h: Tensor, c: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    ys: List[Tensor] = []
    Ut = U.t()
    for A_t in A.unbind(0):  # unbind, not A[t]: a backward linear in T, as in lstm_ext.reference
        a = A_t + torch.mm(h, Ut)
        gates = a.chunk(3, 1)
        i = torch.sigmoid(gates[0])
        g = torch.tanh(gates[1])
        o = torch.sigmoid(gates[2])
        c = c + i * g
        h = o * torch.tanh(c)
        ys.append(h)
    return torch.stack(ys), h, c


class ScriptedLoopLSTM(nn.Module):
    """One layer, one direction, time-major ``(T, B, D)``; ``forward(x, hx=None) -> (y, (h_n, c_n))``."""

    forget_gate: bool

    def __init__(self, weight_ih: Tensor, weight_hh: Tensor, bias_ih: Tensor, bias_hh: Tensor, forget_gate: bool):
        super().__init__()
        self.weight_ih = nn.Parameter(weight_ih.detach().clone())
        self.weight_hh = nn.Parameter(weight_hh.detach().clone())
        self.bias_ih = nn.Parameter(bias_ih.detach().clone())
        self.bias_hh = nn.Parameter(bias_hh.detach().clone())
        self.forget_gate = forget_gate
        self.hidden_size = weight_hh.shape[1]

    def forward(self, x: Tensor, hx: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tuple[Tensor, Tensor]]:
        B = x.size(1)
        if hx is None:
            h0 = torch.zeros(B, self.hidden_size, dtype=x.dtype, device=x.device)
            c0 = torch.zeros(B, self.hidden_size, dtype=x.dtype, device=x.device)
        else:
            h0 = hx[0][0]
            c0 = hx[1][0]
        A = torch.nn.functional.linear(x, self.weight_ih, self.bias_ih + self.bias_hh)
        if self.forget_gate:
            y, h, c = loop_2000(A, self.weight_hh, h0, c0)
        else:
            y, h, c = loop_1997(A, self.weight_hh, h0, c0)
        return y, (h.unsqueeze(0), c.unsqueeze(0))


def scripted_from(module: nn.Module, forget_gate: bool) -> torch.jit.ScriptModule:
    """A scripted loop with the weights of a single-layer LSTM module (nn.LSTM, LSTM2000 or LSTM1997)."""
    m = ScriptedLoopLSTM(module.weight_ih_l0, module.weight_hh_l0, module.bias_ih_l0, module.bias_hh_l0, forget_gate)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.* is deprecated", category=DeprecationWarning)
        return torch.jit.script(m)
