"""Tolerances for two computations of the same quantity that differ only in rounding.

A float sum of n terms, in any order, is within (n - 1) * u * sum|terms| of the exact sum (Higham, Accuracy and
Stability of Numerical Algorithms, 2nd ed., eq. 4.4; u = eps / 2), so two orders are within twice that of each
other. Where a path runs `depth` such sums one after another (layers), first-order error analysis adds their
bounds. The thread count, the kernel's blocking and the CPU's vector width change the order, never the bound, so
a test that uses it passes on any machine; a tolerance read off one machine does not.

The tests bound sum|terms| by the largest magnitude of the compared tensor, which holds where the terms do not
cancel heavily (each use says why it may). Prefer an exact comparison where the two paths run the same
operations on the same shapes (then they are bit-identical), or compare what rounding cannot change (token ids
whose logits lead by more than the bound).
"""

from __future__ import annotations

import torch


def rounding_rtol(n: int, depth: int = 1, dtype: torch.dtype = torch.float32) -> float:
    """Relative bound on the difference of two summation orders of n terms, over `depth` sequential sums."""
    return 2 * depth * max(n - 1, 1) * torch.finfo(dtype).eps / 2
