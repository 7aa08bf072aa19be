"""Dispatch: validate once, allocate workspace, run the CPU (Numba) or CUDA (Numba CUDA + torch) kernels.

Everything here works on plain tensors without autograd. Arithmetic dtype: float64 stays float64 (gradcheck);
everything else (float32, float16, bfloat16) is computed in float32.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import NamedTuple

import numpy as np
import torch

_FLOAT_INPUTS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_INT_INPUTS = (torch.int32, torch.int64)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_float(name: str, x: torch.Tensor, dim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != dim:
        raise ValueError(f"{name} must have {dim} dims, got shape {tuple(x.shape)}")
    if x.dtype not in _FLOAT_INPUTS:
        raise TypeError(f"{name} must be float16/bfloat16/float32/float64, got {x.dtype}")


class LatticeInputs(NamedTuple):
    targets: torch.Tensor  # (B, U+1) int64: padding and the last column set to 0
    logit_lengths: torch.Tensor  # (B,) int64, on the device
    target_lengths: torch.Tensor  # (B,) int64, on the device
    blank: int  # in [0, V)
    host_lengths: np.ndarray  # (2, B) int64: logit and target lengths, the call's one device-to-host transfer


def check_lattice_inputs(targets, logit_lengths, target_lengths, *, B: int, T: int, U1: int, V: int, blank: int,
                         device: torch.device, host_lengths=None) -> LatticeInputs:
    """Validate targets and lengths against a (B, T, U+1, V) lattice; raises ValueError on anything that has no
    defined loss. On CUDA this is the loss's only synchronisation: the lengths and the target check travel to the
    host together; with ``host_lengths`` (the caller's CPU copy of both lengths) nothing travels and a bad target
    id trips a device-side assert instead."""
    for name, x, dim in (("targets", targets, 2), ("logit_lengths", logit_lengths, 1),
                         ("target_lengths", target_lengths, 1)):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _INT_INPUTS:
            raise TypeError(f"{name} must be int32 or int64, got {x.dtype}")
        if x.dim() != dim:
            raise ValueError(f"{name} must have {dim} dims, got shape {tuple(x.shape)}")
        if x.device != device:
            raise ValueError(f"{name} is on {x.device}, the logits on {device}")
    if targets.shape != (B, U1 - 1):
        raise ValueError(f"targets must be (B, U) = ({B}, {U1 - 1}) to match the logits, got {tuple(targets.shape)}")
    if logit_lengths.shape[0] != B or target_lengths.shape[0] != B:
        raise ValueError(f"lengths must be ({B},), got {tuple(logit_lengths.shape)} and {tuple(target_lengths.shape)}")
    if not -V <= blank < V:
        raise ValueError(f"blank={blank} out of range for V={V}")
    blank = blank % V
    if B == 0:
        raise ValueError("empty batch (B=0)")

    logit_lengths = logit_lengths.long().contiguous()
    target_lengths = target_lengths.long().contiguous()
    valid = torch.arange(U1 - 1, device=device)[None, :] < target_lengths[:, None]  # (B, U)
    targets = targets.long()
    bad = valid & ((targets < 0) | (targets >= V))  # (B, U); would otherwise be an out-of-bounds read
    if host_lengths is not None:
        shapes = [np.shape(x) for x in host_lengths]
        if shapes != [(B,), (B,)]:
            raise ValueError(f"host_lengths must be two ({B},) arrays (logit and target lengths), got {shapes}")
        host_lengths = np.stack([np.asarray(x, dtype=np.int64) for x in host_lengths])
        torch._assert_async(~bad.any(), f"a target id outside [0, {V})")
        host = np.concatenate([host_lengths.reshape(-1), [0]])
    else:
        host = torch.cat([logit_lengths, target_lengths, bad.any().long()[None]]).cpu().numpy()  # the one sync
    host_lengths = host[:2 * B].reshape(2, B)
    t_min, t_max = int(host_lengths[0].min()), int(host_lengths[0].max())
    u_min, u_max = int(host_lengths[1].min()), int(host_lengths[1].max())
    if t_min < 1 or t_max > T:
        raise ValueError(f"logit_lengths must lie in [1, T={T}], got min {t_min} max {t_max}")
    if u_min < 0 or u_max > U1 - 1:
        raise ValueError(f"target_lengths must lie in [0, U={U1 - 1}], got min {u_min} max {u_max}")
    if host[-1]:
        b, u = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"targets[{b}, {u}] = {int(targets[b, u])} out of range [0, {V})")
    safe = torch.zeros(B, U1, dtype=torch.long, device=device)  # (B, U+1)
    safe[:, :-1] = torch.where(valid, targets, 0)
    return LatticeInputs(safe, logit_lengths, target_lengths, blank, host_lengths)


# ---------------------------------------------------------------- which kernels

_simulated_cuda = False


@contextmanager
def cuda_kernels_on_cpu():
    """Tests: route CPU tensors through the Numba CUDA kernels (only meaningful under NUMBA_ENABLE_CUDASIM=1), so
    the CUDA path of the fused loss is checked end to end without a GPU."""
    global _simulated_cuda
    from numba import config

    if not config.ENABLE_CUDASIM:
        raise RuntimeError("cuda_kernels_on_cpu() needs NUMBA_ENABLE_CUDASIM=1 (set before numba.cuda is imported)")
    saved, _simulated_cuda = _simulated_cuda, True
    try:
        yield
    finally:
        _simulated_cuda = saved


def uses_cuda_kernels(x: torch.Tensor) -> bool:
    """Whether x's work goes to the CUDA kernels: CUDA tensors, or any under ``cuda_kernels_on_cpu``."""
    return x.is_cuda or _simulated_cuda


def _stream(x: torch.Tensor) -> int:
    return torch.cuda.current_stream(x.device).cuda_stream if x.is_cuda else 0


# ---------------------------------------------------------------- lattice (both paths)

def check_delay_penalty(delay_penalty) -> float:
    value = float(delay_penalty)
    if not math.isfinite(value):
        raise ValueError(f"delay_penalty must be a finite number, got {delay_penalty!r}")
    return value


def penalise_delay(label_lp: torch.Tensor, logit_lengths: torch.Tensor, delay_penalty: float) -> None:
    """In place: label_lp[b, t, u] += delay_penalty * ((T_b - 1) / 2 - t), k2's delay penalty (icefall's
    ``--delay-penalty``; Kang et al., arXiv 2211.00490).

    Every complete alignment emits each of the U_b labels once, so its log-score gains delay_penalty * sum_i
    ((T_b - 1) / 2 - t_i) over its emission frames t_i: the cost becomes -log sum_alignments p(alignment) *
    exp(that), an exact objective whose gradient the lattice gives like any other (d cost / d label_lp is the same
    at the shifted values). Early emissions score more for delay_penalty > 0; centring on (T_b - 1) / 2 keeps the
    shift near 0 on average. Entries at t >= T_b and u >= U_b are never read (-inf stays -inf, NaN stays NaN).
    (B, T) extra elements, on label_lp's device, no synchronisation."""
    B, T, _ = label_lp.shape
    centre = (logit_lengths.to(label_lp.dtype) - 1) * 0.5  # (B,)
    frames = torch.arange(T, dtype=label_lp.dtype, device=label_lp.device)  # (T,)
    label_lp += ((centre[:, None] - frames[None, :]) * delay_penalty)[:, :, None]  # (B, T, 1) over (B, T, U+1)


def lattice(blank_lp: torch.Tensor, label_lp: torch.Tensor, logit_lengths: torch.Tensor,
            target_lengths: torch.Tensor, delay_penalty: float = 0.0):
    """blank_lp, label_lp (B, T, U+1) float32/64 contiguous -> costs (B,), g_blank, g_label (B, T, U+1).

    delay_penalty != 0 first shifts label_lp in place (``penalise_delay``); 0 runs exactly today's arithmetic."""
    if delay_penalty:
        penalise_delay(label_lp, logit_lengths, delay_penalty)
    B, T, U1 = blank_lp.shape
    alpha = torch.empty_like(blank_lp)  # (B, T, U+1)
    beta = torch.empty_like(blank_lp)  # (B, T, U+1)
    costs = torch.empty(B, dtype=blank_lp.dtype, device=blank_lp.device)  # (B,)
    g_blank = torch.empty_like(blank_lp)  # (B, T, U+1)
    g_label = torch.empty_like(blank_lp)  # (B, T, U+1)
    if uses_cuda_kernels(blank_lp):
        from fastasr.kernels import rnnt_cuda

        rnnt_cuda.launch_lattice(blank_lp, label_lp, logit_lengths, target_lengths, alpha, beta, costs,
                                 g_blank, g_label, stream=_stream(blank_lp))
    else:
        from fastasr.kernels import rnnt_cpu

        rnnt_cpu.lattice(blank_lp.numpy(), label_lp.numpy(), logit_lengths.numpy(), target_lengths.numpy(),
                         alpha.numpy(), beta.numpy(), costs.numpy(), g_blank.numpy(), g_label.numpy())
    return costs, g_blank, g_label


# ---------------------------------------------------------------- materialised logits

def gather_log_probs(logits, targets, logit_lengths, target_lengths, blank: int, fused_log_softmax: bool,
                     store_probs: bool = False):
    """logits (B, T, U+1, V) in the compute dtype, contiguous -> log_norm, blank_lp, label_lp (B, T, U+1) and
    probs: the softmax (B, T, U+1, V) if ``store_probs`` on CPU with the fused log-softmax, else None."""
    B, T, U1, V = logits.shape
    if uses_cuda_kernels(logits) and fused_log_softmax:  # the row kernel over all B*T rows: one read of them
        log_norm = torch.zeros(B, T, U1, dtype=logits.dtype, device=logits.device)  # (B, T, U+1)
        blank_lp, label_lp = torch.zeros_like(log_norm), torch.zeros_like(log_norm)  # (B, T, U+1)
        rows_b, rows_t = _all_rows(B, T, logits.device)
        row_log_probs(logits.view(B * T, U1, V), rows_b, rows_t, targets, blank, log_norm, blank_lp, label_lp)
        return log_norm, blank_lp, label_lp, None
    if logits.is_cuda:
        return _gather_torch(logits, targets, blank, fused_log_softmax) + (None,)
    from fastasr.kernels import rnnt_cpu

    log_norm = torch.empty(B, T, U1, dtype=logits.dtype)  # (B, T, U+1)
    blank_lp = torch.empty_like(log_norm)  # (B, T, U+1)
    label_lp = torch.empty_like(log_norm)  # (B, T, U+1)
    store_probs = store_probs and fused_log_softmax
    probs = torch.empty_like(logits) if store_probs else torch.empty(1, 1, 1, 1, dtype=logits.dtype)
    rnnt_cpu.gather_log_probs(logits.numpy(), targets.numpy(), logit_lengths.numpy(), target_lengths.numpy(),
                              blank, fused_log_softmax, log_norm.numpy(), blank_lp.numpy(), label_lp.numpy(),
                              probs.numpy(), store_probs)
    return log_norm, blank_lp, label_lp, probs if store_probs else None


def _all_rows(B: int, T: int, device):
    r = torch.arange(B * T, device=device)  # (B*T,)
    return r // T, r % T


def _gather_torch(logits, targets, blank, fused_log_softmax):
    # CUDA without the fused log-softmax: the logits already are log-probs, so this is two gathers.
    if fused_log_softmax:
        log_norm = torch.logsumexp(logits, dim=-1)  # (B, T, U+1)
    else:
        log_norm = torch.zeros(logits.shape[:3], dtype=logits.dtype, device=logits.device)  # (B, T, U+1)
    impossible = torch.isneginf(log_norm)
    blank_lp = torch.where(impossible, log_norm, logits[..., blank] - log_norm)  # (B, T, U+1)
    label = logits.gather(-1, targets[:, None, :, None].expand(-1, logits.shape[1], -1, 1))[..., 0]  # (B, T, U+1)
    label_lp = torch.where(impossible, log_norm, label - log_norm)  # (B, T, U+1)
    return log_norm, blank_lp.contiguous(), label_lp.contiguous()


def logits_grad(logits, log_norm, probs, targets, logit_lengths, target_lengths, g_blank, g_label, scale,
                blank: int, fused_log_softmax: bool, clamp: float, in_place: bool = False):
    """-> grad (B, T, U+1, V) in the compute dtype: scale[b] * clamp(d cost_b / d logits), 0 on padding.

    CPU with the fused log-softmax needs ``probs`` (from ``gather_log_probs(store_probs=True)``); with
    ``in_place`` the gradient overwrites it. The CUDA path recomputes the softmax from logits and log_norm, in one
    pass over a copy of the logits."""
    if uses_cuda_kernels(logits) and fused_log_softmax:
        B, T, U1, V = logits.shape
        grad = logits.clone()  # (B, T, U+1, V); padding nodes have zero posteriors, so they come out exactly 0
        rows_b, rows_t = _all_rows(B, T, logits.device)
        row_grad(grad.view(B * T, U1, V), rows_b, rows_t, log_norm, g_blank, g_label, targets, scale, blank, clamp)
        return grad
    if logits.is_cuda:
        return _logits_grad_torch(logits, log_norm, targets, logit_lengths, target_lengths, g_blank, g_label,
                                  scale, blank, fused_log_softmax, clamp)
    from fastasr.kernels import rnnt_cpu

    if fused_log_softmax and probs is None:
        raise ValueError("the CPU gradient with the fused log-softmax needs the stored softmax (probs)")
    grad = probs if (in_place and probs is not None) else torch.empty_like(logits)  # (B, T, U+1, V)
    rnnt_cpu.logits_grad(grad.numpy() if probs is None else probs.numpy(), targets.numpy(), logit_lengths.numpy(),
                         target_lengths.numpy(), g_blank.numpy(), g_label.numpy(), scale.numpy(), blank,
                         fused_log_softmax, float(clamp), grad.numpy())
    return grad


def node_grad_torch(logits, log_norm, targets, g_blank, g_label, scale, blank: int, fused_log_softmax: bool,
                    clamp: float):
    """scale x clamp(d cost / d logits) for a block of nodes, in torch: the CUDA path without the fused log-softmax,
    and the formula the row kernels are tested against.

    logits (..., V); log_norm, g_blank, g_label, scale (...); targets (...) int64 label index (0 where g_label is 0).
    Nodes whose g_blank and g_label are 0 (padding, impossible sequences) get exactly 0 for finite logits."""
    fold = clamp <= 0  # without clamping the scale folds into the (...)-sized factors
    s = scale if fold else torch.ones_like(scale)
    if fused_log_softmax:
        finite = ~torch.isneginf(log_norm)
        occ = torch.where(finite, -(g_blank + g_label), 0.0) * s  # (...)
        grad = logits.clone()  # (..., V)
        grad.sub_(torch.where(finite, log_norm, 0.0)[..., None]).exp_().mul_(occ[..., None])
    else:
        grad = torch.zeros_like(logits)  # (..., V)
    grad[..., blank] += g_blank * s
    grad.scatter_add_(-1, targets[..., None], (g_label * s)[..., None])
    if not fold:
        grad.clamp_(-clamp, clamp).mul_(scale[..., None])
    return grad


def _logits_grad_torch(logits, log_norm, targets, logit_lengths, target_lengths, g_blank, g_label, scale, blank,
                       fused_log_softmax, clamp):
    B, T, U1, V = logits.shape
    tgt = targets[:, None, :].expand(B, T, U1)  # (B, T, U+1)
    node_scale = scale[:, None, None].expand(B, T, U1)  # (B, T, U+1)
    grad = node_grad_torch(logits, log_norm, tgt, g_blank, g_label, node_scale, blank, fused_log_softmax, clamp)
    inside = ((torch.arange(T, device=logits.device)[None, :, None] < logit_lengths[:, None, None])
              & (torch.arange(U1, device=logits.device)[None, None, :] <= target_lengths[:, None, None]))  # (B, T, U+1)
    # masked_fill, not a product: logits on padding may be anything, and NaN * 0 is NaN.
    return grad.masked_fill_(~inside[..., None], 0.0)


# ---------------------------------------------------------------- the fused loss's chunks of lattice rows

def row_log_probs(logits, rows_b, rows_t, targets, blank: int, log_norm, blank_lp, label_lp) -> None:
    """logits (n, U', V) contiguous, compute dtype, row r being lattice row (rows_b[r], rows_t[r]) (n,) int64;
    targets (B, U+1). Fills log_norm, blank_lp, label_lp (B, T, U+1) at those rows' first U' nodes."""
    if uses_cuda_kernels(logits):
        from fastasr.kernels import rnnt_cuda

        rnnt_cuda.launch_row_log_probs(logits, rows_b, rows_t, targets, blank, log_norm, blank_lp, label_lp,
                                       stream=_stream(logits))
    else:
        from fastasr.kernels import rnnt_cpu

        rnnt_cpu.row_log_probs(logits.numpy(), rows_b.numpy(), rows_t.numpy(), targets.numpy(), blank,
                               log_norm.numpy(), blank_lp.numpy(), label_lp.numpy())


def row_grad(logits, rows_b, rows_t, log_norm, g_blank, g_label, targets, scale, blank: int, clamp: float):
    """In place: logits (n, U', V) -> scale[b] x clamp(d cost_b / d logits); scale (B,); the rest as above."""
    if uses_cuda_kernels(logits):
        from fastasr.kernels import rnnt_cuda

        rnnt_cuda.launch_row_grad(logits, rows_b, rows_t, log_norm, g_blank, g_label, targets, scale, blank,
                                  float(clamp), stream=_stream(logits))
    else:
        from fastasr.kernels import rnnt_cpu

        rnnt_cpu.row_grad(logits.numpy(), rows_b.numpy(), rows_t.numpy(), log_norm.numpy(), g_blank.numpy(),
                          g_label.numpy(), targets.numpy(), scale.numpy(), blank, float(clamp))
    return logits
