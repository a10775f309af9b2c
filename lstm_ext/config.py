"""The configuration of one recurrence: which cell, how its units are wired, how it learns.

Shared by the reference, the custom ops and the modules, so that every layer of the package
speaks about a cell in the same words.

Layout (one layer, one direction; ``n_b`` blocks of ``S`` cells, ``C = n_b * S`` cells):

- gate rows ``G`` of ``A`` and ``U``:
  2000 cell ``[iota (n_b), phi (n_b), z (C), omega (n_b)]``; 1997 cell ``[iota (n_b), z (C), omega (n_b)]``.
  With ``S = 1`` this is nn.LSTM's ``(i, f, g, o)`` and ``(i, g, o)``.
- recurrent source ``r`` (``R`` columns of ``U``):
  ``feedback="cells"``: ``r = y_c`` (``R = C``, nn.LSTM's ``h``);
  ``feedback="all"`` (the 1997 paper's connectivity F): ``r = [y_iota, (y_phi), y_omega, y_c]``
  (``R = C + 2 n_b`` or ``C + 3 n_b``), gate activations in gate-row order, then the cell outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

SQUASHES = ("tanh", "paper", "sigmoid_identity")
FEEDBACKS = ("cells", "all")


@dataclass(frozen=True)
class CellConfig:
    """How one recurrence computes.

    forget_gate: True for the 2000 cell (Gers et al.), False for the 1997 cell (constant error carousel).
    block_size:  cells per memory-cell block (S); the block's gates are shared by its cells.
    feedback:    "cells" (standard: r = y_c) or "all" (gate activations feed back too).
    squash:      "tanh" (g = h = tanh), "paper" (g = 2 tanh(x/2), h = tanh(x/2)),
                 "sigmoid_identity" (g = sigmoid, h = identity; the 1997 paper's Exp 2a/2b).
    truncate:    the 1997 learning rule: no gradient through the recurrent input r_{t-1} of the gate and
                 cell nets; the gradient through the cell state (and into the outputs) remains.
    """

    forget_gate: bool = True
    block_size: int = 1
    feedback: str = "cells"
    squash: str = "tanh"
    truncate: bool = False

    def __post_init__(self):
        for name in ("forget_gate", "truncate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if not isinstance(self.block_size, int) or isinstance(self.block_size, bool) or self.block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {self.block_size!r}")
        if self.feedback not in FEEDBACKS:
            raise ValueError(f"feedback must be one of {FEEDBACKS}, got {self.feedback!r}")
        if self.squash not in SQUASHES:
            raise ValueError(f"squash must be one of {SQUASHES}, got {self.squash!r}")

    @property
    def gates_per_block(self) -> int:
        """Gates of one block: iota, (phi), omega."""
        return 3 if self.forget_gate else 2

    def n_blocks(self, n_cells: int) -> int:
        if n_cells % self.block_size:
            raise ValueError(f"the number of cells ({n_cells}) must be a multiple of block_size ({self.block_size})")
        return n_cells // self.block_size

    def gate_rows(self, n_cells: int) -> int:
        """G: rows of A and U for C cells."""
        return n_cells + self.gates_per_block * self.n_blocks(n_cells)

    def recurrent_size(self, n_cells: int) -> int:
        """R: size of the recurrent source r for C cells."""
        if self.feedback == "cells":
            return n_cells
        return n_cells + self.gates_per_block * self.n_blocks(n_cells)

    def cells_from_gate_rows(self, gate_rows: int) -> int:
        """C from G (inverse of gate_rows); raises if G fits no whole number of blocks."""
        per_block = self.block_size + self.gates_per_block
        if gate_rows % per_block:
            raise ValueError(
                f"A/U have {gate_rows} gate rows, which is not a multiple of block_size + gates per block "
                f"({per_block}) for this cell"
            )
        return gate_rows // per_block * self.block_size

    def op_args(self) -> tuple:
        """The config as the custom ops take it: (forget_gate, block_size, feedback, squash, truncate)."""
        return (self.forget_gate, self.block_size, self.feedback, self.squash, self.truncate)
