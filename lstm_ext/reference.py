"""The oracle: the cell math of every configuration in plain PyTorch, one Python step at a time.

Slow on purpose and easy to read. The tests hold the fused ops to it (in float64), and users may call it
directly, e.g. to export a model or to check a result. Shapes follow the op contract (lstm_ext.ops):

    A  (T, B, G)   input part of the gate/cell net inputs, A = x W^T + b, for all steps
    U  (G, R)      recurrent weights
    r0 (B, R)      recurrent source before step 0
    s0 (B, C)      cell state before step 0
    lengths (B,)   optional int64: row b runs steps 0 .. lengths[b]-1 and then keeps its state;
                   its outputs y past lengths[b] are 0
"""

from __future__ import annotations

import torch

from .config import CellConfig


def squash_g(x: torch.Tensor, squash: str) -> torch.Tensor:
    """The cell-input squash g."""
    if squash == "tanh":
        return torch.tanh(x)
    if squash == "paper":
        return 2.0 * torch.tanh(0.5 * x)
    return torch.sigmoid(x)  # "sigmoid_identity"


def squash_h(s: torch.Tensor, squash: str) -> torch.Tensor:
    """The cell-output squash h."""
    if squash == "tanh":
        return torch.tanh(s)
    if squash == "paper":
        return torch.tanh(0.5 * s)
    return s  # "sigmoid_identity"


def cell_step_ref(a: torch.Tensor, s_prev: torch.Tensor, config: CellConfig):
    """One step of the cell from its net inputs.

    a (B, G) net inputs of gates and cells, s_prev (B, C) -> (y_c (B, C), s (B, C), gate activations
    [y_iota, (y_phi), y_omega], each (B, n_b))
    """
    G = a.shape[-1]
    C = config.cells_from_gate_rows(G)
    nb, S = C // config.block_size, config.block_size
    i = 0
    y_iota = torch.sigmoid(a[:, i : i + nb]); i += nb
    if config.forget_gate:
        y_phi = torch.sigmoid(a[:, i : i + nb]); i += nb
    g = squash_g(a[:, i : i + C], config.squash); i += C
    y_omega = torch.sigmoid(a[:, i : i + nb])

    def per_cell(gate):  # (B, n_b) -> (B, C): a block's gate multiplies each of its S cells
        return gate.repeat_interleave(S, dim=1)

    s = per_cell(y_iota) * g
    s = s + (per_cell(y_phi) * s_prev if config.forget_gate else s_prev)
    y_c = per_cell(y_omega) * squash_h(s, config.squash)
    gates = [y_iota, y_phi, y_omega] if config.forget_gate else [y_iota, y_omega]
    return y_c, s, gates


def recurrence_ref(A, U, r0, s0, config: CellConfig, lengths=None):
    """The recurrence over all T steps: A (T, B, G), U (G, R), r0 (B, R), s0 (B, C) -> y (T, B, C), r_T, s_T.

    float16/bfloat16 inputs are computed in float32 and cast back; other dtypes are kept.
    """
    dtype = A.dtype
    compute = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    A, U, r, s = (t.to(compute) for t in (A, U, r0, s0))
    T, B, _ = A.shape
    if lengths is not None:  # as the fused op checks them: a length past T would silently count as T
        if lengths.dtype != torch.int64 or lengths.shape != (B,):
            raise ValueError(f"lengths must be an int64 tensor of shape ({B},), got {lengths.dtype} {tuple(lengths.shape)}")
        if B and not bool(((lengths >= 0) & (lengths <= T)).all()):
            raise ValueError(f"lengths must lie in [0, T] = [0, {T}], got values in "
                             f"[{int(lengths.min())}, {int(lengths.max())}]")  # fmt: skip
    ys = []
    for t, A_t in enumerate(A.unbind(0)):  # unbind, not A[t]: its backward is one stack, not T full-size zeros
        r_in = r.detach() if config.truncate else r
        y_c, s_new, gates = cell_step_ref(A_t + r_in @ U.t(), s, config)
        r_new = y_c if config.feedback == "cells" else torch.cat(gates + [y_c], dim=1)
        if lengths is None:
            r, s = r_new, s_new
            ys.append(y_c)
        else:
            active = (t < lengths).to(A.device).unsqueeze(1)  # (B, 1)
            r = torch.where(active, r_new, r)
            s = torch.where(active, s_new, s)
            ys.append(torch.where(active, y_c, torch.zeros_like(y_c)))
    C = s0.shape[-1]
    y = torch.stack(ys) if ys else A.new_zeros(0, B, C)
    return y.to(dtype), r.to(dtype), s.to(dtype)
