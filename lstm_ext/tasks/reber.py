"""Experiment 1 of HS97: the embedded Reber grammar (paper-experiments.md, section 2).

The (inner) Reber grammar of Cleeremans et al. (1989) / Fahlman (1991), as a deterministic automaton
over the 7 symbols ``SYMBOLS = "BTPSXVE"``::

    state 0 --B--> 1
    state 1 --T--> 2      state 1 --P--> 3
    state 2 --S--> 2      state 2 --X--> 4
    state 3 --T--> 3      state 3 --V--> 5
    state 4 --X--> 3      state 4 --S--> 6
    state 5 --P--> 4      state 5 --V--> 6
    state 6 --E--> 7      (7: end)

The embedded grammar wraps one inner string: ``B, c, <inner string>, c, E`` with ``c`` in {T, P}. At
every branch each of the two outgoing edges has probability 0.5 (section 2, "Task and encoding"). The
shortest embedded strings have 9 symbols (e.g. ``BTBTXSETE``); there is no upper bound on the length.

Coding is local: symbol ``k`` of ``SYMBOLS`` is input/output unit ``k`` (7 inputs, 7 outputs).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .batch import Batch, _as_int, _check_n_rng, _next_symbol_batch

__all__ = [
    "SYMBOLS",
    "embedded_reber_strings",
    "is_embedded_reber",
    "is_reber",
    "reber_batch",
    "reber_possible_targets",
    "reber_step_correct",
    "reber_train_test",
]

SYMBOLS = "BTPSXVE"
_INDEX = {c: i for i, c in enumerate(SYMBOLS)}

# inner Reber automaton: state -> ((symbol, next state), (symbol, next state)); state 7 is final
_EDGES: dict[int, tuple[tuple[str, int], ...]] = {
    0: (("B", 1),),
    1: (("T", 2), ("P", 3)),
    2: (("S", 2), ("X", 4)),
    3: (("T", 3), ("V", 5)),
    4: (("X", 3), ("S", 6)),
    5: (("P", 4), ("V", 6)),
    6: (("E", 7),),
    7: (),
}
_STEP = {(s, c): nxt for s, edges in _EDGES.items() for c, nxt in edges}
_FINAL = 7


def _inner_states(inner: str) -> list[int] | None:
    """States after each symbol of ``inner`` (None if ``inner`` leaves the automaton)."""
    state, out = 0, []
    for c in inner:
        state = _STEP.get((state, c))
        if state is None:
            return None
        out.append(state)
    return out


def is_reber(s: str) -> bool:
    """True iff ``s`` is a complete string of the inner (non-embedded) Reber grammar."""
    if not isinstance(s, str):
        return False
    states = _inner_states(s)
    return bool(states) and states[-1] == _FINAL


def is_embedded_reber(s: str) -> bool:
    """True iff ``s`` is a complete string of the embedded Reber grammar: ``B c <Reber string> c E``
    with ``c`` in {T, P} and the same ``c`` on both sides."""
    if not isinstance(s, str) or len(s) < 9:
        return False
    return s[0] == "B" and s[1] in "TP" and s[-2] == s[1] and s[-1] == "E" and is_reber(s[2:-2])


def embedded_reber_strings(n: int, rng: np.random.Generator) -> list[str]:
    """``n`` independent strings of the embedded Reber grammar, every branch taken with probability 0.5.

    One string is generated at a time (a per-string Python loop; strings are short). The same ``rng``
    state gives the same strings.
    """
    n = _check_n_rng(n, rng)
    out = []
    bits = rng.integers(0, 2, size=64 * n, dtype=np.int8)  # one fair coin per branch, refilled if needed
    pos = 0
    for _ in range(n):
        if pos + 64 > bits.size:
            bits = np.concatenate([bits[pos:], rng.integers(0, 2, size=64 * n, dtype=np.int8)])
            pos = 0
        outer = "TP"[bits[pos]]
        pos += 1
        chars = ["B", outer]
        state = 0
        while state != _FINAL:
            edges = _EDGES[state]
            if len(edges) == 1:
                c, state = edges[0]
            else:
                if pos >= bits.size:
                    bits = rng.integers(0, 2, size=64 * n, dtype=np.int8)
                    pos = 0
                c, state = edges[bits[pos]]
                pos += 1
            chars.append(c)
        chars += [outer, "E"]
        out.append("".join(chars))
    return out


def _allowed_next(s: str) -> np.ndarray:
    """bool ``(len(s), 7)``: the symbols the embedded grammar allows after ``s[:t+1]`` (none at the
    last step)."""
    allowed = np.zeros((len(s), len(SYMBOLS)), dtype=bool)
    allowed[0, [_INDEX["T"], _INDEX["P"]]] = True  # after the initial B
    allowed[1, _INDEX["B"]] = True  # after T/P comes the inner B
    for j, state in enumerate(_inner_states(s[2:-2])):
        t = j + 2
        if state == _FINAL:  # after the inner E comes the remembered T/P
            allowed[t, _INDEX[s[1]]] = True
        else:
            allowed[t, [_INDEX[c] for c, _ in _EDGES[state]]] = True
    allowed[len(s) - 2, _INDEX["E"]] = True  # after the second T/P comes the final E
    return allowed


def reber_batch(strings) -> Batch:
    """Batch for "predict the next symbol" on embedded Reber strings (section 2).

    * ``x_index[i, t]`` = index in ``SYMBOLS`` of ``strings[i][t]``, ``-1`` past the string;
      ``lengths[i] = len(strings[i])``; 7 inputs, 7 outputs.
    * ``targets[i, t]`` = one-hot of the next symbol ``strings[i][t+1]`` at steps ``0 .. len-2``;
      ``target_mask`` is 1 exactly there (the final E has no successor and carries no error signal).
    * ``extra["allowed_next"]``: bool ``(n, T_max, 7)``, the set of symbols the grammar allows after
      ``strings[i][:t+1]`` (all False at the last step and past the string). HS97 counts a prediction as
      correct when the units of *all* possible next symbols are the most active outputs; see
      :func:`reber_step_correct`.
    * ``extra["strings"]``: the strings themselves (numpy array of str).

    Raises ValueError if a string is not an embedded Reber string.
    """
    strings = list(strings)
    if not strings:
        raise ValueError("reber_batch: no strings")
    bad = [s for s in strings if not is_embedded_reber(s)]
    if bad:
        raise ValueError(f"reber_batch: not embedded Reber strings: {bad[:3]}")
    n = len(strings)
    lengths = np.array([len(s) for s in strings], dtype=np.int64)
    t_max = int(lengths.max())
    x_index = np.full((n, t_max), -1, dtype=np.int64)
    allowed = np.zeros((n, t_max, len(SYMBOLS)), dtype=bool)
    for i, s in enumerate(strings):
        x_index[i, : len(s)] = [_INDEX[c] for c in s]
        allowed[i, : len(s)] = _allowed_next(s)
    return _next_symbol_batch(
        x_index, lengths, len(SYMBOLS), extra={"allowed_next": allowed, "strings": np.asarray(strings)}
    )


def reber_possible_targets(batch: Batch) -> Batch:
    """``batch`` with each step's target the set of symbols the grammar allows next (1 on every one of them,
    0 elsewhere) instead of the one symbol that follows: at a branch both successors get 1. The same steps
    carry targets (``target_mask`` unchanged); HS97 does not say which of the two targets it trained towards.
    """
    allowed = batch.extra["allowed_next"]
    targets = (allowed & (batch.target_mask[..., None] > 0)).astype(np.float32)
    return dataclasses.replace(batch, targets=targets)


def reber_step_correct(outputs: np.ndarray, batch: Batch) -> np.ndarray:
    """HS97's per-step correctness: bool ``(n, T_max)``, True where every allowed next symbol's output
    is strictly larger than every other output. Steps without a target count as correct, so
    ``reber_step_correct(y, b).all(axis=1)`` says which strings were predicted correctly throughout.

    ``outputs``: array ``(n, T_max, 7)`` of output activations (torch tensors: pass ``.numpy()``).
    """
    y = np.asarray(outputs, dtype=np.float64)
    allowed = batch.extra["allowed_next"]
    lo_allowed = np.where(allowed, y, np.inf).min(axis=2)
    hi_other = np.where(allowed, -np.inf, y).max(axis=2)
    return (lo_allowed > hi_other) | (batch.target_mask == 0)


def reber_train_test(
    rng: np.random.Generator, n_train: int = 256, n_test: int = 256, *, unique: bool = False
) -> tuple[Batch, Batch]:
    """A training and a test set in Fahlman's setup (section 2, "Data, testing and success"): 256
    training strings and 256 test strings, **no test string appearing in the training set**.

    * Training strings are i.i.d. draws from the grammar, so with the default ``unique=False`` the
      training set may (and at 256 strings always does) contain duplicates: the shortest embedded strings
      each have probability 1/16. Drawing exemplars "at random from the training set" then follows the
      grammar's own distribution, and the paper does not say that the strings were distinct.
    * Test strings are drawn from the grammar and rejected if they occur in the training set; with
      ``unique=False`` the test set may repeat a string too. The rejection necessarily shifts the test
      set towards longer, rarer strings; this is what "no test string also appears in the training set"
      implies.
    * ``unique=True`` rejects repeats within each set as well (distinct training strings, distinct test
      strings).
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    n_train, n_test = _as_int("n_train", n_train), _as_int("n_test", n_test)
    if n_train < 1 or n_test < 1:
        raise ValueError("reber_train_test: n_train and n_test must be >= 1")

    def draw(count: int, forbidden: set[str]) -> list[str]:
        got: list[str] = []
        seen: set[str] = set()
        attempts = 0
        while len(got) < count:
            attempts += 1
            if attempts > 10_000:
                raise RuntimeError("reber_train_test: could not draw enough admissible strings")
            for s in embedded_reber_strings(max(count - len(got), 16), rng):
                if s in forbidden or (unique and s in seen):
                    continue
                got.append(s)
                seen.add(s)
                if len(got) == count:
                    break
        return got

    train = draw(n_train, set())
    test = draw(n_test, set(train))
    return reber_batch(train), reber_batch(test)
