"""HS97's experiments on the fused ops: the table rows (``rows``), one trial's protocol (``protocol``),
parallel, checkpointed runs (``runner``) and the report beside the paper's tables (``report``).

    lstm-ext reproduce adding --T 100 --trials 1 --seed 0
"""

from .protocol import run_trial
from .rows import ALIASES, EXPERIMENTS, Row, Rule, all_rows, select_rows
from .runner import run_rows

__all__ = ["ALIASES", "EXPERIMENTS", "Row", "Rule", "all_rows", "run_rows", "run_trial", "select_rows"]
