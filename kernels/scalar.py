"""Scalar helpers written once in plain Python and compiled twice: by `numba.njit` for the CPU kernels and by
`numba.cuda.jit(device=True)` for the CUDA ones, so both lattices use the very same arithmetic."""

import math

NEG_INF = -math.inf


def logaddexp(a, b):
    """log(exp(a) + exp(b)), -inf-safe: never computes (-inf) - (-inf) = NaN."""
    if a == NEG_INF:
        return b
    if b == NEG_INF:
        return a
    if a > b:
        return a + math.log1p(math.exp(b - a))
    return b + math.log1p(math.exp(a - b))
