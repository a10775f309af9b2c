"""Seeded, vectorised data generators for the six experiments of Hochreiter & Schmidhuber (1997).

Every generator takes ``n`` (number of sequences) and ``rng`` (a ``numpy.random.Generator``) first,
then keyword parameters, and returns a :class:`Batch`; the same ``rng`` state gives the same batch.
The facts come from ``paper-experiments.md``; each generator's docstring names the section it follows,
its bounds (inclusive, 0-based array indices unless marked "1-based (paper)"), and the choices made for
items the document marks UNCONFIRMED. Only numpy is needed.

==========  ==========================================  ===========================================
Exp         generator                                   module
==========  ==========================================  ===========================================
1           ``reber_train_test``, ``reber_batch``,       ``reber``
            ``embedded_reber_strings``
2a, 2b, 2c  ``two_sequence_local``,                     ``long_lag``
            ``two_sequence_random``, ``very_long_lag``
3a, 3b, 3c  ``noisy_two_sequence``                      ``two_sequence``
4, 5        ``adding``, ``multiplication``              ``adding``
6a, 6b      ``temporal_order``                          ``temporal_order``
==========  ==========================================  ===========================================
"""

from .adding import adding, multiplication
from .batch import Batch
from .long_lag import two_sequence_local, two_sequence_random, very_long_lag
from .reber import (
    SYMBOLS,
    embedded_reber_strings,
    is_embedded_reber,
    is_reber,
    reber_batch,
    reber_possible_targets,
    reber_step_correct,
    reber_train_test,
)
from .temporal_order import TEMPORAL_ORDER_SYMBOLS, temporal_order
from .two_sequence import noisy_two_sequence

__all__ = [
    "Batch",
    "SYMBOLS",
    "TEMPORAL_ORDER_SYMBOLS",
    "adding",
    "embedded_reber_strings",
    "is_embedded_reber",
    "is_reber",
    "multiplication",
    "noisy_two_sequence",
    "reber_batch",
    "reber_possible_targets",
    "reber_step_correct",
    "reber_train_test",
    "temporal_order",
    "two_sequence_local",
    "two_sequence_random",
    "very_long_lag",
]
