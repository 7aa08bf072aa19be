"""``rnnt_loss`` on materialised logits: torchaudio.functional.rnnt_loss's signature and semantics."""
from __future__ import annotations

import torch

from fastasr.loss import dispatch


class _RNNTLoss(torch.autograd.Function):
    """Per-sequence costs (B,). On CPU the forward keeps the softmax in a logits-sized workspace (the peak, during
    backward, is logits + gradient either way) and backward turns it into the gradient in place; on CUDA only
    (B, T, U+1) lattice quantities are kept and backward recomputes the softmax."""

    @staticmethod
    def forward(ctx, logits, targets, logit_lengths, target_lengths, blank, clamp, fused_log_softmax, delay_penalty):
        x = logits.to(dispatch.compute_dtype(logits.dtype)).contiguous()  # (B, T, U+1, V)
        log_norm, blank_lp, label_lp, probs = dispatch.gather_log_probs(
            x, targets, logit_lengths, target_lengths, blank, fused_log_softmax, store_probs=True)
        costs, g_blank, g_label = dispatch.lattice(blank_lp, label_lp, logit_lengths, target_lengths, delay_penalty)
        ctx.save_for_backward(logits, targets, logit_lengths, target_lengths, log_norm, g_blank, g_label)
        ctx.probs = probs  # (B, T, U+1, V) or None; consumed by the first backward
        ctx.opts = (blank, clamp, fused_log_softmax)
        return costs

    @staticmethod
    def backward(ctx, grad_costs):
        logits, targets, logit_lengths, target_lengths, log_norm, g_blank, g_label = ctx.saved_tensors
        blank, clamp, fused_log_softmax = ctx.opts
        x = logits.to(dispatch.compute_dtype(logits.dtype)).contiguous()  # (B, T, U+1, V)
        probs, ctx.probs = ctx.probs, None
        if probs is None and fused_log_softmax and not dispatch.uses_cuda_kernels(x):  # a second backward
            probs = dispatch.gather_log_probs(x, targets, logit_lengths, target_lengths, blank, True,
                                              store_probs=True)[3]
        scale = grad_costs.to(x.dtype).contiguous()  # (B,)
        grad = dispatch.logits_grad(x, log_norm, probs, targets, logit_lengths, target_lengths, g_blank, g_label,
                                    scale, blank, fused_log_softmax, clamp, in_place=True)  # (B, T, U+1, V)
        return grad.to(logits.dtype), None, None, None, None, None, None, None


def reduce_costs(costs: torch.Tensor, reduction: str, zero_infinity: bool) -> torch.Tensor:
    if zero_infinity:
        costs = torch.where(torch.isinf(costs), torch.zeros_like(costs), costs)
    if reduction == "none":
        return costs
    if reduction == "sum":
        return costs.sum()
    return costs.mean()


def check_reduction(reduction: str) -> None:
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"reduction must be 'none', 'mean' or 'sum', got {reduction!r}")


def rnnt_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
              target_lengths: torch.Tensor, blank: int = -1, clamp: float = -1, reduction: str = "mean",
              fused_log_softmax: bool = True, *, zero_infinity: bool = False,
              delay_penalty: float = 0.0) -> torch.Tensor:
    """RNN-Transducer loss (Graves 2012), the signature and semantics of ``torchaudio.functional.rnnt_loss``.

    Args:
        logits: (B, T, U+1, V) joint-network outputs; float32, float16, bfloat16 or float64, CPU or CUDA.
        targets: (B, U) int32/int64 label ids; entries beyond ``target_lengths`` are ignored (any value).
        logit_lengths: (B,) int32/int64, each in [1, T].
        target_lengths: (B,) int32/int64, each in [0, U].
        blank: blank id; negative counts from the end (-1 is V-1).
        clamp: if > 0, each sequence's gradient of the logits is clamped to [-clamp, clamp] (before reduction).
        reduction: "none" -> (B,) costs; "mean" -> their mean over the batch; "sum" -> their sum.
        fused_log_softmax: True: log-softmax over V is part of the loss. False: ``logits`` already are
            log-probabilities, and the gradient is the gradient with respect to them (non-zero only at the blank
            and at the next label of each node).
        zero_infinity: (keyword, not in torchaudio) report impossible sequences' cost as 0 instead of +inf.
        delay_penalty: (keyword, not in torchaudio) k2's / icefall's delay penalty: each label emitted at frame t
            scores delay_penalty * ((T_b - 1) / 2 - t) more, so the cost is
            -log sum_alignments p(alignment) * exp(delay_penalty * sum_i ((T_b - 1) / 2 - t_i)), t_i the frames
            where the alignment emits labels; its value and gradient are exact. > 0 pulls emissions earlier
            (< 0 pushes them later); 0, the default, is the plain loss, bit for bit.

    Arithmetic is float32 for float16/bfloat16/float32 inputs and float64 for float64; the gradient has the
    input's dtype. Defined edge cases: U = 0 (blank-only alignment), T = 1, padding beyond the lengths (gradient
    exactly 0 there). A sequence whose every alignment has probability 0 (e.g. -inf log-probs where the path must
    go) has cost +inf and an all-zero gradient, never NaN. Lengths of 0 for the logits, or larger than the padded
    sizes, and target ids outside [0, V) raise ValueError.
    """
    dispatch.check_float("logits", logits, 4)
    check_reduction(reduction)
    B, T, U1, V = logits.shape
    targets, logit_lengths, target_lengths, blank, _ = dispatch.check_lattice_inputs(
        targets, logit_lengths, target_lengths, B=B, T=T, U1=U1, V=V, blank=blank, device=logits.device)
    delay_penalty = dispatch.check_delay_penalty(delay_penalty)
    costs = _RNNTLoss.apply(logits, targets, logit_lengths, target_lengths, blank, float(clamp),
                            bool(fused_log_softmax), delay_penalty)  # (B,)
    return reduce_costs(costs, reduction, zero_infinity)
