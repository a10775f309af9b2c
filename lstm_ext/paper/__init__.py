"""The 1997 paper's networks and learning rule on the fused ops (see ``net.py``)."""

from .net import BIAS_CODES, CONNECTIVITIES, PaperNet, PaperNetSpec, Stats, forward_fused, forward_ref

__all__ = ["BIAS_CODES", "CONNECTIVITIES", "PaperNet", "PaperNetSpec", "Stats", "forward_fused", "forward_ref"]
