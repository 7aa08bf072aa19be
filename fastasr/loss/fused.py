"""``fused_rnnt_loss``: joint network + log-softmax + RNN-T loss that never holds the (B, T, U+1, V) logits.

The valid (b, t) rows of every sequence are packed into chunks of ``chunk_size`` rows (sequences ordered by target
length, so a chunk's rows need about the same number of label positions; each chunk is trimmed to its largest
U_b + 1). Chunks cross sequence boundaries, so the kernel launches per call grow with the total rows, not with the
batch size. Forward, per chunk: gather the rows' encoder and predictor vectors, activation, one GEMM for the
logits (n, U', V), one kernel that reads them once for the log-normaliser and the blank / label log-probs. The
lattice kernel turns those into costs and the two posteriors per node. Backward recomputes each chunk's logits,
overwrites them with their gradient in one kernel (softmax x occupancy - posteriors at blank and label), and pushes
it through the linear layer and the activation with three GEMMs (weight, hidden, and the per-sequence sum for the
predictor side). Extra memory is O(chunk x U' x max(V, H)) plus O(B T (U+1)).

Precision: the joint's GEMMs run on the tensor cores when they can, in bf16 under CUDA autocast (float32 output and
accumulation) and TF32 for float32 CUDA inputs (scoped to this call); log-softmax, the lattice and every gradient
accumulator are float32 (float64 for float64 inputs). The one device-to-host transfer per call is the lengths
(with the target check), in ``dispatch.check_lattice_inputs``, and none when the caller passes them from its CPU
batch (``host_lengths``); backward transfers nothing.
"""
from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import NamedTuple

import numpy as np
import torch

from fastasr.loss import dispatch
from fastasr.loss.rnnt import check_reduction, reduce_costs

ACTIVATIONS = ("tanh", "relu")
# Elements of one chunk's (n, U', max(V, H)) temporaries; about five such tensors are alive at once.
_CHUNK_ELEMS = {"cpu": 1 << 22, "cuda": 1 << 25}
_mm_out_dtype_works: bool | None = None  # torch.mm(..., out_dtype=) for bf16/fp16 CUDA operands (torch >= 2.8)


class RowPlan(NamedTuple):
    rows_b: torch.Tensor  # (R,) int64: the sequence of each packed lattice row
    rows_t: torch.Tensor  # (R,) int64: its frame
    flat: torch.Tensor  # (R,) int64: b * T + t, the row of enc viewed as (B*T, H)
    order: torch.Tensor  # (B,) int64: sequences by decreasing target length, the packing order
    chunks: tuple  # (r0, r1, U', p0, p1): rows [r0, r1), U' label positions, sequences order[p0:p1]


def plan_rows(logit_lengths: torch.Tensor, target_lengths: torch.Tensor, host_lengths: np.ndarray, rows: int,
              T: int) -> RowPlan:
    """Pack the R = sum T_b valid lattice rows into chunks of ``rows``; the device side is computed on the device
    from the device lengths (no host-to-device copy), the chunk bounds on the host from its copy of them."""
    tl, ul = host_lengths
    order_h = np.argsort(-ul, kind="stable")
    ends_h = np.cumsum(tl[order_h])
    R = int(ends_h[-1])
    chunks = []
    for r0 in range(0, R, rows):
        r1 = min(r0 + rows, R)
        p0 = int(np.searchsorted(ends_h, r0, side="right"))
        p1 = int(np.searchsorted(ends_h, r1 - 1, side="right")) + 1
        # Rows are in decreasing U_b, so the chunk's first sequence has its largest U_b. Ties in U_b may be ordered
        # differently on the device; the U_b of each row, and so U', do not depend on that order.
        chunks.append((r0, r1, int(ul[order_h[p0]]) + 1, p0, p1))
    order = torch.argsort(target_lengths, descending=True, stable=True)  # (B,)
    t_sorted = logit_lengths[order]  # (B,)
    ends = torch.cumsum(t_sorted, 0)  # (B,)
    r = torch.arange(R, device=logit_lengths.device)  # (R,)
    pos = torch.searchsorted(ends, r, right=True)  # (R,)
    rows_b = order[pos]
    rows_t = r - (ends - t_sorted)[pos]
    return RowPlan(rows_b, rows_t, rows_b * T + rows_t, order, tuple(chunks))


