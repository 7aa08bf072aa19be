"""RNN-T lattice: pure Numba CUDA kernel (the V-wide work on the GPU is left to torch; see fastasr.loss.dispatch).

One thread block per sequence. alpha and beta are swept by anti-diagonals t + u = n: every node of a diagonal
depends only on the previous one, so the block's threads share the diagonal's nodes and synchronise between
diagonals (T_b + U_b steps instead of T_b * (U_b + 1)). Same contract as ``rnnt_cpu.lattice``: impossible
sequences get cost +inf and a zero gradient, never NaN. Under NUMBA_ENABLE_CUDASIM=1 the kernel runs on NumPy arrays.
"""
import math

from numba import cuda

from .scalar import NEG_INF, logaddexp

MAX_THREADS = 256

_logaddexp = cuda.jit(device=True, inline=True)(logaddexp)


@cuda.jit
def lattice_kernel(blank_lp, label_lp, logit_lengths, target_lengths, alpha, beta, costs, g_blank, g_label):
    """blank_lp, label_lp, alpha, beta, g_blank, g_label (B, T, U+1); lengths (B,) int64; costs (B,)."""
    b = cuda.blockIdx.x
    tid = cuda.threadIdx.x
    nth = cuda.blockDim.x
    T = blank_lp.shape[1]
    U1 = blank_lp.shape[2]
    Tb = logit_lengths[b]
    Ub = target_lengths[b]
    for i in range(tid, T * U1, nth):
        g_blank[b, i // U1, i % U1] = 0.0
        g_label[b, i // U1, i % U1] = 0.0
    for n in range(Tb + Ub):  # alpha, diagonal by diagonal
        for u in range(tid, Ub + 1, nth):
            t = n - u
            if 0 <= t < Tb:
                if n == 0:
                    alpha[b, 0, 0] = 0.0
                else:
                    a = NEG_INF
                    if t > 0:
                        a = alpha[b, t - 1, u] + blank_lp[b, t - 1, u]
                    if u > 0:
                        a = _logaddexp(a, alpha[b, t, u - 1] + label_lp[b, t, u - 1])
                    alpha[b, t, u] = a
        cuda.syncthreads()
    for n in range(Tb + Ub - 1, -1, -1):  # beta, from the last diagonal back
        for u in range(tid, Ub + 1, nth):
            t = n - u
            if 0 <= t < Tb:
                if t == Tb - 1 and u == Ub:
                    beta[b, t, u] = blank_lp[b, t, u]
                else:
                    bb = NEG_INF
                    if t < Tb - 1:
                        bb = beta[b, t + 1, u] + blank_lp[b, t, u]
                    if u < Ub:
                        bb = _logaddexp(bb, beta[b, t, u + 1] + label_lp[b, t, u])
                    beta[b, t, u] = bb
        cuda.syncthreads()
    log_p = beta[b, 0, 0]
    if tid == 0:
        costs[b] = math.inf if log_p == NEG_INF else -log_p
    if log_p == NEG_INF:
        return
    for i in range(tid, Tb * (Ub + 1), nth):
        t = i // (Ub + 1)
        u = i - t * (Ub + 1)
        a = alpha[b, t, u]
        if a != NEG_INF:
            if t < Tb - 1:
                g_blank[b, t, u] = -math.exp(a + blank_lp[b, t, u] + beta[b, t + 1, u] - log_p)
            elif u == Ub:
                g_blank[b, t, u] = -math.exp(a + blank_lp[b, t, u] - log_p)
            if u < Ub:
                g_label[b, t, u] = -math.exp(a + label_lp[b, t, u] + beta[b, t, u + 1] - log_p)


def threads_for(U1: int) -> int:
    n = 32
    while n < U1 and n < MAX_THREADS:
        n *= 2
    return n


def launch_lattice(blank_lp, label_lp, logit_lengths, target_lengths, alpha, beta, costs, g_blank, g_label,
                   stream=0):
    """Launch on CUDA torch tensors (via __cuda_array_interface__) or, under the simulator, NumPy arrays.

    ``stream``: a raw CUDA stream handle (torch.cuda.current_stream().cuda_stream) so the kernel orders with
    torch's work; 0 for the default stream."""
    arrays = [blank_lp, label_lp, logit_lengths, target_lengths, alpha, beta, costs, g_blank, g_label]
    if hasattr(blank_lp, "__cuda_array_interface__"):  # torch CUDA tensors: zero-copy device views
        arrays = [cuda.as_cuda_array(x) for x in arrays]
    grid, block = blank_lp.shape[0], threads_for(blank_lp.shape[2])
    kernel = lattice_kernel[grid, block, cuda.external_stream(stream)] if stream else lattice_kernel[grid, block]
    kernel(*arrays)
