"""rnnt_loss against published numbers, a float64 NumPy forward-backward, a PyTorch-autograd lattice and gradcheck."""
import numpy as np
import pytest
import torch

from fastasr.loss import rnnt_loss
from fastasr.loss.reference import rnnt_loss_reference

# warp-transducer's small case (also in torchaudio's and NeMo's suites): acts 1x2x3x5, labels [1, 2], blank 0.
WARP_ACTS = [[[[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.6, 0.1, 0.1], [0.1, 0.1, 0.2, 0.8, 0.1]],
              [[0.1, 0.6, 0.1, 0.1, 0.1], [0.1, 0.1, 0.2, 0.1, 0.1], [0.7, 0.1, 0.2, 0.1, 0.1]]]]
WARP_COST = 4.495666
WARP_GRAD_LOGITS = [[[[-0.13116688, -0.3999269, 0.17703125, 0.17703125, 0.17703125],
                      [-0.18572757, 0.12247056, -0.18168412, 0.12247056, 0.12247056],
                      [-0.32091254, 0.06269141, 0.06928472, 0.12624499, 0.06269141]],
                     [[0.05456069, -0.21824276, 0.05456069, 0.05456069, 0.05456069],
                      [0.12073959, 0.12073959, -0.48295835, 0.12073959, 0.12073959],
                      [-0.6925882, 0.16871116, 0.18645467, 0.16871116, 0.16871116]]]]
# The same case's gradient with respect to the log-probs (warp-transducer's pytorch binding test).
WARP_GRAD_LOGPROBS = [[[[-0.308198071906, -0.6918019280939998, 0.0, 0.0, 0.0],
                        [-0.308198071906, 0.0, -0.3836038561880001, 0.0, 0.0],
                        [-0.3836038561880001, 0.0, 0.0, 0.0, 0.0]],
                       [[0.0, -0.308198071906, 0.0, 0.0, 0.0],
                        [0.0, 0.0, -0.6163961438119995, 0.0, 0.0],
                        [-0.9999999999999991, 0.0, 0.0, 0.0, 0.0]]]]


def numpy_rnnt(logits, targets, tlen, ulen, blank, fused_log_softmax=True):
    """Plain float64 forward-backward for one sequence: cost and d cost / d logits (T, U+1, V)."""
    x = np.asarray(logits, dtype=np.float64)[:tlen, :ulen + 1]
    if fused_log_softmax:
        m = x.max(-1, keepdims=True)
        lp = x - (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))
    else:
        lp = x
    T, U1, V = lp.shape
    alpha = np.full((T, U1), -np.inf)
    beta = np.full((T, U1), -np.inf)
    alpha[0, 0] = 0.0
    for t in range(T):
        for u in range(U1):
            if t == 0 and u == 0:
                continue
            a = alpha[t - 1, u] + lp[t - 1, u, blank] if t > 0 else -np.inf
            b = alpha[t, u - 1] + lp[t, u - 1, targets[u - 1]] if u > 0 else -np.inf
            alpha[t, u] = np.logaddexp(a, b)
    beta[T - 1, U1 - 1] = lp[T - 1, U1 - 1, blank]
    for t in range(T - 1, -1, -1):
        for u in range(U1 - 1, -1, -1):
            if t == T - 1 and u == U1 - 1:
                continue
            a = beta[t + 1, u] + lp[t, u, blank] if t < T - 1 else -np.inf
            b = beta[t, u + 1] + lp[t, u, targets[u]] if u < U1 - 1 else -np.inf
            beta[t, u] = np.logaddexp(a, b)
    log_p = beta[0, 0]
    g_lp = np.zeros_like(lp)  # d cost / d log-probs
    for t in range(T):
        for u in range(U1):
            nxt = beta[t + 1, u] if t < T - 1 else (0.0 if u == U1 - 1 else -np.inf)
            g_lp[t, u, blank] -= np.exp(alpha[t, u] + lp[t, u, blank] + nxt - log_p)
            if u < U1 - 1:
                g_lp[t, u, targets[u]] -= np.exp(alpha[t, u] + lp[t, u, targets[u]] + beta[t, u + 1] - log_p)
    if fused_log_softmax:
        g = g_lp - np.exp(lp) * g_lp.sum(-1, keepdims=True)
    else:
        g = g_lp
    full = np.zeros(np.shape(logits))
    full[:tlen, :ulen + 1] = g
    return -log_p, full


