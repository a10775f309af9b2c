"""The 1997 paper's networks (HS97 Sec. 4-5, App. A.1) and their on-line training on the fused op.

A paper net: ``I`` inputs -> one layer of ``n_blocks`` memory-cell blocks of ``block_size`` cells
(a block's input and output gates, and forget gate in the 2000 cell, are shared by its cells) ->
``O`` output units (logistic, as in the paper; ``PaperNetSpec.output="linear"`` is an option of ours).
Weights (the layout of ``csrc/cpu/paper_train.h``)::

    Wh (H, K)   hidden rows  [iota (n_b), (phi (n_b)), z (C), (omega (n_b))]
                source cols  [x_t (I), r_{t-1} (R), bias], r = [y_iota, (y_phi), (y_omega), y_c]
    Wo (O, Ko)  output cols  [y_c (C), x_t (I), bias]      (the output at step t sees y_c of step t)

Which of these connections exist is a 0/1 mask per matrix (``PaperNetSpec.masks``), built from the
paper's connectivity code and bias code (HS97 Table 10):

- connectivity ``"F"``: gates and cells see the inputs and all gates and all cells of the previous
  step; ``"B"`` (Exps 2a/2b): each layer sees all layers below it -- inputs only, plus the CEC, and
  the outputs also see the inputs; ``"cells"`` (the 2000 paper's CERG): gates and cells see the
  inputs and the cell outputs, not the gates.
- bias: ``"none"``, ``"ga"`` (gates), ``"b1"`` (gates and cells), ``"all"`` (gates, cells, outputs),
  ``"go"`` (gates and outputs; CERG).

Training runs in ``torch.ops.lstm_ext.paper_train``: one call trains on a chunk of sequences, one
after another, with the paper's truncated gradient (RTRL-style sensitivities, App. A.1) and plain
gradient descent on 1/2 squared error. ``forward_ref`` is the same network in plain PyTorch with
autograd (truncated by ``detach``, or the full gradient), the oracle of the tests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import torch

from .. import ops as _ops_module  # noqa: F401  (registers the ops and their fakes)
from ..reference import squash_g, squash_h

CONNECTIVITIES = ("F", "B", "cells")
# bias code -> (gates, cells, outputs) have a bias
BIAS_CODES = {
    "none": (False, False, False),
    "ga": (True, False, False),
    "b1": (True, True, False),
    "all": (True, True, True),
    "go": (True, False, True),
}
UPDATES = ("sequence", "step")
GRADIENTS = ("truncated", "full")
OUTPUTS = ("logistic", "linear")


@dataclass(frozen=True)
class PaperNetSpec:
    """The topology of one paper network."""

    inputs: int
    outputs: int
    n_blocks: int
    block_size: int = 1
    connectivity: str = "F"
    bias: str = "all"
    output_gate: bool = True
    forget_gate: bool = False
    output_shortcut: bool | None = None  # outputs see the inputs; default: only for connectivity "B"
    squash: str = "paper"
    output: str = "logistic"  # the output units: the paper's logistic sigmoid, or "linear" (y = net input)

    def __post_init__(self):
        for name in ("inputs", "outputs", "n_blocks", "block_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"PaperNetSpec.{name} must be a positive int, got {v!r}")
        if self.connectivity not in CONNECTIVITIES:
            raise ValueError(f"PaperNetSpec.connectivity must be one of {CONNECTIVITIES}, got {self.connectivity!r}")
        if self.bias not in BIAS_CODES:
            raise ValueError(f"PaperNetSpec.bias must be one of {tuple(BIAS_CODES)}, got {self.bias!r}")
        if self.squash not in ("tanh", "paper", "sigmoid_identity"):
            raise ValueError(f"PaperNetSpec.squash must be 'tanh', 'paper' or 'sigmoid_identity', got {self.squash!r}")
        if self.output not in OUTPUTS:
            raise ValueError(f"PaperNetSpec.output must be one of {OUTPUTS}, got {self.output!r}")
        if self.output_shortcut is None:
            object.__setattr__(self, "output_shortcut", self.connectivity == "B")

    # sizes
    @property
    def n_cells(self) -> int:
        return self.n_blocks * self.block_size

    @property
    def n_gates(self) -> int:
        return self.n_blocks * (1 + int(self.forget_gate) + int(self.output_gate))

    @property
    def hidden_rows(self) -> int:
        return self.n_gates + self.n_cells

    @property
    def rec_size(self) -> int:
        return self.n_gates + self.n_cells

    @property
    def cols(self) -> int:
        return self.inputs + self.rec_size + 1

    @property
    def out_cols(self) -> int:
        return self.n_cells + self.inputs + 1

    # row groups of Wh
    @property
    def iota_rows(self) -> slice:
        return slice(0, self.n_blocks)

    @property
    def phi_rows(self) -> slice:
        return slice(self.n_blocks, 2 * self.n_blocks) if self.forget_gate else slice(0, 0)

    @property
    def z_rows(self) -> slice:
        start = (2 if self.forget_gate else 1) * self.n_blocks
        return slice(start, start + self.n_cells)

    @property
    def omega_rows(self) -> slice:
        start = self.z_rows.stop
        return slice(start, start + self.n_blocks) if self.output_gate else slice(0, 0)

    def gate_rows_mask(self) -> np.ndarray:
        m = np.ones(self.hidden_rows, dtype=bool)
        m[self.z_rows] = False
        return m

    def masks(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Mh (H, K), Mo (O, Ko)) float64: 1 where the paper's net has a weight."""
        I, R, H = self.inputs, self.rec_size, self.hidden_rows
        gate_bias, cell_bias, out_bias = BIAS_CODES[self.bias]
        gates = self.gate_rows_mask()
        Mh = np.zeros((H, self.cols))
        Mh[:, :I] = 1.0
        if self.connectivity == "F":
            Mh[:, I : I + R] = 1.0
        elif self.connectivity == "cells":
            Mh[:, I + self.n_gates : I + R] = 1.0
        Mh[gates, -1] = float(gate_bias)
        Mh[~gates, -1] = float(cell_bias)
        Mo = np.zeros((self.outputs, self.out_cols))
        Mo[:, : self.n_cells] = 1.0
        if self.output_shortcut:
            Mo[:, self.n_cells : self.n_cells + I] = 1.0
        Mo[:, -1] = float(out_bias)
        return torch.from_numpy(Mh), torch.from_numpy(Mo)

    @property
    def num_weights(self) -> int:
        Mh, Mo = self.masks()
        return int(Mh.sum().item() + Mo.sum().item())


