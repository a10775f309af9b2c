"""Experiment 3 of HS97: noise and signal on the same channel, Bengio et al.'s "2-sequence problem"
(paper-experiments.md, section 4: 4.1 = task 3a, 4.2 = task 3b, 4.3 = task 3c).
"""

from __future__ import annotations

import numpy as np

from .batch import Batch, _as_int, _check_n_rng, _final_step_batch, _step_mask

__all__ = ["noisy_two_sequence"]

_CLEAN_TARGETS = {"a": (1.0, 0.0), "b": (1.0, 0.0), "c": (0.2, 0.8)}


def noisy_two_sequence(
    n: int,
    rng: np.random.Generator,
    T: int = 100,  # noqa: N803 (the paper's name)
    N: int = 3,  # noqa: N803
    variant: str = "a",
    *,
    noise_var: float = 0.2,
    target_noise_var: float = 0.1,
    signal_noise: bool | None = None,
) -> Batch:
    """Tasks 3a / 3b / 3c: one real-valued input line, two equally likely classes.

    * Length: uniform over the integers ``T .. T + floor(T/10)``, both ends included (the paper:
      "between T and T+T/10"; Bengio et al.'s shorter lengths down to T/2 are not used).
    * Steps ``0 .. N-1`` (the first ``N`` elements) carry the class: +1.0 for class 1, -1.0 for class 2.
      Variant "b" adds Gaussian noise (mean 0, variance ``noise_var`` = 0.2) to them.
    * Steps ``N .. length-1``: Gaussian noise, mean 0, variance ``noise_var`` = 0.2 (std ~0.447).
      ``x`` is zero past each length.
    * Target, at the last step ``length - 1`` only, one output: 1.0 (class 1) / 0.0 (class 2) in "a"
      and "b"; in "c", 0.2 (class 1) / 0.8 (class 2) plus Gaussian target noise (mean 0, variance
      ``target_noise_var`` = 0.1, std ~0.32), not clipped.
    * ``signal_noise`` overrides whether the first N elements get noise (default: only in "b"). For 3c
      the document does not say whether the informative elements are noisy; this follows the task brief
      (noise on them only in "b"); pass ``signal_noise=True`` for a 3b-based 3c.

    Extras: ``extra["label"]`` (0 = class 1, 1 = class 2), ``extra["clean_target"]`` (float32, the
    noise-free target: 1.0/0.0 or 0.2/0.8; 3c's misclassification rule compares against it).
    """
    n = _check_n_rng(n, rng)
    T, N = _as_int("T", T), _as_int("N", N)  # noqa: N806
    if variant not in _CLEAN_TARGETS:
        raise ValueError(f"variant must be 'a', 'b' or 'c', got {variant!r}")
    if T < 1 or not 1 <= N <= T:
        raise ValueError(f"need T >= 1 and 1 <= N <= T, got T={T}, N={N}")
    if signal_noise is None:
        signal_noise = variant == "b"

    label = rng.integers(0, 2, size=n, dtype=np.int64)
    lengths = rng.integers(T, T + T // 10, size=n, endpoint=True, dtype=np.int64)
    t_max = int(lengths.max())
    x = rng.normal(0.0, np.sqrt(noise_var), size=(n, t_max))
    sign = np.where(label == 0, 1.0, -1.0)[:, None]
    x[:, :N] = sign + x[:, :N] if signal_noise else sign
    x[~_step_mask(lengths, t_max)] = 0.0

    clean = np.asarray(_CLEAN_TARGETS[variant], dtype=np.float64)[label]
    target = clean
    if variant == "c":
        target = clean + rng.normal(0.0, np.sqrt(target_noise_var), size=n)

    return _final_step_batch(
        x=x.astype(np.float32)[:, :, None],
        x_index=None,
        num_inputs=1,
        lengths=lengths,
        final_targets=target.astype(np.float32)[:, None],
        extra={"label": label, "clean_target": clean.astype(np.float32)},
    )