def random_case(seed, B=None, T=None, U=None, V=None, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    B = B or int(torch.randint(1, 5, (1,), generator=g))
    T = T or int(torch.randint(1, 9, (1,), generator=g))
    U = U if U is not None else int(torch.randint(0, 6, (1,), generator=g))
    V = V or int(torch.randint(2, 9, (1,), generator=g))
    logits = (torch.randn(B, T, U + 1, V, generator=g) * 2).to(dtype)
    targets = torch.randint(0, V, (B, U), generator=g, dtype=torch.int32)
    logit_lengths = torch.randint(1, T + 1, (B,), generator=g)
    logit_lengths[0] = T
    target_lengths = torch.randint(0, U + 1, (B,), generator=g, dtype=torch.int32)
    target_lengths[-1] = U
    blank = int(torch.randint(-V, V, (1,), generator=g))
    return logits, targets, logit_lengths, target_lengths, blank


def loss_and_grad(fn, logits, *args, **kw):
    x = logits.detach().clone().requires_grad_(True)
    loss = fn(x, *args, **kw)
    loss.sum().backward()
    return loss.detach(), x.grad


def test_warp_transducer_small_case():
    acts = torch.tensor(WARP_ACTS)
    args = (torch.tensor([[1, 2]], dtype=torch.int32), torch.tensor([2], dtype=torch.int32),
            torch.tensor([2], dtype=torch.int32))
    cost, grad = loss_and_grad(rnnt_loss, acts, *args, blank=0, reduction="sum")
    assert abs(cost.item() - WARP_COST) < 1e-5, cost.item()
    torch.testing.assert_close(grad, torch.tensor(WARP_GRAD_LOGITS), atol=1e-6, rtol=1e-5)
    # Log-probs in, fused_log_softmax=False: the gradient is the one with respect to the log-probs.
    cost, grad = loss_and_grad(rnnt_loss, acts.log_softmax(-1), *args, blank=0, reduction="sum",
                               fused_log_softmax=False)
    assert abs(cost.item() - WARP_COST) < 1e-5, cost.item()
    torch.testing.assert_close(grad, torch.tensor(WARP_GRAD_LOGPROBS), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("fused_log_softmax", [True, False])
@pytest.mark.parametrize("seed", range(12))
def test_matches_numpy_float64_reference(seed, fused_log_softmax):
    logits, targets, tl, ul, blank = random_case(seed)
    if not fused_log_softmax:
        logits = logits.log_softmax(-1)
    cost, grad = loss_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="none",
                               fused_log_softmax=fused_log_softmax)
    V = logits.shape[-1]
    for b in range(logits.shape[0]):
        want_cost, want_grad = numpy_rnnt(logits[b].numpy(), targets[b].numpy(), int(tl[b]), int(ul[b]),
                                          blank % V, fused_log_softmax)
        assert abs(cost[b].item() - want_cost) <= 1e-4 * max(1.0, want_cost), (b, cost[b].item(), want_cost)
        np.testing.assert_allclose(grad[b].numpy(), want_grad, atol=2e-5, err_msg=f"sequence {b}")


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("seed", range(4))
def test_matches_torch_autograd_reference(seed, reduction):
    logits, targets, tl, ul, blank = random_case(100 + seed, B=3, T=7, U=4, V=6, dtype=torch.float64)
    cost, grad = loss_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction=reduction)
    want_cost, want_grad = loss_and_grad(rnnt_loss_reference, logits, targets, tl, ul, blank=blank,
                                         reduction=reduction)
    torch.testing.assert_close(cost, want_cost, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(grad, want_grad, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("fused_log_softmax", [True, False])
def test_gradcheck_float64(fused_log_softmax):
    logits, targets, tl, ul, blank = random_case(7, B=2, T=3, U=2, V=4, dtype=torch.float64)
    x = logits.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda z: rnnt_loss(z, targets, tl, ul, blank=blank, reduction="none", fused_log_softmax=fused_log_softmax),
        (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_inputs_compute_in_float32(dtype):
    logits, targets, tl, ul, blank = random_case(3, B=3, T=6, U=4, V=7)
    low = logits.to(dtype)
    cost, grad = loss_and_grad(rnnt_loss, low, targets, tl, ul, blank=blank, reduction="none")
    want_cost, want_grad = loss_and_grad(rnnt_loss, low.float(), targets, tl, ul, blank=blank, reduction="none")
    assert cost.dtype == torch.float32 and grad.dtype == dtype, (cost.dtype, grad.dtype)
    torch.testing.assert_close(cost, want_cost, atol=0, rtol=0)  # float32 arithmetic on the same values
    torch.testing.assert_close(grad, want_grad.to(dtype), atol=0, rtol=0)


def test_u0_and_t1():
    # U = 0: the only alignment is T blanks. T = 1 with U labels: U labels then one blank, all at t = 0.
    x = torch.randn(2, 4, 1, 5, dtype=torch.float64)
    lp = x.log_softmax(-1)
    cost = rnnt_loss(x, torch.zeros(2, 0, dtype=torch.int64), torch.tensor([4, 2]), torch.tensor([0, 0]),
                     blank=0, reduction="none")
    torch.testing.assert_close(cost, torch.stack([-lp[0, :4, 0, 0].sum(), -lp[1, :2, 0, 0].sum()]))
    x = torch.randn(1, 1, 3, 5, dtype=torch.float64)
    lp = x.log_softmax(-1)
    cost = rnnt_loss(x, torch.tensor([[2, 3]]), torch.tensor([1]), torch.tensor([2]), blank=4, reduction="none")
    torch.testing.assert_close(cost, -(lp[0, 0, 0, 2] + lp[0, 0, 1, 3] + lp[0, 0, 2, 4])[None])


def test_padding_gets_exactly_zero_gradient_and_any_value():
    logits, targets, tl, ul, blank = random_case(11, B=3, T=6, U=4, V=5)
    tl[:] = torch.tensor([6, 3, 1])
    ul[:] = torch.tensor([4, 2, 0])
    targets[1, 2:] = -1  # padding values are never read
    targets[2, :] = 99
    junk = logits.clone()
    junk[1, 3:] = float("nan")
    junk[1, :, 3:] = float("inf")
    cost, grad = loss_and_grad(rnnt_loss, junk, targets, tl, ul, blank=blank, reduction="none")
    want, _ = loss_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="none")
    torch.testing.assert_close(cost, want)
    assert torch.isfinite(grad).all()
    assert (grad[1, 3:] == 0).all() and (grad[1, :, 3:] == 0).all() and (grad[2, 1:] == 0).all()
    assert (grad[2, :, 1:] == 0).all()


def test_reductions_and_clamp():
    logits, targets, tl, ul, blank = random_case(5, B=4, T=5, U=3, V=6)
    none, g_none = loss_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="none")
    total, g_sum = loss_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="sum")
    mean, g_mean = loss_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="mean")
    torch.testing.assert_close(total, none.sum())
    torch.testing.assert_close(mean, none.mean())
    torch.testing.assert_close(g_sum, g_none)
    torch.testing.assert_close(g_mean, g_none / 4)
    clamp = 0.05
    _, g_clamped = loss_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="mean", clamp=clamp)
    torch.testing.assert_close(g_clamped, g_none.clamp(-clamp, clamp) / 4)


