"""RNN-T loss: pure Numba CUDA kernels (see fastasr.loss.dispatch for who calls them and with what).

  ``launch_row_log_probs``: a chunk of joint logits (n, U', V) -> log-normaliser, blank and label log-probs, read
      once (an online max/sum per lane, then a tree over the warp's lanes), written by index into (B, T, U+1).
  ``launch_row_grad``: in place over the same logits buffer, the loss's gradient with respect to the logits
      (softmax x occupancy + the two posteriors, clamped and scaled): no softmax tensor, no copy.
  ``launch_lattice``: alpha, beta, costs and the two posteriors per node; one thread block per sequence.

The V-wide kernels give each lattice node one warp (LANES threads striding over V, NODES_PER_BLOCK nodes per
block); the reductions go through shared memory and ``syncthreads`` rather than warp shuffles so that the very same
code runs under Numba's CUDA simulator in CI. Row r of a chunk is the lattice row (rows_b[r], rows_t[r]): chunks
cross sequence boundaries. Every kernel is compiled per dtype with constants of that dtype, so float32 data is
computed in float32 throughout (a Python float constant would pull Numba CUDA into float64). Impossible sequences
get cost +inf and a zero gradient, never NaN; a NaN logit makes the loss NaN (never hidden).

Under NUMBA_ENABLE_CUDASIM=1 the launchers take NumPy arrays (or CPU torch tensors) and run on the CPU.
"""
import math
from contextlib import nullcontext

import numpy as np
from numba import config as numba_config
from numba import cuda, float32, float64

from .scalar import make_logaddexp

MAX_THREADS = 256  # per half of a lattice block (alpha threads, then as many beta threads)
LANES = 32  # threads per lattice node in the V-wide kernels: one warp
NODES_PER_BLOCK = 4

_NUMBA_TYPES = {np.dtype(np.float32): float32, np.dtype(np.float64): float64}
_kernels: dict = {}
_nvvm_ok = False


class NvvmMissing(RuntimeError):
    """Numba CUDA cannot compile kernels: libNVVM (from the CUDA toolkit) is not installed."""


def require_nvvm() -> None:
    """One clear error at the first launch instead of Numba's NvvmSupportError deep inside the first compile."""
    global _nvvm_ok
    if _nvvm_ok or numba_config.ENABLE_CUDASIM:
        return
    from numba.cuda.cudadrv import nvvm

    if not nvvm.is_available():
        try:
            import torch

            torch_cuda = torch.version.cuda or "unknown"
        except ImportError:  # pragma: no cover - the package always has torch
            torch_cuda = "unknown"
        extra = "gpu-cu13" if torch_cuda.startswith("13") else "gpu"
        raise NvvmMissing(
            f"fastasr's CUDA kernels are compiled by Numba, which needs libNVVM from the CUDA toolkit, and none was "
            f"found. torch was built for CUDA {torch_cuda}: install the matching extra, pip install 'fastasr[{extra}]' "
            f"(the extras 'gpu' for CUDA 12, 'gpu-cu13' for CUDA 13 bring numba-cuda[cu12] / numba-cuda[cu13]), "
            f"or point CUDA_HOME at a CUDA toolkit that has nvvm/")
    _nvvm_ok = True