class Stats(NamedTuple):
    """Per-sequence results of one chunk (``paper_train``)."""

    loss: torch.Tensor  # (n,) 1/2 sum of squared errors at the target steps
    err_max: torch.Tensor  # (n,) max |target - y| over outputs and target steps
    err_last: torch.Tensor  # (n,) max |target - y| over outputs at the last target step
    y_last: torch.Tensor  # (n, O) outputs at the last step
    y_all: torch.Tensor | None  # (n, T, O) outputs at every step, when asked for


def _bias_values(spec: PaperNetSpec, value, name: str) -> np.ndarray | None:
    """A per-block gate-bias schedule: None / "r" (random), a number, or one number per block."""
    if value is None or (isinstance(value, str) and value == "r"):
        return None
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(spec.n_blocks, float(arr))
    if arr.shape != (spec.n_blocks,):
        raise ValueError(f"{name} must be 'r', a number or {spec.n_blocks} numbers (one per block), got {value!r}")
    return arr


class PaperNet:
    """A paper network: weights, masks, initialisation and on-line training on the fused op.

    ``dtype`` float64 (default: the paper's nets are tiny, and double costs about the same as float
    here) or float32. ``device``: where the weights live and the op trains them, "cpu" (default) or a CUDA
    device (one CTA trains the net on a chunk; the truncated gradient only). The initialisation is drawn on the
    CPU whatever the device, so a trial's initial net is the same everywhere; the per-sequence statistics of
    ``train``/``evaluate`` come back on the CPU.
    """

    def __init__(self, spec: PaperNetSpec, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu"):
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"PaperNet dtype must be torch.float32 or torch.float64, got {dtype}")
        device = torch.device(device)
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"PaperNet device must be a CPU or CUDA device, got {device}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"PaperNet: device {device} was asked for, but torch sees no CUDA device")
        self.spec = spec
        Mh, Mo = spec.masks()
        self.Mh, self.Mo = Mh.to(device, dtype), Mo.to(device, dtype)
        self.Wh = torch.zeros_like(self.Mh)
        self.Wo = torch.zeros_like(self.Mo)

    @property
    def dtype(self) -> torch.dtype:
        return self.Wh.dtype

    @property
    def device(self) -> torch.device:
        return self.Wh.device

    @property
    def num_weights(self) -> int:
        return int(self.Mh.sum().item() + self.Mo.sum().item())

    def init_(
        self,
        generator: torch.Generator,
        init_range: float,
        input_gate_bias="r",
        output_gate_bias="r",
        forget_gate_bias="r",
        random_bias_range: float = 0.1,
    ) -> "PaperNet":
        """The paper's initialisation (HS97 Sec. 5 intro, Table 10).

        Every weight uniform in [-init_range, init_range]; then each gate-bias schedule: "r" (HS97's
        code: uniform in [-random_bias_range, random_bias_range]) or one value per block.
        """
        for name, r in (("init_range", init_range), ("random_bias_range", random_bias_range)):
            if not _finite_nonnegative(r):
                raise ValueError(f"PaperNet.init_: {name} must be a finite number >= 0, got {r!r}")
        s = self.spec
        uni = lambda shape, r: (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * r  # noqa: E731
        Wh = uni(self.Mh.shape, init_range)
        Wo = uni(self.Mo.shape, init_range)
        for rows, value, name in (
            (s.iota_rows, input_gate_bias, "input_gate_bias"),
            (s.phi_rows, forget_gate_bias, "forget_gate_bias"),
            (s.omega_rows, output_gate_bias, "output_gate_bias"),
        ):
            if rows.stop == rows.start:
                continue
            values = _bias_values(s, value, name)
            if values is None:
                Wh[rows, -1] = uni((s.n_blocks,), random_bias_range)
            else:
                Wh[rows, -1] = torch.from_numpy(values.copy())
        self.Wh = (Wh * self.Mh.double().cpu()).to(self.device, self.dtype).contiguous()
        self.Wo = (Wo * self.Mo.double().cpu()).to(self.device, self.dtype).contiguous()
        return self

    # ---- on-line training on the fused op ---------------------------------------------------------

    def _tensors(self, batch):
        dt, dev = self.dtype, self.device
        x = None if batch.x is None else torch.as_tensor(batch.x).to(dev, dt)
        x_index = None if batch.x_index is None else torch.as_tensor(batch.x_index).to(dev, torch.long)
        lengths = torch.as_tensor(batch.lengths).to(dev, torch.long)
        targets = torch.as_tensor(batch.targets).to(dev, dt)
        mask = torch.as_tensor(batch.target_mask).to(dev, dt)
        return x, x_index, lengths, targets, mask

    def _call(self, batch, lr: float, learn: bool, update: str, return_outputs: bool, gradient: str = "truncated"):
        if update not in UPDATES:
            raise ValueError(f"update must be one of {UPDATES}, got {update!r}")
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        if gradient == "full" and update == "step":
            raise ValueError("the full gradient changes weights once per sequence: use update='sequence'")
        s = self.spec
        x, x_index, lengths, targets, mask = self._tensors(batch)
        loss, err_max, err_last, y_last, y_all = torch.ops.lstm_ext.paper_train(
            self.Wh, self.Wo, self.Mh, self.Mo, x, x_index, lengths, targets, mask,
            s.n_blocks, s.block_size, s.forget_gate, s.output_gate, s.squash,
            float(lr), learn, update == "step", return_outputs, gradient == "truncated", s.output,
        )  # fmt: skip
        if loss.device.type != "cpu":  # the statistics go to numpy: one copy per chunk
            loss, err_max, err_last, y_last, y_all = (t.cpu() for t in (loss, err_max, err_last, y_last, y_all))
        return Stats(loss, err_max, err_last, y_last, y_all if return_outputs else None)

    def train(self, batch, lr: float, update: str = "sequence", return_outputs: bool = False,
              gradient: str = "truncated") -> Stats:  # fmt: skip
        """Train on-line on the sequences of ``batch``, in order: one weight change per sequence
        (``update="sequence"``) or after every step that carries error (``"step"``). In place.

        ``gradient="truncated"``: the 1997 learning rule (RTRL sensitivities); ``"full"``: back-propagation
        through time over each sequence (HS97 Sec. 6), one weight change per sequence."""
        return self._call(batch, lr, True, update, return_outputs, gradient)

    def evaluate(self, batch, return_outputs: bool = False) -> Stats:
        """Run the sequences of ``batch`` without learning."""
        return self._call(batch, 0.0, False, "sequence", return_outputs)

    def state_dict(self) -> dict:
        return {"Wh": self.Wh.clone(), "Wo": self.Wo.clone()}

    def load_state_dict(self, state: dict) -> None:
        missing = [name for name in ("Wh", "Wo") if name not in state]
        if missing:
            raise ValueError(f"PaperNet.load_state_dict: the state has no {' or '.join(missing)}")
        for name in ("Wh", "Wo"):
            w = state[name]
            ref = getattr(self, name)
            if w.shape != ref.shape:
                raise ValueError(f"{name} must have shape {tuple(ref.shape)}, got {tuple(w.shape)}")
            setattr(self, name, w.to(ref.device, self.dtype).contiguous().clone())

    # ---- the same network in plain PyTorch (autograd) ---------------------------------------------

    def forward_ref(self, batch, Wh=None, Wo=None, truncate: bool = True) -> torch.Tensor:
        """Outputs (n, T, O) of every step, differentiable in ``Wh``/``Wo`` (default: this net's).

        ``truncate``: the 1997 learning rule -- r_{t-1} enters the net inputs as a constant."""
        return forward_ref(self.spec, self.Wh if Wh is None else Wh, self.Wo if Wo is None else Wo, batch, truncate)


def _finite_nonnegative(v) -> bool:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return False
    return math.isfinite(v) and v >= 0


def _take(batch, idx: Sequence[int]):
    """Rows ``idx`` of a batch-like object (x / x_index, lengths, targets, target_mask)."""
    if hasattr(batch, "take"):
        return batch.take(np.asarray(idx))

    class _Rows:
        pass

    out = _Rows()
    for name in ("x", "x_index", "lengths", "targets", "target_mask"):
        v = getattr(batch, name)
        setattr(out, name, None if v is None else v[list(idx)])
    return out


def _dense_inputs(spec: PaperNetSpec, batch, dtype) -> torch.Tensor:
    if batch.x is not None:
        return torch.as_tensor(batch.x).to(dtype)
    idx = torch.as_tensor(batch.x_index).long()
    x = torch.zeros(*idx.shape, spec.inputs, dtype=dtype)
    valid = idx >= 0
    x[valid] = torch.nn.functional.one_hot(idx[valid], spec.inputs).to(dtype)
    return x


def _output_units(spec: PaperNetSpec, net: torch.Tensor) -> torch.Tensor:
    """The output units' activations from their net inputs: logistic (the paper's) or linear."""
    return net if spec.output == "linear" else torch.sigmoid(net)


def forward_fused(spec: PaperNetSpec, Wh: torch.Tensor, Wo: torch.Tensor, batch, truncate: bool = True) -> torch.Tensor:
    """``forward_ref`` on the fused recurrence op (``lstm_ext.ops.recurrence``, feedback "all"): outputs
    (n, T, O), differentiable in Wh and Wo. Needs output gates (every net but Exps 2a/2b's)."""
    from ..config import CellConfig
    from ..ops import recurrence

    if not spec.output_gate:
        raise ValueError("forward_fused needs a net with output gates; use forward_ref")
    x = _dense_inputs(spec, batch, Wh.dtype)  # (n, T, I)
    lengths = torch.as_tensor(batch.lengths).long()
    n, T, I = x.shape
    cfg = CellConfig(forget_gate=spec.forget_gate, block_size=spec.block_size, feedback="all", squash=spec.squash,
                     truncate=truncate)  # fmt: skip
    A = (x @ Wh[:, :I].T + Wh[:, -1]).transpose(0, 1)  # (T, n, H)
    U = Wh[:, I : I + spec.rec_size]
    y_c, _, _ = recurrence(A.contiguous(), U, x.new_zeros(n, spec.rec_size), x.new_zeros(n, spec.n_cells), cfg, lengths)
    src = torch.cat([y_c.transpose(0, 1), x, x.new_ones(n, T, 1)], dim=2)
    y = _output_units(spec, src @ Wo.T)
    valid = (torch.arange(T)[None, :] < lengths[:, None])[..., None]
    return torch.where(valid, y, torch.zeros_like(y))


def forward_ref(spec: PaperNetSpec, Wh: torch.Tensor, Wo: torch.Tensor, batch, truncate: bool = True,
                return_states: bool = False):  # fmt: skip
    """The paper net in plain PyTorch, one step at a time: outputs (n, T, O), 0 past each length.

    ``return_states``: also the cell states (n, T, C) after each step (held past each length)."""
    x = _dense_inputs(spec, batch, Wh.dtype)  # (n, T, I)
    lengths = torch.as_tensor(batch.lengths).long()
    n, T, _ = x.shape
    S = spec.block_size
    r = x.new_zeros(n, spec.rec_size)
    s = x.new_zeros(n, spec.n_cells)
    ones = x.new_ones(n, 1)
    per_cell = lambda gate: gate.repeat_interleave(S, dim=1)  # noqa: E731  (n, n_b) -> (n, C)
    outs, states = [], []
    for t in range(T):
        src = torch.cat([x[:, t], r.detach() if truncate else r, ones], dim=1)
        a = src @ Wh.T
        y_iota = torch.sigmoid(a[:, spec.iota_rows])
        y_phi = torch.sigmoid(a[:, spec.phi_rows]) if spec.forget_gate else None
        y_omega = torch.sigmoid(a[:, spec.omega_rows]) if spec.output_gate else None
        g = squash_g(a[:, spec.z_rows], spec.squash)
        s_new = (per_cell(y_phi) * s if spec.forget_gate else s) + per_cell(y_iota) * g
        h = squash_h(s_new, spec.squash)
        yc = per_cell(y_omega) * h if spec.output_gate else h
        y = _output_units(spec, torch.cat([yc, x[:, t], ones], dim=1) @ Wo.T)
        active = (t < lengths)[:, None]
        outs.append(torch.where(active, y, torch.zeros_like(y)))
        r_new = torch.cat([v for v in (y_iota, y_phi, y_omega, yc) if v is not None], dim=1)
        r = torch.where(active, r_new, r)
        s = torch.where(active, s_new, s)
        states.append(s)
    y = torch.stack(outs, dim=1) if outs else x.new_zeros(n, 0, spec.outputs)
    if return_states:
        return y, torch.stack(states, dim=1) if states else x.new_zeros(n, 0, spec.n_cells)
    return y
