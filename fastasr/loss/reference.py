"""Pure-PyTorch RNN-T loss: the lattice written with torch ops, gradients by autograd.

An independent baseline for tests and benchmarks (it shares no code with the kernels). alpha is swept by
anti-diagonals t + u = n, vectorised over the batch and over u, so it is a fair PyTorch baseline, not a straw man.
"""
from __future__ import annotations

import torch

_FILL = -1e30  # "impossible" as a large finite number: keeps autograd free of (-inf) - (-inf)


def rnnt_loss_reference(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor,
                        target_lengths: torch.Tensor, blank: int = -1, reduction: str = "mean",
                        fused_log_softmax: bool = True, delay_penalty: float = 0.0) -> torch.Tensor:
    """-log P(targets | logits), reduced as ``reduction`` says. ``delay_penalty`` adds delay_penalty *
    ((T_b - 1) / 2 - t) to the log-prob of every label emitted at frame t (k2's delay penalty), as
    ``fastasr.loss.rnnt_loss`` defines it."""
    B, T, U1, V = logits.shape
    blank = blank % V
    dev = logits.device
    lp = logits.log_softmax(-1) if fused_log_softmax else logits  # (B, T, U+1, V)
    blank_lp = lp[..., blank]  # (B, T, U+1)
    tgt = targets.long().clamp(0, V - 1)  # (B, U): padding may hold anything
    label_lp = lp[:, :, :-1].gather(-1, tgt[:, None, :, None].expand(B, T, U1 - 1, 1))[..., 0]  # (B, T, U)
    label_lp = torch.cat([label_lp, torch.full_like(blank_lp[..., :1], _FILL)], dim=-1)  # (B, T, U+1)
    tl, ul = logit_lengths.long(), target_lengths.long()
    if delay_penalty:
        frame = torch.arange(T, device=dev, dtype=lp.dtype)[None, :]  # (1, T)
        label_lp = label_lp + (delay_penalty * ((tl[:, None] - 1) / 2 - frame))[:, :, None]  # (B, T, U+1)

    N = T + U1 - 1  # number of anti-diagonals
    u = torch.arange(U1, device=dev)[None, :]  # (1, U+1)
    t = torch.arange(N, device=dev)[:, None] - u  # (N, U+1): the t of node (diagonal n, u)
    inside = (t >= 0) & (t < T)  # (N, U+1)
    tc = t.clamp(0, T - 1)
    skew_blank = blank_lp[:, tc, u.expand(N, U1)].masked_fill(~inside, _FILL)  # (B, N, U+1)
    skew_label = label_lp[:, tc, u.expand(N, U1)].masked_fill(~inside, _FILL)  # (B, N, U+1)

    alpha = torch.full((B, U1), _FILL, dtype=lp.dtype, device=dev)  # (B, U+1)
    alpha = torch.where(u == 0, torch.zeros_like(alpha), alpha)
    alphas = [alpha]
    for n in range(1, N):
        from_blank = alpha + skew_blank[:, n - 1]  # (t-1, u) -> (t, u)
        from_label = alpha + skew_label[:, n - 1]  # (t, u-1) -> (t, u), shifted right by one u below
        from_label = torch.cat([torch.full_like(from_label[:, :1], _FILL), from_label[:, :-1]], dim=1)
        alpha = torch.logaddexp(from_blank, from_label).masked_fill(~inside[n], _FILL)  # (B, U+1)
        alphas.append(alpha)
    alphas = torch.stack(alphas, dim=1)  # (B, N, U+1)

    b = torch.arange(B, device=dev)
    log_p = alphas[b, tl - 1 + ul, ul] + blank_lp[b, tl - 1, ul]  # (B,)
    costs = -log_p
    if reduction == "none":
        return costs
    return costs.sum() if reduction == "sum" else costs.mean()
