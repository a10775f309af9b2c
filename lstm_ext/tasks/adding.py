"""Experiments 4 and 5 of HS97: the adding problem and the multiplication problem
(paper-experiments.md, sections 5 and 6).

Each step is a pair (value, marker); ``x[..., 0]`` is the value and ``x[..., 1]`` the marker. Positions
below are 0-based array indices; the paper's "first 10 pairs" are indices ``0 .. 9`` and its "first
T/2 - 1 pairs" are indices ``0 .. T//2 - 2``.
"""

from __future__ import annotations

import numpy as np

from .batch import Batch, _as_int, _check_n_rng, _final_step_batch, _step_mask

__all__ = ["MIN_T", "adding", "multiplication"]

MIN_T = 12  # the shortest T whose first half holds both marks (one of the first 10 pairs, then one more)


def _marked_pairs(n, rng, T, low, high, first_pair_value, combine):  # noqa: N803
    n = _check_n_rng(n, rng)
    T = _as_int("T", T)  # noqa: N806
    if T < MIN_T:
        raise ValueError(f"T must be >= {MIN_T}, got {T}")
    m = T // 2 - 1  # the second mark falls among the first T/2 - 1 pairs: indices 0 .. m-1

    lengths = rng.integers(T, T + T // 10, size=n, endpoint=True, dtype=np.int64)
    t_max = int(lengths.max())
    values = rng.uniform(low, high, size=(n, t_max))
    i1 = rng.integers(0, 10, size=n, dtype=np.int64)  # one of the first 10 pairs
    # uniform over {0 .. m-1} minus {i1} ("not yet marked"): draw from m-1 (or m) slots and skip i1
    i1_inside = i1 < m
    u = rng.integers(0, m - i1_inside.astype(np.int64), dtype=np.int64)
    i2 = u + (i1_inside & (u >= i1))

    rows = np.arange(n)
    markers = np.zeros((n, t_max))
    markers[:, 0] = -1.0
    markers[rows, lengths - 1] = -1.0
    markers[rows, i1] = 1.0
    markers[rows, i2] = 1.0
    if first_pair_value is not None:
        first_marked = (i1 == 0) | (i2 == 0)
        values[first_marked, 0] = first_pair_value
    values[~_step_mask(lengths, t_max)] = 0.0
    markers[~_step_mask(lengths, t_max)] = 0.0

    x1 = values[rows, i1]
    x2 = values[rows, i2]
    return _final_step_batch(
        x=np.stack([values, markers], axis=2).astype(np.float32),
        x_index=None,
        num_inputs=2,
        lengths=lengths,
        final_targets=combine(x1, x2).astype(np.float32)[:, None],
        extra={
            "x1": x1.astype(np.float32),
            "x2": x2.astype(np.float32),
            "positions": np.stack([i1, i2], axis=1),
        },
    )


_DOC_COMMON = """
    * Length: uniform over the integers ``T .. T + floor(T/10)``, both ends included.
    * Markers (``x[..., 1]``): one of the first 10 pairs (index ``i1`` uniform in ``0 .. 9``) is marked
      1.0; its value is X1. A second pair, uniform among the first ``T/2 - 1`` pairs not yet marked
      (index ``i2`` in ``0 .. T//2 - 2``, ``i2 != i1``), is marked 1.0; its value is X2. Every other
      marker is 0, except those of the first and the last pair, which are -1 (the first pair's is 1.0
      when it is marked; the last pair is never marked). Markers and values are zero past each length.
    * First-pair rule: when the very first pair (index 0) is marked, its value is replaced by
      ``first_pair_value`` in the input itself, so X1/X2 are always the values the net reads at the
      marked steps. The paper states the rule for X1; the pair at index 0 can also be the second mark
      (when ``i1 != 0``, ``i2 = 0`` has probability 1/(T//2 - 2)), and it is treated the same way.
      ``first_pair_value=None`` disables the rule.
    * Both marks are in the first half, so the minimal lag is ``T/2``.

    Extras: ``extra["x1"]``, ``extra["x2"]`` (float32, the marked values after the first-pair rule) and
    ``extra["positions"]`` (int64 ``(n, 2)``: ``[i1, i2]``, 0-based).
"""


def adding(
    n: int, rng: np.random.Generator, T: int = 100, *, first_pair_value: float | None = 0.0  # noqa: N803
) -> Batch:
    """Experiment 4, the adding problem (section 5): 2 inputs, 1 output.

    * Values (``x[..., 0]``): uniform in [-1, 1].
    * Target, at the last step only: ``0.5 + (X1 + X2) / 4``, in [0, 1]. A sequence is correct when the
      absolute error there is < 0.04. Always predicting 0.5 has MSE 1/24 (exactly: ``1/24 * (1 - P/2)``
      with ``P`` the probability that the first pair is marked, since X = 0 then).
    * ``first_pair_value`` = 0.0 (the paper: "if the very first pair is the one marked, X1 is set to 0").
    """
    return _marked_pairs(n, rng, T, -1.0, 1.0, first_pair_value, lambda a, b: 0.5 + (a + b) / 4.0)


def multiplication(
    n: int, rng: np.random.Generator, T: int = 100, *, first_pair_value: float | None = 1.0  # noqa: N803
) -> Batch:
    """Experiment 5, the multiplication problem (section 6): as the adding problem except

    * Values (``x[..., 0]``): uniform in [0, 1].
    * Target, at the last step only: ``X1 * X2``. Always predicting the mean 1/4 has MSE 7/144 (on
      sequences whose first pair is not marked).
    * ``first_pair_value`` = 1.0 (the paper: X1 is set to 1.0 when the first pair is marked).
    """
    return _marked_pairs(n, rng, T, 0.0, 1.0, first_pair_value, lambda a, b: a * b)


if adding.__doc__ and multiplication.__doc__:  # absent under python -OO
    adding.__doc__ += _DOC_COMMON
    multiplication.__doc__ += _DOC_COMMON
