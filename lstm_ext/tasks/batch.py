"""The ``Batch`` container shared by every task generator, and small helpers the generators use.

Conventions (all generators):

* Arrays are padded to ``T_max = max(lengths)``; step ``t`` of row ``i`` is real iff ``t < lengths[i]``.
* The output at step ``t`` sees the input of step ``t``. A "predict the next symbol" target at step ``t``
  is therefore the symbol of step ``t + 1``.
* Positions in this package are **0-based array indices** unless a docstring says "1-based (paper)".
* Every value in ``extra`` is a per-sequence array whose first axis has length ``n``, so that
  :meth:`Batch.take` can slice it.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Batch"]


@dataclass
class Batch:
    """A padded batch of ``n`` variable-length sequences with targets.

    Attributes:
        x: float32 ``(n, T_max, num_inputs)`` real-valued inputs, zero past each length; ``None`` for
            symbolic tasks.
        x_index: int64 ``(n, T_max)`` index of the one-hot input symbol at each step, ``-1`` past each
            length; ``None`` for real-valued tasks. Use :meth:`dense_x` for the one-hot float array.
        num_inputs: number of input units ``I``.
        lengths: int64 ``(n,)`` number of input steps of each sequence.
        targets: float32 ``(n, T_max, num_outputs)``; zero wherever ``target_mask`` is 0.
        target_mask: float32 ``(n, T_max)``; 1 at the steps that carry an error signal, else 0.
        extra: task-specific per-sequence arrays (first axis ``n``), documented by each generator.
    """

    x: np.ndarray | None
    x_index: np.ndarray | None
    num_inputs: int
    lengths: np.ndarray
    targets: np.ndarray
    target_mask: np.ndarray
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if (self.x is None) == (self.x_index is None):
            raise ValueError("Batch: exactly one of x and x_index must be set")
        if self.targets.ndim != 3:
            raise ValueError(f"Batch: targets must be (n, T_max, num_outputs), got {self.targets.shape}")
        n, t_max = self.targets.shape[:2]
        if self.lengths.shape != (n,):
            raise ValueError(f"Batch: lengths must be ({n},), got {self.lengths.shape}")
        if self.target_mask.shape != (n, t_max):
            raise ValueError(f"Batch: target_mask must be ({n}, {t_max}), got {self.target_mask.shape}")
        if self.x is not None and self.x.shape != (n, t_max, self.num_inputs):
            raise ValueError(f"Batch: x must be ({n}, {t_max}, {self.num_inputs}), got {self.x.shape}")
        if self.x_index is not None and self.x_index.shape != (n, t_max):
            raise ValueError(f"Batch: x_index must be ({n}, {t_max}), got {self.x_index.shape}")
        for key, value in self.extra.items():
            if np.ndim(value) < 1 or len(value) != n:
                raise ValueError(f"Batch: extra[{key!r}] must have first axis of length {n}")

    @property
    def num_outputs(self) -> int:
        return int(self.targets.shape[2])

    @property
    def T_max(self) -> int:  # noqa: N802 (the API name)
        return int(self.targets.shape[1])

    @property
    def n(self) -> int:
        return int(self.lengths.shape[0])

    def take(self, idx) -> "Batch":
        """The rows ``idx`` (an array of indices, a boolean mask or a slice); ``T_max`` is kept."""
        if not isinstance(idx, slice):
            idx = np.asarray(idx)
            if idx.dtype != bool:
                idx = idx.astype(np.int64, copy=False)
        return Batch(
            x=None if self.x is None else self.x[idx],
            x_index=None if self.x_index is None else self.x_index[idx],
            num_inputs=self.num_inputs,
            lengths=self.lengths[idx],
            targets=self.targets[idx],
            target_mask=self.target_mask[idx],
            extra={k: np.asarray(v)[idx] for k, v in self.extra.items()},
        )

    def dense_x(self) -> np.ndarray:
        """float32 ``(n, T_max, num_inputs)`` inputs: ``x`` itself, or the one-hot coding of ``x_index``
        (all zeros past each length)."""
        if self.x is not None:
            return self.x
        out = np.zeros((self.n, self.T_max, self.num_inputs), dtype=np.float32)
        valid = self.x_index >= 0
        rows, steps = np.nonzero(valid)
        out[rows, steps, self.x_index[valid]] = 1.0
        return out


# ----------------------------------------------------------------------------------------------------
# helpers shared by the generators (private)


def _as_int(name: str, value) -> int:
    """``value`` as a Python int (ints and numpy integers); anything else, 12.5 or "12", is a TypeError."""
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {value!r}") from None


def _check_n_rng(n: int, rng) -> int:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n = _as_int("n", n)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return n


def _step_mask(lengths: np.ndarray, t_max: int) -> np.ndarray:
    """bool ``(n, t_max)``: True where ``t < lengths[i]``."""
    return np.arange(t_max)[None, :] < lengths[:, None]


def _final_step_batch(
    *,
    x: np.ndarray | None,
    x_index: np.ndarray | None,
    num_inputs: int,
    lengths: np.ndarray,
    final_targets: np.ndarray,
    extra: dict,
) -> Batch:
    """A batch whose only error signal is at the last step ``lengths - 1``; ``final_targets`` is
    ``(n, num_outputs)``."""
    n, num_outputs = final_targets.shape
    t_max = int(lengths.max())
    rows = np.arange(n)
    targets = np.zeros((n, t_max, num_outputs), dtype=np.float32)
    targets[rows, lengths - 1] = final_targets
    mask = np.zeros((n, t_max), dtype=np.float32)
    mask[rows, lengths - 1] = 1.0
    return Batch(
        x=x,
        x_index=x_index,
        num_inputs=num_inputs,
        lengths=lengths.astype(np.int64),
        targets=targets,
        target_mask=mask,
        extra=extra,
    )


def _next_symbol_batch(x_index: np.ndarray, lengths: np.ndarray, num_symbols: int, extra: dict) -> Batch:
    """Symbolic batch with "predict the next symbol" targets at steps ``0 .. lengths-2`` (the last
    symbol is read but has no successor, so its step carries no target)."""
    n, t_max = x_index.shape
    valid_target = np.arange(t_max)[None, :] < (lengths[:, None] - 1)
    targets = np.zeros((n, t_max, num_symbols), dtype=np.float32)
    rows, steps = np.nonzero(valid_target)
    targets[rows, steps, x_index[rows, steps + 1]] = 1.0
    return Batch(
        x=None,
        x_index=x_index,
        num_inputs=num_symbols,
        lengths=lengths.astype(np.int64),
        targets=targets,
        target_mask=valid_target.astype(np.float32),
        extra=extra,
    )