def _build(dtype: np.dtype) -> dict:
    scalar = dtype.type
    NEG, ZERO, ONE, INF = scalar(-math.inf), scalar(0.0), scalar(1.0), scalar(math.inf)
    NBT = _NUMBA_TYPES[dtype]
    try:  # forceinline: inlined in Numba's IR rather than left to NVVM's judgement
        logaddexp = cuda.jit(device=True, forceinline=True)(make_logaddexp(NEG))
    except TypeError:  # the simulator, or a numba-cuda older than the option
        logaddexp = cuda.jit(device=True)(make_logaddexp(NEG))

    @cuda.jit
    def row_log_probs(logits, rows_b, rows_t, targets, blank, log_norm, blank_lp, label_lp):
        """logits (n, U', V); rows_b, rows_t (n,); targets (B, U+1); log_norm, blank_lp, label_lp (B, T, U+1)."""
        n, U1, V = logits.shape
        m_sh = cuda.shared.array((NODES_PER_BLOCK, LANES), NBT)
        s_sh = cuda.shared.array((NODES_PER_BLOCK, LANES), NBT)
        w = cuda.threadIdx.x // LANES
        lane = cuda.threadIdx.x - w * LANES
        node = cuda.blockIdx.x * NODES_PER_BLOCK + w
        i = node // U1
        u = node - i * U1
        m = NEG
        s = ZERO
        if node < n * U1:
            for v in range(lane, V, LANES):  # online log-sum-exp: one read of the row
                x = logits[i, u, v]
                if x > m:
                    s = s * math.exp(m - x) + ONE
                    m = x
                elif x != NEG:  # x <= m, or NaN, which must poison the sum
                    s += math.exp(x - m)
        m_sh[w, lane] = m
        s_sh[w, lane] = s
        cuda.syncthreads()
        step = LANES // 2
        while step > 0:  # every thread runs every round: syncthreads must be reached by the whole block
            if lane < step:
                m1 = m_sh[w, lane]
                s1 = s_sh[w, lane]
                m2 = m_sh[w, lane + step]
                s2 = s_sh[w, lane + step]
                if m2 > m1:
                    s1 = s1 * math.exp(m1 - m2) + s2
                    m1 = m2
                elif m2 != NEG:
                    s1 += s2 * math.exp(m2 - m1)
                else:
                    s1 += s2  # 0, or NaN from that lane
                m_sh[w, lane] = m1
                s_sh[w, lane] = s1
            cuda.syncthreads()
            step //= 2
        if lane == 0 and node < n * U1:
            b = rows_b[i]
            t = rows_t[i]
            m = m_sh[w, 0]
            s = s_sh[w, 0]
            lz = NEG if (m == NEG and s == ZERO) else m + math.log(s)  # s is NaN if a logit was
            log_norm[b, t, u] = lz
            if lz == NEG:  # every symbol impossible at this node
                blank_lp[b, t, u] = NEG
                label_lp[b, t, u] = NEG
            else:
                blank_lp[b, t, u] = logits[i, u, blank] - lz
                label_lp[b, t, u] = logits[i, u, targets[b, u]] - lz

    @cuda.jit
    def row_grad(logits, rows_b, rows_t, log_norm, g_blank, g_label, targets, scale, blank, clamp):
        """In place: logits (n, U', V) -> scale[b] * clamp(d cost_b / d logits). The rest as in row_log_probs;
        scale (B,). Nodes outside the lattice (g_blank = g_label = 0) get exactly 0."""
        n, U1, V = logits.shape
        w = cuda.threadIdx.x // LANES
        lane = cuda.threadIdx.x - w * LANES
        node = cuda.blockIdx.x * NODES_PER_BLOCK + w
        if node >= n * U1:
            return
        i = node // U1
        u = node - i * U1
        b = rows_b[i]
        t = rows_t[i]
        gb = g_blank[b, t, u]
        gl = g_label[b, t, u]
        lz = log_norm[b, t, u]
        target = targets[b, u]
        sc = scale[b]
        occ = -(gb + gl)
        live = occ != ZERO and lz != NEG
        for v in range(lane, V, LANES):
            g = math.exp(logits[i, u, v] - lz) * occ if live else ZERO
            if v == blank:
                g += gb
            if v == target:
                g += gl
            if clamp > ZERO:
                g = min(max(g, -clamp), clamp)
            logits[i, u, v] = g * sc

    @cuda.jit
    def lattice(blank_lp, label_lp, logit_lengths, target_lengths, alpha, beta, costs, g_blank, g_label):
        """blank_lp, label_lp, alpha, beta, g_blank, g_label (B, T, U+1); lengths (B,) int64; costs (B,).

        One block per sequence. alpha and beta are independent given the log-probs, so the block's first half
        sweeps alpha's anti-diagonals t + u = k forwards while its second half sweeps beta's backwards, both in
        the same T_b + U_b steps (every node of a diagonal depends only on the previous one)."""
        b = cuda.blockIdx.x
        tid = cuda.threadIdx.x
        nth = cuda.blockDim.x
        half = nth // 2
        T = blank_lp.shape[1]
        U1 = blank_lp.shape[2]
        Tb = logit_lengths[b]
        Ub = target_lengths[b]
        for j in range(tid, T * U1, nth):
            g_blank[b, j // U1, j % U1] = ZERO
            g_label[b, j // U1, j % U1] = ZERO
        for k in range(Tb + Ub):
            if tid < half:
                for u in range(tid, Ub + 1, half):
                    t = k - u
                    if 0 <= t < Tb:
                        if k == 0:
                            alpha[b, 0, 0] = ZERO
                        else:
                            a = NEG
                            if t > 0:
                                a = alpha[b, t - 1, u] + blank_lp[b, t - 1, u]
                            if u > 0:
                                a = logaddexp(a, alpha[b, t, u - 1] + label_lp[b, t, u - 1])
                            alpha[b, t, u] = a
            else:
                d = Tb + Ub - 1 - k
                for u in range(tid - half, Ub + 1, half):
                    t = d - u
                    if 0 <= t < Tb:
                        if t == Tb - 1 and u == Ub:
                            beta[b, t, u] = blank_lp[b, t, u]
                        else:
                            bb = NEG
                            if t < Tb - 1:
                                bb = beta[b, t + 1, u] + blank_lp[b, t, u]
                            if u < Ub:
                                bb = logaddexp(bb, beta[b, t, u + 1] + label_lp[b, t, u])
                            beta[b, t, u] = bb
            cuda.syncthreads()
        log_p = beta[b, 0, 0]
        if tid == 0:
            costs[b] = INF if log_p == NEG else -log_p
        if log_p == NEG:
            return
        for j in range(tid, Tb * (Ub + 1), nth):
            t = j // (Ub + 1)
            u = j - t * (Ub + 1)
            a = alpha[b, t, u]
            if a != NEG:
                if t < Tb - 1:
                    g_blank[b, t, u] = -math.exp(a + blank_lp[b, t, u] + beta[b, t + 1, u] - log_p)
                elif u == Ub:
                    g_blank[b, t, u] = -math.exp(a + blank_lp[b, t, u] - log_p)
                if u < Ub:
                    g_label[b, t, u] = -math.exp(a + label_lp[b, t, u] + beta[b, t, u + 1] - log_p)

    return {"row_log_probs": row_log_probs, "row_grad": row_grad, "lattice": lattice, "scalar": scalar}


def _kernel(name: str, dtype):
    dtype = np.dtype(dtype)
    if dtype not in _NUMBA_TYPES:
        raise TypeError(f"the CUDA kernels compute in float32 or float64, got {dtype}")
    if dtype not in _kernels:
        require_nvvm()
        _kernels[dtype] = _build(dtype)
    return _kernels[dtype][name], _kernels[dtype]["scalar"]


def _views(arrays):
    """Torch CUDA tensors -> zero-copy device views; under the simulator, CPU torch tensors -> NumPy views.

    sync=False: the kernels are ordered on torch's stream (``stream``), never by waiting on the host."""
    out = []
    for x in arrays:
        if hasattr(x, "__cuda_array_interface__"):
            out.append(cuda.as_cuda_array(x, sync=False))
        elif hasattr(x, "numpy"):
            out.append(x.numpy())
        else:
            out.append(x)
    return out


def _dtype_of(x):
    if hasattr(x, "__cuda_array_interface__"):
        return np.dtype(x.__cuda_array_interface__["typestr"])
    return np.dtype(x.numpy().dtype if hasattr(x, "numpy") else x.dtype)


def _launch(kernel, grid: int, block: int, stream, arrays) -> None:
    """Launch on the device that holds the data: under torchrun each rank's tensors live on cuda:LOCAL_RANK while
    Numba's current device would be 0."""
    x = arrays[0]
    on_gpu = getattr(x, "is_cuda", False) and not numba_config.ENABLE_CUDASIM  # a torch CUDA tensor
    with cuda.gpus[x.device.index] if on_gpu else nullcontext():
        views = _views(arrays)
        configured = kernel[grid, block, cuda.external_stream(stream)] if stream else kernel[grid, block]
        configured(*views)


def threads_for(U1: int) -> int:
    """Threads per half of a lattice block: a warp multiple that covers one anti-diagonal, at most MAX_THREADS."""
    n = 32
    while n < U1 and n < MAX_THREADS:
        n *= 2
    return n


def launch_lattice(blank_lp, label_lp, logit_lengths, target_lengths, alpha, beta, costs, g_blank, g_label,
                   stream=0):
    """``stream``: a raw CUDA stream handle (torch.cuda.current_stream().cuda_stream) so the kernel orders with
    torch's work; 0 for the default stream."""
    kernel, _ = _kernel("lattice", _dtype_of(blank_lp))
    B, _, U1 = blank_lp.shape
    _launch(kernel, B, 2 * threads_for(U1), stream,
            [blank_lp, label_lp, logit_lengths, target_lengths, alpha, beta, costs, g_blank, g_label])


def launch_row_log_probs(logits, rows_b, rows_t, targets, blank: int, log_norm, blank_lp, label_lp, stream=0):
    kernel, _ = _kernel("row_log_probs", _dtype_of(logits))
    n, U1, _ = logits.shape
    _launch(kernel, max(1, -(-n * U1 // NODES_PER_BLOCK)), NODES_PER_BLOCK * LANES, stream,
            [logits, rows_b, rows_t, targets, blank, log_norm, blank_lp, label_lp])


def launch_row_grad(logits, rows_b, rows_t, log_norm, g_blank, g_label, targets, scale, blank: int, clamp: float,
                    stream=0):
    kernel, scalar = _kernel("row_grad", _dtype_of(logits))
    n, U1, _ = logits.shape
    _launch(kernel, max(1, -(-n * U1 // NODES_PER_BLOCK)), NODES_PER_BLOCK * LANES, stream,
            [logits, rows_b, rows_t, log_norm, g_blank, g_label, targets, scale, blank, scalar(clamp)])
