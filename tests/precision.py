"""Tolerances for comparing float32 results, derived from float32's precision.

Two float32 evaluations of the same function that sum in another order (a batch against one
frame, another SIMD width, another XLA fusion) differ by round-off: each term of a sum carries
a relative error of about eps = 2^-23 (1.19e-7), and the errors of n terms add like a random
walk, so the results differ by about eps * sqrt(n) * (the size of the terms). `float32_atol`
turns that into an absolute tolerance with a safety factor, instead of a constant that held on
one machine: a comparison that must hold on any CPU states the scale and the number of terms.
"""

from __future__ import annotations

import math

import numpy as np

FLOAT32_EPS = float(np.finfo(np.float32).eps)


def float32_atol(scale, n_terms: int = 1, safety: float = 16.0) -> float:
    """Absolute tolerance between two float32 evaluations of sums of `n_terms` terms of size
    `scale` (e.g. the largest |value| compared, in its unit): safety * eps * scale * sqrt(n)."""
    return safety * FLOAT32_EPS * float(np.max(np.abs(scale))) * math.sqrt(n_terms)
