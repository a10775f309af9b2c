"""Experiment 6 of HS97: temporal order (paper-experiments.md, section 7).

Input symbols, one-hot over 8 units in this order: ``TEMPORAL_ORDER_SYMBOLS = "EBabcdXY"`` (E = 0,
B = 1, a..d = 2..5, X = 6, Y = 7).
"""

from __future__ import annotations

import numpy as np

from .batch import Batch, _check_n_rng, _final_step_batch

__all__ = ["TEMPORAL_ORDER_SYMBOLS", "temporal_order"]

TEMPORAL_ORDER_SYMBOLS = "EBabcdXY"
_E, _B, _A, _X = 0, 1, 2, 6

# relevant positions, 1-based as printed in the paper (inclusive ranges)
_RANGES_1BASED = {"a": ((10, 20), (50, 60)), "b": ((10, 20), (33, 43), (66, 76))}
_LENGTH_RANGE = (100, 110)


def temporal_order(n: int, rng: np.random.Generator, variant: str = "a") -> Batch:
    """Tasks 6a (two relevant symbols, 4 classes) and 6b (three relevant symbols, 8 classes).

    * Length: uniform over the integers 100 .. 110, both ends included.
    * The first symbol is E and the last (step ``length - 1``) is B, the trigger.
    * Relevant positions, each uniform over an inclusive range. The paper's positions are read as
      **1-based** (the first symbol, E, is position 1), so 0-based index = paper position - 1:
      6a: t1 in [10, 20], t2 in [50, 60] (indices 9..19, 49..59);
      6b: t1 in [10, 20], t2 in [33, 43], t3 in [66, 76] (indices 9..19, 32..42, 65..75).
      These hold X or Y (probability 0.5 each, independently); every other position holds a, b, c or d
      uniformly. The minimal lag from the last relevant symbol to the trigger is 40 (6a) / 24 (6b), as
      in Table 10 (the same under either base, since the end is shifted with the positions).
    * Classes, in the paper's order, with X as bit 0 and Y as bit 1, first symbol most significant:
      6a: XX -> Q = 0, XY -> R = 1, YX -> S = 2, YY -> U = 3;
      6b: XXX -> Q = 0, XXY -> R = 1, XYX -> S = 2, XYY -> U = 3, YXX -> V = 4, YXY -> A = 5,
      YYX -> B = 6, YYY -> C = 7.
    * Target: one-hot over 4 (6a) or 8 (6b) outputs at the last step only (a sequence is correct when
      every output's absolute error there is < 0.3).

    Extras: ``extra["label"]`` (class index), ``extra["positions"]`` (int64 ``(n, 2 or 3)``, 0-based
    indices of the relevant symbols, in time order).
    """
    n = _check_n_rng(n, rng)
    if variant not in _RANGES_1BASED:
        raise ValueError(f"variant must be 'a' or 'b', got {variant!r}")
    ranges = _RANGES_1BASED[variant]
    k = len(ranges)

    lengths = rng.integers(_LENGTH_RANGE[0], _LENGTH_RANGE[1], size=n, endpoint=True, dtype=np.int64)
    t_max = int(lengths.max())
    x_index = rng.integers(_A, _A + 4, size=(n, t_max), dtype=np.int64)  # a, b, c, d
    positions = np.stack(
        [rng.integers(lo - 1, hi - 1, size=n, endpoint=True, dtype=np.int64) for lo, hi in ranges], axis=1
    )
    bits = rng.integers(0, 2, size=(n, k), dtype=np.int64)  # 0 = X, 1 = Y

    rows = np.arange(n)
    x_index[:, 0] = _E
    x_index[rows, lengths - 1] = _B
    x_index[rows[:, None], positions] = _X + bits
    x_index[np.arange(t_max)[None, :] >= lengths[:, None]] = -1
    label = (bits << np.arange(k - 1, -1, -1)).sum(axis=1)

    num_classes = 2**k
    final = np.zeros((n, num_classes), dtype=np.float32)
    final[rows, label] = 1.0
    return _final_step_batch(
        x=None,
        x_index=x_index,
        num_inputs=len(TEMPORAL_ORDER_SYMBOLS),
        lengths=lengths,
        final_targets=final,
        extra={"label": label, "positions": positions},
    )
