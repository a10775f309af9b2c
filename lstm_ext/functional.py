"""One LSTM layer in one direction, as a function: the input projection plus the recurrence op.

    lstm_layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, config, *, w_hr=None, lengths=None, reverse=False,
               backend="fused") -> y (T, B, H_out), h_n (B, H_out), c_n (B, H)

Shapes (time-major, like nn.LSTM without ``batch_first``):

    x     (T, B, D)       input sequence
    w_ih  (G, D)          input weights; G = 4H for the 2000 cell (i, f, g, o), 3H for the 1997 cell (i, g, o)
    w_hh  (G, H_out)      recurrent weights
    b_ih, b_hh  (G,)      biases; either (or both) may be None
    h0    (B, H_out)      initial hidden state; None means zeros
    c0    (B, H)          initial cell state; None means zeros
    w_hr  (P, H)          optional projection (nn.LSTM's ``proj_size``): H_out = P, else H_out = H
    lengths (B,)          optional: row b runs steps 0 .. lengths[b]-1 (each in [0, T]); y is 0 past a row's
                          length, h_n/c_n are the state after its last valid step (h0/c0 if it is 0). An integer
                          tensor of any integer dtype, on the CPU or x's device, or a sequence of ints (as
                          ``pack_padded_sequence`` takes them); passed on to the ops as int64
    reverse               run each row backwards over its valid prefix (nn.LSTM's reverse direction): with
                          lengths, step t of row b reads x[lengths[b]-1-t, b]; y is returned in input order

How it maps onto ``lstm_ext.ops.recurrence`` (A, U, r0, s0): ``A = x w_ih^T + (b_ih + b_hh)`` for all steps at
once, ``U = w_hh``, ``r0 = h0``, ``s0 = c0``. Without autocast the fused backend runs the layer as one op,
``lstm_ext.ops.layer``, which computes A inside (one autograd node per layer, differentiable twice). With a
projection the recurrence runs on the unprojected cell outputs: ``U = w_hh @ w_hr`` (G, H), ``r0 = 0``, and the
projection ``y w_hr^T`` is applied to the output sequence afterwards; a given ``h0`` (already projected) enters
step 0's net input as ``a0 = h0 w_hh^T`` (``_projected_layer``). Under autocast the input projection and the
recurrence are separate calls, the recurrence ``ops.recurrence`` (differentiable once), and a given h0 is folded
into the first step, ``A[0] += h0 w_hh^T``; ``backend="reference"`` runs the same with its loop.

``backend="fused"`` uses the custom op, ``"reference"`` the plain-PyTorch loop ``lstm_ext.reference``, ``"auto"``
the fused op where it has a kernel for A's device and dtype (see :func:`fused_supports`) and no forward-mode AD is
under way (the fused op has no jvp) nor nested torch.func reverse-mode transforms (``grad(grad(...))``: its
second-order node cannot run there; but for the truncated gradient, which is differentiable once), else the
reference. On the CPU, float16 and bfloat16 (the layer's own dtype,
or CPU autocast's) count as float32 for both fused choices: the layer runs in float32 and its outputs are cast to
the half dtype.
No per-step Python, no ``.item()``/``.tolist()`` in here (torch.compile friendly).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch._C._functorch as _functorch
import torch.autograd.forward_ad as _fwAD
import torch.nn.functional as F

from . import ops, reference
from .config import CellConfig

__all__ = ["CONFIG_1997", "CONFIG_2000", "fused_supports", "lstm_layer", "lstm1997", "lstm2000", "reverse_padded"]

CONFIG_2000 = CellConfig(forget_gate=True)
"""The 2000 cell (Gers et al., nn.LSTM's cell): gates (i, f, g, o)."""

CONFIG_1997 = CellConfig(forget_gate=False)
"""The 1997 cell (Hochreiter & Schmidhuber, no forget gate): gates (i, g, o)."""

_BACKENDS = {"fused": ops.recurrence, "reference": reference.recurrence_ref}

# What the fused op has kernels for: CPU float32/float64 always; CUDA (float32/float64/float16/bfloat16) when the
# extension was built with it. Decided once at import, so the check is constant (also under torch.compile).
_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
_HAS_CUDA_KERNEL = torch._C._dispatch_has_kernel_for_dispatch_key("lstm_ext::recurrence_forward", "CUDA")


_CPU_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _cpu_half_dtype(x: torch.Tensor) -> torch.dtype | None:
    """The half dtype that a layer on the CPU returns but the fused CPU kernels compute in float32: x's own (a
    bfloat16 or float16 module), or CPU autocast's for float32 input; None where there is none."""
    if not x.is_cpu:
        return None
    if x.dtype in _CPU_HALF_DTYPES:
        return x.dtype
    if x.dtype == torch.float32 and torch.is_autocast_enabled("cpu"):
        dtype = torch.get_autocast_dtype("cpu")
        return dtype if dtype in _CPU_HALF_DTYPES else None
    return None


def fused_supports(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether the fused op (lstm_ext::recurrence_forward) has a kernel for this device and dtype."""
    device = torch.device(device)
    if device.type == "cpu":
        return dtype in _CPU_DTYPES
    return device.type == "cuda" and _HAS_CUDA_KERNEL and dtype in _CUDA_DTYPES


def _nested_reverse_transforms() -> bool:
    """Whether two or more of torch.func's reverse-mode transforms (grad, vjp, jacrev) are active: a derivative of a
    derivative inside torch.func (``grad(grad(f))``, ``jacrev(jacrev(f))``), which the fused layer's second-order node
    cannot take (it differentiates the reference with torch.autograd, csrc/layer.cpp LayerDoubleBackward)."""
    if _functorch.maybe_current_level() is None:  # no transform at all: the usual case, one cheap call
        return False
    stack = _functorch.get_interpreter_stack() or ()
    return sum(i.key() == _functorch.TransformType.Grad for i in stack) >= 2


def _auto_backend(A: torch.Tensor, truncate: bool = False) -> str:
    # fused_supports(A.device, A.dtype) without building a torch.device (this runs once per layer and direction).
    # Under forward-mode AD (a dual level is open: torch.autograd.forward_ad, torch.func.jvp / jacfwd / hessian) the
    # reference, which has a jvp; the fused ops have none. A module global, not the tensors' tangents: under
    # hessian (jacrev inside jacfwd) the layer sees grad's wrappers, whose tangent lives a level further in.
    # Inside nested reverse-mode transforms the reference too, but for the truncated gradient (the 1997 rule), whose
    # second derivative is an error on both backends and says so only on the fused one.
    if _fwAD._current_level >= 0 or (not truncate and _nested_reverse_transforms()):
        return "reference"
    if A.is_cpu:
        ok = A.dtype in _CPU_DTYPES
    else:
        ok = A.is_cuda and _HAS_CUDA_KERNEL and A.dtype in _CUDA_DTYPES
    return "fused" if ok else "reference"


def _as_lengths(lengths, B: int) -> torch.Tensor | None:
    """lengths as the ops take them, an int64 tensor of shape (B,), from an integer tensor of any integer dtype or a
    sequence of ints; a ValueError that names them otherwise. Their range, [0, T], is the ops' to check (the values:
    a host sync, which this keeps out of torch.compile's graph)."""
    if lengths is None:
        return None
    if not isinstance(lengths, torch.Tensor):
        try:
            lengths = torch.as_tensor(lengths)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"lengths must be an integer tensor or a sequence of ints, got {type(lengths).__name__}"
            ) from None
    if lengths.is_floating_point() or lengths.is_complex() or lengths.dtype == torch.bool:
        raise ValueError(f"lengths must hold integers, got {lengths.dtype}")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must have shape (B,) = ({B},), got {tuple(lengths.shape)}")
    return lengths.long()


def reverse_padded(x: torch.Tensor, lengths) -> torch.Tensor:
    """Reverse time (dim 0) of a time-major (T, B, ...) tensor, per row over its valid prefix.

    Without lengths this is ``x.flip(0)``. With lengths (B,) (as :func:`lstm_layer` takes them), row b's first
    lengths[b] steps are reversed in place (t -> lengths[b]-1-t) and its padding stays where it is. The map is its
    own inverse. A length outside [0, T] counts as the nearest end of that range here; lstm_layer passes the
    caller's lengths to the op, which rejects them.
    """
    if lengths is None:
        return x.flip(0)
    T = x.shape[0]
    t = torch.arange(T, device=x.device).unsqueeze(1)  # (T, 1)
    L = _as_lengths(lengths, x.shape[1]).to(x.device).clamp(0, T).unsqueeze(0)  # (1, B)
    idx = torch.where(t < L, L - 1 - t, t)  # (T, B)
    idx = idx.view(idx.shape + (1,) * (x.dim() - 2)).expand(x.shape)
    return x.gather(0, idx)


def _projected_layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, config: CellConfig, lengths):
    """A layer with nn.LSTM's projection (``proj_size``) as one layer op: y (T, B, P), h_n (B, P), c_n (B, H).

    The op runs on the unprojected cell outputs y_c with ``U = w_hh w_hr`` (G, H), from r0 = 0, and
    ``h = y_c w_hr^T`` afterwards. A given h0 (already projected, (B, P)) reaches only step 0's net input, as
    ``a0 = h0 w_hh^T``. Differentiable twice, as nn.LSTM (gradient penalties)."""
    a0 = None if h0 is None else h0 @ w_hh.t()
    y_c, r_T, c_n = ops.layer(x, w_ih, w_hh @ w_hr, b_ih, b_hh, None, c0, config, lengths, a0)
    h_n = r_T @ w_hr.t()  # without h0: a row of length 0 keeps r_T = r0 = 0, and h_n = 0 is its h0
    if h0 is not None:
        h_n = _h0_where_no_step(h_n, h0, lengths, x.shape[0])
    return y_c @ w_hr.t(), h_n, c_n


