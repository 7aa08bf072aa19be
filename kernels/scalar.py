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


def make_logaddexp(neg_inf):
    """``logaddexp`` comparing against ``neg_inf`` of the arrays' own type (np.float32(-inf) for float32
    kernels): a Python float constant would make Numba CUDA compare in float64."""

    def typed_logaddexp(a, b):
        if a == neg_inf:
            return b
        if b == neg_inf:
            return a
        if a > b:
            return a + math.log1p(math.exp(b - a))
        return b + math.log1p(math.exp(a - b))

    return typed_logaddexp
