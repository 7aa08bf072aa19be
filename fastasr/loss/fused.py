"""``fused_rnnt_loss``: joint network + log-softmax + RNN-T loss that never holds the (B, T, U+1, V) logits.

Forward walks the valid (b, t) rows of the lattice in chunks; for each chunk it computes the joint's logits
(n, U+1, V), keeps only the log-normaliser, the blank log-prob and the next label's log-prob (n, U+1) and drops the
rest. The lattice kernel turns those into costs and the two posteriors per node. Backward recomputes each chunk's
logits, forms their gradient (softmax x occupancy - posteriors at blank and label), and pushes it through the linear
layer and the activation with plain matmuls. Extra memory is O(chunk x (U+1) x max(V, H)) plus O(B T (U+1)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from fastasr.loss import dispatch
from fastasr.loss.rnnt import check_reduction, reduce_costs

ACTIVATIONS = ("tanh", "relu")
# Elements of one chunk's (n, U+1, max(V, H)) temporaries; about five such tensors are alive at once.
_CHUNK_ELEMS = {"cpu": 1 << 22, "cuda": 1 << 25}


def _activate(z: torch.Tensor, activation: str) -> torch.Tensor:
    return torch.tanh(z) if activation == "tanh" else torch.relu(z)


def _activation_grad(dh: torch.Tensor, z: torch.Tensor, h: torch.Tensor, activation: str) -> torch.Tensor:
    """dh x act'(z), h = act(z): aten's fused backward kernels, one pass each."""
    if activation == "tanh":
        return torch.ops.aten.tanh_backward(dh, h)
    return torch.ops.aten.threshold_backward(dh, z, 0)


def _rows_per_chunk(chunk_size, device: torch.device, U1: int, V: int, H: int) -> int:
    if chunk_size is not None:
        return int(chunk_size)
    budget = _CHUNK_ELEMS["cuda" if device.type == "cuda" else "cpu"]
    return max(1, budget // (U1 * max(V, H)))


def _chunks(logit_lengths: torch.Tensor, rows: int) -> list[tuple[int, int, int]]:
    """(b, t0, t1) row ranges: never across sequences, so a chunk is plain slices of enc and pred (no gathers)."""
    return [(b, t0, min(t0 + rows, tb)) for b, tb in enumerate(logit_lengths.tolist()) for t0 in range(0, tb, rows)]


def _joint(enc, pred, weight, bias, b, t0, t1, activation):
    z = enc[b, t0:t1, None, :] + pred[b, None]  # (n, U+1, H)
    h = _activate(z, activation)  # (n, U+1, H)
    logits = F.linear(h, weight, bias)  # (n, U+1, V)
    return z, h, logits


class _FusedRNNTLoss(torch.autograd.Function):
    # Backward recomputes the logits: under CUDA autocast it must see the same autocast state as forward did, or
    # the recomputed logits would not be the ones the lattice was built from.
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, enc, pred, weight, bias, targets, logit_lengths, target_lengths, blank, activation, rows,
                clamp):
        B, T, _ = enc.shape
        U1 = pred.shape[1]
        cdt = dispatch.compute_dtype(enc.dtype)
        chunks = _chunks(logit_lengths, rows)
        log_norm = torch.zeros(B, T, U1, dtype=cdt, device=enc.device)  # (B, T, U+1)
        blank_lp = torch.zeros_like(log_norm)  # (B, T, U+1)
        label_lp = torch.zeros_like(log_norm)  # (B, T, U+1)
        with torch.no_grad():
            for b, t0, t1 in chunks:
                _, _, logits = _joint(enc, pred, weight, bias, b, t0, t1, activation)
                logits = logits.to(cdt).contiguous()  # (n, U+1, V)
                dispatch.chunk_log_probs(logits, targets[b], blank, log_norm[b, t0:t1], blank_lp[b, t0:t1],
                                         label_lp[b, t0:t1])
                del logits
        costs, g_blank, g_label = dispatch.lattice(blank_lp, label_lp, logit_lengths, target_lengths)
        ctx.save_for_backward(enc, pred, weight, bias, targets, log_norm, g_blank, g_label)
        ctx.opts = (blank, activation, chunks, clamp)
        return costs

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_costs):
        enc, pred, weight, bias, targets, log_norm, g_blank, g_label = ctx.saved_tensors
        blank, activation, chunks, clamp = ctx.opts
        cdt = log_norm.dtype
        V, H = weight.shape
        scale = grad_costs.to(cdt)  # (B,)
        if not scale.is_cuda:
            scale = scale.contiguous()
        grad_enc = torch.zeros(enc.shape, dtype=cdt, device=enc.device)  # (B, T, H)
        grad_pred = torch.zeros(pred.shape, dtype=cdt, device=enc.device)  # (B, U+1, H)
        grad_w = torch.zeros(weight.shape, dtype=cdt, device=enc.device)  # (V, H)
        grad_b = torch.zeros(V, dtype=cdt, device=enc.device)  # (V,)
        with torch.no_grad():
            for b, t0, t1 in chunks:
                z, h, logits = _joint(enc, pred, weight, bias, b, t0, t1, activation)  # (n, U+1, H|H|V)
                dl = dispatch.chunk_grad(logits.to(cdt).contiguous(), log_norm[b, t0:t1], g_blank[b, t0:t1],
                                         g_label[b, t0:t1], targets[b], scale[b], blank, clamp)  # (n, U+1, V)
                del logits
                dl = dl.to(h.dtype)
                if grad_w.dtype == dl.dtype:
                    grad_w.addmm_(dl.reshape(-1, V).t(), h.reshape(-1, H))
                else:
                    grad_w += (dl.reshape(-1, V).t() @ h.reshape(-1, H)).to(cdt)
                grad_b += dl.sum(dim=(0, 1), dtype=cdt)
                dz = _activation_grad(dl @ weight, z, h, activation)  # (n, U+1, H)
                del dl, z, h
                grad_enc[b, t0:t1] = dz.sum(dim=1)
                grad_pred[b] += dz.sum(dim=0, dtype=cdt)
        return (grad_enc.to(enc.dtype), grad_pred.to(pred.dtype), grad_w.to(weight.dtype),
                None if bias is None else grad_b.to(bias.dtype), None, None, None, None, None, None, None)


def fused_rnnt_loss(enc: torch.Tensor, pred: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor, *,
                    blank: int = 0, reduction: str = "mean", activation: str = "tanh",
                    chunk_size: int | None = None, clamp: float = -1, zero_infinity: bool = False) -> torch.Tensor:
    """Joint network + RNN-T loss in one operation, never holding the (B, T, U+1, V) logits.

    Equal in value and in the gradients of ``enc``, ``pred``, ``weight`` and ``bias`` to
    ``rnnt_loss(F.linear(act(enc[:, :, None] + pred[:, None]), weight, bias), targets, logit_lengths,
    target_lengths, blank=blank, reduction=reduction, clamp=clamp)``.

    Args:
        enc: (B, T, H) encoder projection; pred: (B, U+1, H) predictor projection; weight: (V, H); bias: (V,) or None.
        targets, logit_lengths, target_lengths, blank, reduction, clamp, zero_infinity: as in ``rnnt_loss``.
        activation: "tanh" or "relu".
        chunk_size: (b, t) rows per chunk (each row is U+1 joint vectors); a chunk never spans two sequences, so it
            holds min(chunk_size, logit_lengths[b]) rows. None picks a size that keeps one chunk's temporaries near
            16 MB (CPU) / 128 MB (CUDA) per tensor. It bounds the extra memory, not the result.

    The joint's matmuls run in the inputs' dtype (as the unfused path would); log-softmax, the lattice and the
    gradient accumulation run in float32 (float64 for float64 inputs). Rows beyond ``logit_lengths`` are never
    computed; their gradients, and those of ``pred`` beyond ``target_lengths``, are exactly 0. Impossible
    sequences: cost +inf (0 with ``zero_infinity``) and no gradient contribution, never NaN, as in ``rnnt_loss``.
    """
    dispatch.check_float("enc", enc, 3)
    dispatch.check_float("pred", pred, 3)
    dispatch.check_float("weight", weight, 2)
    check_reduction(reduction)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    B, T, H = enc.shape
    V = weight.shape[0]
    if pred.shape[0] != B or pred.shape[2] != H or weight.shape[1] != H:
        raise ValueError(f"shape mismatch: enc {tuple(enc.shape)}, pred {tuple(pred.shape)}, weight "
                         f"{tuple(weight.shape)} (want (B, T, H), (B, U+1, H), (V, H))")
    tensors = [("pred", pred), ("weight", weight)]
    if bias is not None:
        dispatch.check_float("bias", bias, 1)
        if bias.shape[0] != V:
            raise ValueError(f"bias must be ({V},), got {tuple(bias.shape)}")
        tensors.append(("bias", bias))
    for name, x in tensors:
        if x.device != enc.device:
            raise ValueError(f"{name} is on {x.device}, enc on {enc.device}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    U1 = pred.shape[1]
    targets, logit_lengths, target_lengths, blank = dispatch.check_lattice_inputs(
        targets, logit_lengths, target_lengths, B=B, T=T, U1=U1, V=V, blank=blank, device=enc.device)
    rows = _rows_per_chunk(chunk_size, enc.device, U1, V, H)
    costs = _FusedRNNTLoss.apply(enc, pred, weight, bias, targets, logit_lengths, target_lengths, blank,
                                 activation, rows, float(clamp))  # (B,)
    return reduce_costs(costs, reduction, zero_infinity)