def _h0_where_no_step(h_n, h0, lengths, T):
    """A projected layer's h_n (B, P) with h0 in the rows that ran no step (length 0, or T = 0): its recurrence
    starts from the zero state of the unprojected outputs, not from h0."""
    if lengths is not None:
        return torch.where(lengths.to(h_n.device).unsqueeze(1) > 0, h_n, h0)
    return h0 if T == 0 else h_n


def lstm_layer(
    x: torch.Tensor,
    w_ih: torch.Tensor,
    w_hh: torch.Tensor,
    b_ih: torch.Tensor | None,
    b_hh: torch.Tensor | None,
    h0: torch.Tensor | None,
    c0: torch.Tensor | None,
    config: CellConfig,
    *,
    w_hr: torch.Tensor | None = None,
    lengths: torch.Tensor | Sequence[int] | None = None,
    reverse: bool = False,
    backend: str = "fused",
):
    """One layer, one direction: x (T, B, D) -> y (T, B, H_out), h_n (B, H_out), c_n (B, H).

    See the module docstring for shapes and semantics. Differentiable w.r.t. x, the weights, the biases,
    h0 and c0.
    """
    if backend not in ("fused", "reference", "auto"):
        raise ValueError(f"backend must be 'fused', 'reference' or 'auto', got {backend!r}")
    if not isinstance(config, CellConfig):
        raise TypeError(f"config must be a lstm_ext.CellConfig, got {type(config).__name__}")
    if x.dim() != 3:
        raise ValueError(f"x must be 3-D (T, B, D), got {x.dim()}-D")
    lengths = _as_lengths(lengths, x.shape[1])
    half = _cpu_half_dtype(x) if backend == "fused" or (backend == "auto" and _fwAD._current_level < 0) else None
    same_dtype = all(t is None or t.dtype == x.dtype for t in (w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr))
    if half is not None and same_dtype:  # (mixed dtypes take the path below, which says what is wrong)
        # On the CPU, float16/bfloat16 layers (and CPU autocast) run the fused kernels in float32, products and cell
        # state (as the CUDA kernels compute half types), and return their outputs in the half dtype; the
        # reference would run a Python loop in the half dtype (5x and 130x slower in the bfloat16 benchmarks at
        # B=32 H=128 and B=1 H=8, bench/results/cpu.md).
        def f32(t):
            return None if t is None else t.float()

        with torch.autocast("cpu", enabled=False):
            y, h_n, c_n = lstm_layer(f32(x), f32(w_ih), f32(w_hh), f32(b_ih), f32(b_hh), f32(h0), f32(c0), config,
                                     w_hr=f32(w_hr), lengths=lengths, reverse=reverse, backend=backend)  # fmt: skip
        return y.to(half), h_n.to(half), c_n.to(half)
    if reverse:
        x = reverse_padded(x, lengths)
    # The usual case, the layer op (the projection inside; one autograd node, differentiable twice): no autocast
    # (where the projection's dtype can differ from the recurrence's) and a fused kernel for x.
    if (
        backend != "reference"
        and not torch._C._is_any_autocast_enabled()
        and (backend == "fused" or _auto_backend(x, config.truncate) == "fused")
    ):
        if w_hr is None:
            y, h_n, c_n = ops.layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, config, lengths)
        else:
            y, h_n, c_n = _projected_layer(x, w_ih, w_hh, b_ih, b_hh, h0, c0, w_hr, config, lengths)
        return (reverse_padded(y, lengths) if reverse else y), h_n, c_n

    T, B = x.shape[0], x.shape[1]
    if h0 is None:
        h0 = x.new_zeros(B, w_hh.shape[1])
    if c0 is None:
        c0 = x.new_zeros(B, config.cells_from_gate_rows(w_hh.shape[0]))

    if b_ih is None:
        bias = b_hh
    elif b_hh is None:
        bias = b_ih
    else:
        bias = b_ih + b_hh
    A = F.linear(x, w_ih, bias)  # (T, B, G)
    if A.dtype != w_hh.dtype:  # autocast: run the recurrence in the dtype the input projection produced
        w_hh, h0, c0 = w_hh.to(A.dtype), h0.to(A.dtype), c0.to(A.dtype)
        if w_hr is not None:
            w_hr = w_hr.to(A.dtype)
    if backend == "auto":
        backend = _auto_backend(A, config.truncate)
    recurrence = _BACKENDS[backend]

    if w_hr is None:
        y, h_n, c_n = recurrence(A, w_hh, h0, c0, config, lengths)
    else:
        # The recurrence runs on the unprojected outputs y_c: a_t = A[t] + (y_{t-1} w_hr^T) w_hh^T
        # = A[t] + y_{t-1} (w_hh w_hr)^T, and the initial h0 (already projected) enters step 0 through A[0].
        # Rows of length 0 run no step: they get nothing folded in, and their h_n is h0 itself.
        has_steps = None if lengths is None else lengths.to(A.device).unsqueeze(1) > 0  # (B, 1)
        if T > 0:
            h0_in = h0 @ w_hh.t()
            if has_steps is not None:
                h0_in = torch.where(has_steps, h0_in, 0.0)
            # A with h0_in added to step 0: one copy, as a cat of A[:1] + h0_in and A[1:] would be, but without
            # the slice of T - 1 steps, whose contiguity check specialises T under dynamic shapes (torch.export)
            step0 = torch.zeros(1, dtype=torch.long, device=A.device)
            A = A.index_add(0, step0, h0_in.unsqueeze(0))
        y_c, r_T, c_n = recurrence(A, w_hh @ w_hr, h0.new_zeros(B, w_hr.shape[1]), c0, config, lengths)
        y = y_c @ w_hr.t()
        h_n = _h0_where_no_step(r_T @ w_hr.t(), h0, lengths, T)

    if reverse:
        y = reverse_padded(y, lengths)
    return y, h_n, c_n


def lstm2000(x, w_ih, w_hh, b_ih, b_hh, h0, c0, *, w_hr=None, lengths=None, reverse=False, backend="fused"):
    """:func:`lstm_layer` with the 2000 cell (forget gate; nn.LSTM's cell, gate rows (i, f, g, o), G = 4H)."""
    return lstm_layer(
        x, w_ih, w_hh, b_ih, b_hh, h0, c0, CONFIG_2000, w_hr=w_hr, lengths=lengths, reverse=reverse, backend=backend
    )


def lstm1997(x, w_ih, w_hh, b_ih, b_hh, h0, c0, *, w_hr=None, lengths=None, reverse=False, backend="fused"):
    """:func:`lstm_layer` with the 1997 cell (no forget gate; gate rows (i, g, o), G = 3H)."""
    return lstm_layer(
        x, w_ih, w_hh, b_ih, b_hh, h0, c0, CONFIG_1997, w_hr=w_hr, lengths=lengths, reverse=reverse, backend=backend
    )
