"""RNN-T loss: pure Numba CPU kernels (no torch, no allocation policy; see fastasr.loss for the dispatch).

The loss only ever reads two log-probabilities per lattice node (t, u): blank (stay on u, move to t+1) and the
next label (move to u+1). So the work splits into
  1. ``gather_log_probs``: (B, T, U+1, V) logits -> log-normaliser, blank and label log-probs, optionally the
     softmax  (V-wide, parallel over b·t)
  2. ``lattice``: alpha/beta over (T, U+1) per sequence -> cost and d cost / d(blank, label log-prob)  (parallel over b)
  3. ``logits_grad``: the V-wide gradient, softmax x node occupancy + the two posteriors  (parallel over b·t)
The fused loss (fastasr.loss.fused) runs chunk by chunk: ``lattice`` plus the row kernels ``row_log_probs`` and
``row_grad`` below, which do 1 and 3 for a chunk of lattice rows gathered from any sequences.

Every kernel is dtype-generic (float32 or float64 arrays); impossible sequences (log P = -inf) get cost +inf and an
all-zero gradient, never NaN.
"""
import math

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

from .scalar import NEG_INF, logaddexp

# Flags for the V-wide reductions: reassociation lets LLVM vectorise the sums; no 'nnan'/'ninf', -inf is meaningful.
_VFLAGS = {"reassoc", "nsz"}