def test_impossible_alignment_is_inf_with_zero_gradient():
    # Sequence 0: the first label has log-prob -inf everywhere -> no alignment. Sequence 1 is fine.
    x = torch.randn(2, 3, 2, 4)
    x[0, :, 0, 2] = float("-inf")
    targets = torch.tensor([[2], [1]])
    cost, grad = loss_and_grad(rnnt_loss, x, targets, torch.tensor([3, 3]), torch.tensor([1, 1]), blank=0,
                               reduction="none")
    assert cost[0] == float("inf") and torch.isfinite(cost[1]), cost
    assert (grad[0] == 0).all() and torch.isfinite(grad).all() and (grad[1] != 0).any()
    zeroed = rnnt_loss(x, targets, torch.tensor([3, 3]), torch.tensor([1, 1]), blank=0, reduction="none",
                       zero_infinity=True)
    assert zeroed[0] == 0 and zeroed[1] == cost[1]
    # A whole row of -inf logits (log-normaliser -inf) is impossible too, not NaN.
    x = torch.randn(1, 2, 1, 3)
    x[0, 1, 0, :] = float("-inf")
    cost, grad = loss_and_grad(rnnt_loss, x, torch.zeros(1, 0, dtype=torch.long), torch.tensor([2]),
                               torch.tensor([0]), blank=0, reduction="none")
    assert cost[0] == float("inf") and (grad == 0).all()