def _rows_per_chunk(chunk_size, device: torch.device, U1: int, V: int, H: int) -> int:
    if chunk_size is not None:
        return int(chunk_size)
    budget = _CHUNK_ELEMS["cuda" if device.type == "cuda" else "cpu"]
    return max(1, budget // (U1 * max(V, H)))


def _mm(a: torch.Tensor, b: torch.Tensor, out_dtype: torch.dtype) -> torch.Tensor:
    """a @ b as ``out_dtype``: bf16/fp16 operands, float32 accumulation and output, as on the tensor cores (the
    product is never rounded to the operands' precision). Without torch's out_dtype GEMM (CPU, torch < 2.8) the
    operands are widened first: the same numbers, more memory traffic."""
    global _mm_out_dtype_works
    if a.dtype == out_dtype:
        return a @ b
    if a.is_cuda and _mm_out_dtype_works is not False:
        try:
            out = torch.mm(a, b, out_dtype=out_dtype)
            _mm_out_dtype_works = True
            return out
        except (RuntimeError, TypeError):  # older torch: no out_dtype overload
            _mm_out_dtype_works = False
    return a.to(out_dtype) @ b.to(out_dtype)


@contextmanager
def _tf32():
    """TF32 tensor cores for this call's float32 CUDA GEMMs; the caller's setting comes back afterwards."""
    m = torch.backends.cuda.matmul
    attr, on = ("fp32_precision", "tf32") if hasattr(m, "fp32_precision") else ("allow_tf32", True)
    try:
        saved = getattr(m, attr)
        setattr(m, attr, on)
    except RuntimeError:  # the caller mixed torch's old and new TF32 settings: leave theirs alone
        yield
        return
    try:
        yield
    finally:
        setattr(m, attr, saved)


class _Joint(NamedTuple):
    """The joint's operands in the GEMM dtype, and what the loss computes in."""
    enc2d: torch.Tensor  # (B*T, H)
    pred: torch.Tensor  # (B, U+1, H)
    weight: torch.Tensor  # (V, H)
    bias: torch.Tensor | None  # (V,) in the compute dtype
    activation: str
    cdt: torch.dtype

    @classmethod
    def of(cls, enc, pred, weight, bias, activation, mm_dtype):
        cdt = dispatch.compute_dtype(enc.dtype)
        return cls(enc.reshape(-1, enc.shape[2]).to(mm_dtype), pred.to(mm_dtype), weight.to(mm_dtype),
                   None if bias is None else bias.to(cdt), activation, cdt)

    def hidden(self, plan: RowPlan, r0: int, r1: int, U1: int) -> torch.Tensor:
        h = self.pred[:, :U1].index_select(0, plan.rows_b[r0:r1])  # (n, U', H)
        h += self.enc2d.index_select(0, plan.flat[r0:r1])[:, None]  # (n, U', H)
        return h.tanh_() if self.activation == "tanh" else h.relu_()

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        n, U1, H = h.shape
        if self.weight.dtype == self.cdt and self.bias is not None:
            out = torch.addmm(self.bias, h.view(-1, H), self.weight.t())  # (n U', V)
        else:
            out = _mm(h.view(-1, H), self.weight.t(), self.cdt)  # (n U', V)
            if self.bias is not None:
                out += self.bias
        return out.view(n, U1, -1)

    def activation_grad(self, dh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """dh x act'(z) from h = act(z) alone (relu: h > 0 exactly where z > 0); aten's fused backward kernels."""
        if self.activation == "tanh":
            return torch.ops.aten.tanh_backward(dh, h)
        return torch.ops.aten.threshold_backward(dh, h, 0)


def _precision(joint: _Joint, device: torch.device, tf32: bool):
    if tf32 and device.type == "cuda" and joint.weight.dtype == torch.float32:
        return _tf32()
    return nullcontext()


class _FusedRNNTLoss(torch.autograd.Function):
    # The body runs with autocast off: the GEMM dtype was chosen once by the caller (``mm_dtype``), so backward
    # recomputes exactly the logits the lattice was built from, whatever thread or autocast state it runs in.
    @staticmethod
    def forward(ctx, enc, pred, weight, bias, targets, logit_lengths, target_lengths, host_lengths, blank,
                activation, rows, clamp, mm_dtype, tf32, delay_penalty):
        B, T, _ = enc.shape
        U1 = pred.shape[1]
        joint = _Joint.of(enc, pred, weight, bias, activation, mm_dtype)
        plan = plan_rows(logit_lengths, target_lengths, host_lengths, rows, T)
        log_norm = torch.zeros(B, T, U1, dtype=joint.cdt, device=enc.device)  # (B, T, U+1)
        blank_lp = torch.zeros_like(log_norm)  # (B, T, U+1)
        label_lp = torch.zeros_like(log_norm)  # (B, T, U+1)
        with torch.no_grad(), torch.autocast(enc.device.type, enabled=False), _precision(joint, enc.device, tf32):
            for r0, r1, u1, _, _ in plan.chunks:
                logits = joint.logits(joint.hidden(plan, r0, r1, u1))  # (n, U', V)
                dispatch.row_log_probs(logits, plan.rows_b[r0:r1], plan.rows_t[r0:r1], targets, blank, log_norm,
                                       blank_lp, label_lp)
                del logits
        costs, g_blank, g_label = dispatch.lattice(blank_lp, label_lp, logit_lengths, target_lengths, delay_penalty)
        ctx.save_for_backward(enc, pred, weight, bias, targets, log_norm, g_blank, g_label, *plan[:4])
        ctx.opts = (blank, activation, plan.chunks, clamp, mm_dtype, tf32)
        return costs

    @staticmethod
    def backward(ctx, grad_costs):
        enc, pred, weight, bias, targets, log_norm, g_blank, g_label, *plan = ctx.saved_tensors
        blank, activation, chunks, clamp, mm_dtype, tf32 = ctx.opts
        plan = RowPlan(*plan, chunks)
        joint = _Joint.of(enc, pred, weight, bias, activation, mm_dtype)
        cdt = joint.cdt
        B, T, H = enc.shape
        V = weight.shape[0]
        scale = grad_costs.to(cdt).contiguous()  # (B,)
        grad_enc = torch.zeros(B * T, H, dtype=cdt, device=enc.device)  # (B*T, H)
        grad_pred = torch.zeros(pred.shape, dtype=cdt, device=enc.device)  # (B, U+1, H)
        grad_w = torch.zeros(weight.shape, dtype=cdt, device=enc.device)  # (V, H)
        grad_b = torch.zeros(V, dtype=cdt, device=enc.device)  # (V,)
        with torch.no_grad(), torch.autocast(enc.device.type, enabled=False), _precision(joint, enc.device, tf32):
            for r0, r1, u1, p0, p1 in plan.chunks:
                rows_b = plan.rows_b[r0:r1]
                h = joint.hidden(plan, r0, r1, u1)  # (n, U', H)
                dl = joint.logits(h)  # (n, U', V)
                dispatch.row_grad(dl, rows_b, plan.rows_t[r0:r1], log_norm, g_blank, g_label, targets, scale, blank,
                                  clamp)  # (n, U', V), now d loss / d logits
                grad_b += dl.sum(dim=(0, 1))
                dl = dl.to(mm_dtype).view(-1, V)  # (n U', V)
                h2 = h.view(-1, H)  # (n U', H)
                if mm_dtype == cdt:
                    grad_w.addmm_(dl.t(), h2)
                else:
                    grad_w += _mm(dl.t(), h2, cdt)
                dz = joint.activation_grad(dl @ joint.weight, h2).view(h.shape)  # (n, U', H)
                del dl, h, h2
                grad_enc.index_copy_(0, plan.flat[r0:r1], dz.sum(dim=1, dtype=cdt))  # each row is in one chunk
                # The predictor side sums dz over each sequence's rows: a GEMM with the chunk's (k, n) 0/1 row-to-
                # sequence matrix (k sequences, few), deterministic unlike an atomic index_add over n rows.
                seqs = plan.order[p0:p1]  # (k,)
                member = (rows_b[None, :] == seqs[:, None]).to(mm_dtype)  # (k, n)
                per_seq = _mm(member, dz.view(dz.shape[0], -1), cdt).view(len(seqs), u1, H)  # (k, U', H)
                grad_pred[:, :u1].index_add_(0, seqs, per_seq)
                del dz
        return (grad_enc.view(enc.shape).to(enc.dtype), grad_pred.to(pred.dtype), grad_w.to(weight.dtype),
                None if bias is None else grad_b.to(bias.dtype)) + (None,) * 11


def _matmul_dtype(enc: torch.Tensor) -> torch.dtype:
    """The GEMM operand dtype: the autocast dtype when the call runs under autocast on enc's device (and the
    inputs are float32 or already that dtype), else the inputs' own."""
    device = enc.device.type
    if enc.dtype != torch.float64 and torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return enc.dtype


def fused_rnnt_loss(enc: torch.Tensor, pred: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                    targets: torch.Tensor, logit_lengths: torch.Tensor, target_lengths: torch.Tensor, *,
                    blank: int = 0, reduction: str = "mean", activation: str = "tanh",
                    chunk_size: int | None = None, clamp: float = -1, zero_infinity: bool = False,
                    allow_tf32: bool = True, host_lengths=None, delay_penalty: float = 0.0) -> torch.Tensor:
    """Joint network + RNN-T loss in one operation, never holding the (B, T, U+1, V) logits.

    Equal in value and in the gradients of ``enc``, ``pred``, ``weight`` and ``bias`` to
    ``rnnt_loss(F.linear(act(enc[:, :, None] + pred[:, None]), weight, bias), targets, logit_lengths,
    target_lengths, blank=blank, reduction=reduction, clamp=clamp, delay_penalty=delay_penalty)``.

    Args:
        enc: (B, T, H) encoder projection; pred: (B, U+1, H) predictor projection; weight: (V, H); bias: (V,) or None.
        targets, logit_lengths, target_lengths, blank, reduction, clamp, zero_infinity, delay_penalty: as in
            ``rnnt_loss`` (the delay penalty shifts the (B, T, U+1) label log-probs in place before the lattice: no
            extra memory, and backward is unchanged).
        activation: "tanh" or "relu".
        chunk_size: (b, t) rows per chunk (each row is up to U+1 joint vectors). Rows of all sequences are packed
            together, so a chunk may span several sequences. None picks a size that keeps one chunk's temporaries
            near 16 MB (CPU) / 128 MB (CUDA) per tensor. It bounds the extra memory, not the result.
        allow_tf32: float32 CUDA inputs use TF32 tensor cores for the joint's GEMMs (set only for this call).
        host_lengths: optional (logit_lengths, target_lengths) on the host (CPU tensors or arrays), equal to the
            device ones, when the caller has them from its CPU batch: the call then makes no device-to-host copy at
            all, and the target-id check becomes a device-side assert (a bad id aborts the CUDA context).

    The joint's GEMMs take the inputs' dtype, or bf16 (autocast's dtype) when called under autocast on the
    inputs' device, with float32 outputs; log-softmax, the lattice and the gradient accumulation run in float32
    (float64 for float64 inputs). Rows beyond ``logit_lengths`` are never computed; their gradients, and those of
    ``pred`` beyond ``target_lengths``, are exactly 0. Impossible sequences: cost +inf (0 with ``zero_infinity``)
    and no gradient contribution, never NaN, as in ``rnnt_loss``.
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
    targets, logit_lengths, target_lengths, blank, host_lengths = dispatch.check_lattice_inputs(
        targets, logit_lengths, target_lengths, B=B, T=T, U1=U1, V=V, blank=blank, device=enc.device,
        host_lengths=host_lengths)
    rows = _rows_per_chunk(chunk_size, enc.device, U1, V, H)
    delay_penalty = dispatch.check_delay_penalty(delay_penalty)
    costs = _FusedRNNTLoss.apply(enc, pred, weight, bias, targets, logit_lengths, target_lengths, host_lengths,
                                 blank, activation, rows, float(clamp), _matmul_dtype(enc), bool(allow_tf32),
                                 delay_penalty)  # (B,)
    return reduce_costs(costs, reduction, zero_infinity)
