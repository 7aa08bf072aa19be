"""Scalar helpers written once in plain Python and compiled twice: by `numba.njit` for the CPU kernels and by
`numba.cuda.jit(device=True)` for the CUDA ones, so both lattices use the very same arithmetic."""

import math

NEG_INF = -math.inf


def make_logaddexp(neg_inf):
    """log(exp(a) + exp(b)), -inf-safe (never computes (-inf) - (-inf) = NaN), comparing against ``neg_inf`` of
    the arrays' own type: np.float32(-inf) for float32 CUDA kernels, where a Python float constant would make Numba
    compare in float64."""

    def logaddexp(a, b):
        if a == neg_inf:
            return b
        if b == neg_inf:
            return a
        if a > b:
            return a + math.log1p(math.exp(b - a))
        return b + math.log1p(math.exp(a - b))

    return logaddexp


logaddexp = make_logaddexp(NEG_INF)