@pytest.mark.parametrize("bad, match", [
    (dict(logit_lengths=torch.tensor([0, 3])), "logit_lengths"),
    (dict(logit_lengths=torch.tensor([4, 3])), "logit_lengths"),
    (dict(target_lengths=torch.tensor([3, 1])), "target_lengths"),
    (dict(target_lengths=torch.tensor([-1, 1])), "target_lengths"),
    (dict(targets=torch.tensor([[0, 7], [1, 1]])), "targets"),
    (dict(targets=torch.tensor([[0, 1, 1], [1, 1, 1]])), "targets"),
    (dict(blank=5), "blank"),
])
def test_invalid_inputs_raise(bad, match):
    args = dict(logits=torch.randn(2, 3, 3, 5), targets=torch.tensor([[0, 1], [1, 1]]),
                logit_lengths=torch.tensor([3, 3]), target_lengths=torch.tensor([2, 1]))
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        rnnt_loss(**args)


def test_float_lengths_rejected():
    with pytest.raises(TypeError, match="int32 or int64"):
        rnnt_loss(torch.randn(1, 2, 2, 3), torch.tensor([[1]]), torch.tensor([2.0]), torch.tensor([1]))


def test_second_backward_with_retained_graph():
    # The CPU backward turns its stored softmax into the gradient in place; a second backward must recompute it.
    logits, targets, tl, ul, blank = random_case(21, B=2, T=4, U=3, V=5)
    x = logits.requires_grad_(True)
    loss = rnnt_loss(x, targets, tl, ul, blank=blank)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(second, first, atol=0, rtol=0)


def test_float32_exp_kernel_accuracy():
    # The CPU kernels' vectorisable float32 exp against float64 NumPy over the range a softmax uses (x <= 0).
    from numba import njit

    from fastasr.kernels.rnnt_cpu import fexp

    @njit
    def apply(x, out):
        for i in range(x.size):
            out[i] = fexp(x[i])

    x = np.concatenate([np.linspace(-86.0, 0.0, 200_001), np.linspace(0.0, 10.0, 1001)]).astype(np.float32)
    out = np.empty_like(x)
    apply(x, out)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(out - want) / want) < 2e-7
    special = np.array([-np.inf, -100.0, 0.0], dtype=np.float32)
    apply(special, out[:3])
    assert out[0] == 0.0 and out[1] == 0.0 and out[2] == 1.0


def test_unfused_log_softmax_composes_like_torchaudio():
    # torchaudio's contract: rnnt_loss(log_softmax(x), fused_log_softmax=False) == rnnt_loss(x), gradients included.
    logits, targets, tl, ul, blank = random_case(31, B=3, T=5, U=3, V=6, dtype=torch.float64)
    fused, g_fused = loss_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank)
    split, g_split = loss_and_grad(lambda x, *a, **k: rnnt_loss(x.log_softmax(-1), *a, **k), logits, targets, tl, ul,
                                   blank=blank, fused_log_softmax=False)
    torch.testing.assert_close(split, fused)
    torch.testing.assert_close(g_split, g_fused)