@intrinsic
def _bits_as_float32(typingctx, bits):
    """The float32 whose IEEE bits are the low 32 bits of an integer (builds 2**k without a libm call)."""
    if not isinstance(bits, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        v = args[0]
        if v.type.width != 32:
            v = builder.trunc(v, ir.IntType(32))
        return builder.bitcast(v, ir.FloatType())

    return types.float32(bits), codegen


def fexp(x):
    """exp(x); for float32, an inlined Cody-Waite + degree-6 polynomial (< 1e-7 relative error, 0 below -87, NaN for
    NaN) that LLVM can vectorise, unlike a call to libm's expf. float64 uses math.exp."""
    return math.exp(x)


@overload(fexp)
def _fexp_overload(x):
    if isinstance(x, types.Float) and x.bitwidth == 32:
        def impl(x):
            xc = min(max(x, np.float32(-87.0)), np.float32(88.0))
            k = math.floor(xc * np.float32(1.44269504) + np.float32(0.5))
            r = xc - k * np.float32(0.693359375) + k * np.float32(2.12194440e-4)  # ln 2 split in two
            y = np.float32(1.9875691500e-4)
            y = y * r + np.float32(1.3981999507e-3)
            y = y * r + np.float32(8.3334519073e-3)
            y = y * r + np.float32(4.1665795894e-2)
            y = y * r + np.float32(1.6666665459e-1)
            y = y * r + np.float32(5.0000001201e-1)
            y = y * r * r + r + np.float32(1.0)
            e = y * _bits_as_float32((int(k) + 127) << 23)
            if x > np.float32(-87.0):
                return e
            return x if x != x else np.float32(0.0)  # a NaN stays NaN: the loss must not hide it

        return impl
    return lambda x: math.exp(x)


_logaddexp = njit(cache=True, inline="always")(logaddexp)


@njit(parallel=True, cache=True, fastmath=_VFLAGS)
def gather_log_probs(logits, targets, logit_lengths, target_lengths, blank, fused_log_softmax,
                     log_norm, blank_lp, label_lp, probs, store_probs):
    """logits (B, T, U+1, V); targets (B, U+1) int64; lengths (B,) int64.
    Writes log_norm (B, T, U+1), blank_lp (B, T, U+1), label_lp (B, T, U+1) (column U_b unused) and, if
    ``store_probs`` (with the fused log-softmax), the softmax into probs (B, T, U+1, V): backward then needs no
    second exp pass. Nodes outside (t < T_b, u <= U_b) are set to 0 and never read by ``lattice``."""
    B, T, U1, V = logits.shape
    for bt in prange(B * T):
        b = bt // T
        t = bt - b * T
        for u in range(U1):
            if t >= logit_lengths[b] or u > target_lengths[b]:
                log_norm[b, t, u] = 0.0
                blank_lp[b, t, u] = 0.0
                label_lp[b, t, u] = 0.0
                continue
            row = logits[b, t, u]  # (V,)
            lz = 0.0
            if fused_log_softmax:
                m = row[0]
                for v in range(1, V):
                    if row[v] > m:
                        m = row[v]
                if m == NEG_INF:
                    lz = NEG_INF
                    if store_probs:
                        for v in range(V):
                            probs[b, t, u, v] = 0.0
                elif store_probs:
                    p = probs[b, t, u]  # (V,)
                    for v in range(V):
                        p[v] = fexp(row[v] - m)
                    s = 0.0
                    for v in range(V):
                        s += p[v]
                    lz = m + math.log(s)
                    inv = 1.0 / s
                    for v in range(V):
                        p[v] *= inv
                else:
                    s = 0.0
                    for v in range(V):
                        s += fexp(row[v] - m)
                    lz = m + math.log(s)
            log_norm[b, t, u] = lz
            if lz == NEG_INF:  # every symbol impossible at this node
                blank_lp[b, t, u] = NEG_INF
                label_lp[b, t, u] = NEG_INF
                continue
            blank_lp[b, t, u] = row[blank] - lz
            if u < target_lengths[b]:
                label_lp[b, t, u] = row[targets[b, u]] - lz
            else:
                label_lp[b, t, u] = NEG_INF


@njit(parallel=True, cache=True)
def lattice(blank_lp, label_lp, logit_lengths, target_lengths, alpha, beta, costs, g_blank, g_label):
    """Forward-backward over each sequence's (T_b, U_b+1) lattice.

    blank_lp, label_lp (B, T, U+1): log-probs of blank / of the next label at each node (label_lp[..., U_b] unused).
    alpha, beta (B, T, U+1): workspace. costs (B,): -log P(y|x).
    g_blank, g_label (B, T, U+1): d cost / d blank_lp and d cost / d label_lp (<= 0; exactly 0 outside the lattice
    and for impossible sequences, whose cost is +inf).
    """
    B, T, U1 = blank_lp.shape
    for b in prange(B):
        Tb = logit_lengths[b]
        Ub = target_lengths[b]
        for t in range(T):
            for u in range(U1):
                g_blank[b, t, u] = 0.0
                g_label[b, t, u] = 0.0
        # alpha[t, u]: log-prob of reaching node (t, u) having emitted u labels.
        alpha[b, 0, 0] = 0.0
        for t in range(Tb):
            for u in range(Ub + 1):
                if t == 0 and u == 0:
                    continue
                a = NEG_INF
                if t > 0:
                    a = alpha[b, t - 1, u] + blank_lp[b, t - 1, u]
                if u > 0:
                    a = _logaddexp(a, alpha[b, t, u - 1] + label_lp[b, t, u - 1])
                alpha[b, t, u] = a
        # beta[t, u]: log-prob of finishing from node (t, u); the final blank leaves (T_b-1, U_b).
        for t in range(Tb - 1, -1, -1):
            for u in range(Ub, -1, -1):
                if t == Tb - 1 and u == Ub:
                    beta[b, t, u] = blank_lp[b, t, u]
                    continue
                bb = NEG_INF
                if t < Tb - 1:
                    bb = beta[b, t + 1, u] + blank_lp[b, t, u]
                if u < Ub:
                    bb = _logaddexp(bb, beta[b, t, u + 1] + label_lp[b, t, u])
                beta[b, t, u] = bb
        log_p = beta[b, 0, 0]
        if log_p == NEG_INF:
            costs[b] = np.inf
            continue
        costs[b] = -log_p
        for t in range(Tb):
            for u in range(Ub + 1):
                a = alpha[b, t, u]
                if a == NEG_INF:
                    continue
                if t < Tb - 1:
                    g_blank[b, t, u] = -math.exp(a + blank_lp[b, t, u] + beta[b, t + 1, u] - log_p)
                elif u == Ub:
                    g_blank[b, t, u] = -math.exp(a + blank_lp[b, t, u] - log_p)
                if u < Ub:
                    g_label[b, t, u] = -math.exp(a + label_lp[b, t, u] + beta[b, t, u + 1] - log_p)


@njit(parallel=True, cache=True)
def logits_grad(probs, targets, logit_lengths, target_lengths, g_blank, g_label, scale, blank, fused_log_softmax,
                clamp, grad):
    """grad (B, T, U+1, V) = scale[b] * clamp(d cost_b / d logits); ``grad`` may be ``probs`` itself (in place).

    With the fused log-softmax, d cost / d x_v = softmax_v * occupancy + g_v, where occupancy = -(g_blank + g_label)
    is the posterior of passing through the node and g_v is non-zero only at blank and at the next label; probs
    (B, T, U+1, V) holds the softmax from ``gather_log_probs``. Without it the logits are log-probs, only g_v
    remains and probs is not read. Zero outside (t < T_b, u <= U_b)."""
    B, T, U1, V = grad.shape
    for bt in prange(B * T):
        b = bt // T
        t = bt - b * T
        s = scale[b]
        for u in range(U1):
            out = grad[b, t, u]  # (V,)
            if t >= logit_lengths[b] or u > target_lengths[b]:
                for v in range(V):
                    out[v] = 0.0
                continue
            gb = g_blank[b, t, u]
            gl = g_label[b, t, u]
            if fused_log_softmax:
                occ = -(gb + gl)
                p = probs[b, t, u]  # (V,)
                for v in range(V):
                    out[v] = p[v] * occ
            else:
                for v in range(V):
                    out[v] = 0.0
            out[blank] += gb
            if u < target_lengths[b]:
                out[targets[b, u]] += gl
            if clamp > 0.0:
                for v in range(V):
                    out[v] = min(max(out[v], -clamp), clamp) * s
            else:
                for v in range(V):
                    out[v] *= s


@njit(parallel=True, cache=True, fastmath=_VFLAGS)
def row_log_probs(logits, rows_b, rows_t, targets, blank, log_norm, blank_lp, label_lp):
    """The fused loss's forward on one chunk of lattice rows, which may come from several sequences.

    logits (n, U', V): row r is lattice row (rows_b[r], rows_t[r]) at u < U'; targets (B, U+1) int64. Writes
    log_norm, blank_lp, label_lp (B, T, U+1) at those rows' first U' nodes."""
    n, U1, V = logits.shape
    for i in prange(n):
        b = rows_b[i]
        t = rows_t[i]
        for u in range(U1):
            row = logits[i, u]  # (V,)
            m = row[0]
            for v in range(1, V):
                if row[v] > m:
                    m = row[v]
            if m == NEG_INF:
                log_norm[b, t, u] = NEG_INF
                blank_lp[b, t, u] = NEG_INF
                label_lp[b, t, u] = NEG_INF
                continue
            s = 0.0
            for v in range(V):
                s += fexp(row[v] - m)
            lz = m + math.log(s)
            log_norm[b, t, u] = lz
            blank_lp[b, t, u] = row[blank] - lz
            label_lp[b, t, u] = row[targets[b, u]] - lz


@njit(parallel=True, cache=True)
def row_grad(logits, rows_b, rows_t, log_norm, g_blank, g_label, targets, scale, blank, clamp):
    """The fused loss's backward on one chunk, in place: logits (n, U', V) -> scale[b] * clamp(d cost_b / d logits).

    Rows as in ``row_log_probs``; log_norm, g_blank, g_label (B, T, U+1); scale (B,). Nodes with
    g_blank = g_label = 0 (beyond a sequence's U_b, impossible sequences) get exactly 0."""
    n, U1, V = logits.shape
    for i in prange(n):
        b = rows_b[i]
        t = rows_t[i]
        s = scale[b]
        for u in range(U1):
            row = logits[i, u]  # (V,)
            gb = g_blank[b, t, u]
            gl = g_label[b, t, u]
            lz = log_norm[b, t, u]
            occ = -(gb + gl)
            if occ == 0.0 or lz == NEG_INF:
                for v in range(V):
                    row[v] = 0.0
            else:
                for v in range(V):
                    row[v] = fexp(row[v] - lz) * occ
            row[blank] += gb
            row[targets[b, u]] += gl
            if clamp > 0.0:
                for v in range(V):
                    row[v] = min(max(row[v], -clamp), clamp) * s
            else:
                for v in range(V):
                    row[v] *= s
