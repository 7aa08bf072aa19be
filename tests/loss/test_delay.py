"""The delay penalty (k2's ``delay_penalty``) in rnnt_loss and fused_rnnt_loss, against a cost that lists every
alignment one by one (no recursion shared with any lattice), the PyTorch-autograd lattice, gradcheck, and itself
at 0.

Definition under test: cost_b = -log sum_alignments p(alignment) * exp(lam * sum_i ((T_b - 1) / 2 - t_i)), t_i the
frames at which the alignment emits its U_b labels.
"""
import itertools
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numba import config as numba_config

from fastasr.kernels import rnnt_cpu
from fastasr.loss import dispatch, fused_rnnt_loss, rnnt_loss
from fastasr.loss.reference import rnnt_loss_reference

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
KERNELS = pytest.mark.parametrize("simulated", [False, True], ids=["cpu_kernels", "cuda_kernels_simulated"])


def kernels(simulated):
    """CPU tensors through the CPU kernels, or through the CUDA kernels under Numba's simulator."""
    if not simulated:
        return nullcontext()
    if not numba_config.ENABLE_CUDASIM:
        pytest.skip("needs NUMBA_ENABLE_CUDASIM=1; on a GPU machine the needs_gpu tests run the CUDA kernels")
    return dispatch.cuda_kernels_on_cpu()


def enumerated_costs(logits, targets, logit_lengths, target_lengths, blank, delay_penalty, fused_log_softmax=True):
    """(B,) costs by listing every alignment: U_b label moves among the first T_b - 1 + U_b moves, the rest blanks,
    then the final blank from (T_b - 1, U_b). float64, differentiable by autograd."""
    lp = logits.log_softmax(-1) if fused_log_softmax else logits  # (B, T, U+1, V)
    blank = blank % logits.shape[-1]
    costs = []
    for b in range(logits.shape[0]):
        Tb, Ub = int(logit_lengths[b]), int(target_lengths[b])
        scores = []
        for label_moves in itertools.combinations(range(Tb - 1 + Ub), Ub):
            t = u = 0
            score = lp.new_zeros(())
            for move in range(Tb - 1 + Ub):
                if move in label_moves:
                    score = score + lp[b, t, u, int(targets[b, u])] + delay_penalty * ((Tb - 1) / 2 - t)
                    u += 1
                else:
                    score = score + lp[b, t, u, blank]
                    t += 1
            scores.append(score + lp[b, Tb - 1, Ub, blank])
        costs.append(-torch.logsumexp(torch.stack(scores), 0))
    return torch.stack(costs)


def small_case(seed, B=4, T=5, U=3, V=6):
    """Random lengths in both T and U (the first sequence full, the last with the full U), B >= 3."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, U + 1, V, generator=g, dtype=torch.float64) * 2  # (B, T, U+1, V)
    targets = torch.randint(0, V, (B, U), generator=g)
    tl = torch.randint(1, T + 1, (B,), generator=g)
    ul = torch.randint(0, U + 1, (B,), generator=g)
    tl[0], ul[0], ul[-1] = T, U, U
    blank = int(torch.randint(0, V, (1,), generator=g))
    return logits, targets, tl, ul, blank


def value_and_grad(fn, x, *args, **kw):
    x = x.detach().clone().requires_grad_(True)
    costs = fn(x, *args, **kw)
    costs.sum().backward()
    return costs.detach(), x.grad


def test_enumeration_at_zero_is_the_plain_loss():
    """The enumerator itself, pinned to the autograd lattice where the penalty is off."""
    logits, targets, tl, ul, blank = small_case(0)
    torch.testing.assert_close(enumerated_costs(logits, targets, tl, ul, blank, 0.0),
                               rnnt_loss_reference(logits, targets, tl, ul, blank, reduction="none"),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed, lam", [(1, 0.3), (2, -0.2), (3, 1.5)])
def test_reference_lattice_with_penalty_equals_enumeration(seed, lam):
    logits, targets, tl, ul, blank = small_case(seed)
    want, want_grad = value_and_grad(enumerated_costs, logits, targets, tl, ul, blank, lam)
    got, grad = value_and_grad(rnnt_loss_reference, logits, targets, tl, ul, blank, "none", True, lam)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-12)


@KERNELS
@pytest.mark.parametrize("fused_log_softmax", [True, False])
@pytest.mark.parametrize("seed, lam", [(4, 0.3), (5, -0.4), (6, 2.0)])
def test_rnnt_loss_with_penalty_equals_enumeration(simulated, fused_log_softmax, seed, lam):
    logits, targets, tl, ul, blank = small_case(seed)
    if not fused_log_softmax:
        logits = logits.log_softmax(-1)
    want, want_grad = value_and_grad(enumerated_costs, logits, targets, tl, ul, blank, lam, fused_log_softmax)
    with kernels(simulated):
        got, grad = value_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="none",
                                   fused_log_softmax=fused_log_softmax, delay_penalty=lam)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-11)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-11)


@KERNELS
def test_rnnt_loss_ragged_batch_with_penalty_equals_reference(simulated):
    size = dict(B=5, T=7, U=4, V=7) if simulated else dict(B=9, T=14, U=7, V=11)  # the simulator is slow
    logits, targets, tl, ul, blank = small_case(7, **size)
    want, want_grad = value_and_grad(rnnt_loss_reference, logits, targets, tl, ul, blank, "none", True, 0.25)
    with kernels(simulated):
        got, grad = value_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="none",
                                   delay_penalty=0.25)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-10)
    torch.testing.assert_close(grad, want_grad, rtol=1e-9, atol=1e-11)
    assert (grad[1, int(tl[1]):] == 0).all() and (grad[2, :, int(ul[2]) + 1:] == 0).all()  # padding


def joint_case(seed, B=4, T=5, U=3, H=6, V=7):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(B, T, H, generator=g, dtype=torch.float64),  # enc
              torch.randn(B, U + 1, H, generator=g, dtype=torch.float64),  # pred
              torch.randn(V, H, generator=g, dtype=torch.float64) / H ** 0.5,  # weight
              torch.randn(V, generator=g, dtype=torch.float64)]  # bias
    targets = torch.randint(1, V, (B, U), generator=g)
    tl = torch.randint(1, T + 1, (B,), generator=g)
    ul = torch.randint(0, U + 1, (B,), generator=g)
    tl[:3] = torch.tensor([T, 1, 2])
    ul[:3] = torch.tensor([0, U, 1])
    return params, (targets, tl, ul)


def joint_logits(enc, pred, weight, bias):
    return F.linear(torch.tanh(enc[:, :, None] + pred[:, None]), weight, bias)  # (B, T, U+1, V)


def params_value_and_grads(fn, params, lattice, **kw):
    params = [p.detach().clone().requires_grad_(True) for p in params]
    costs = fn(*params, *lattice, **kw)
    costs.sum().backward()
    return costs.detach(), [p.grad for p in params]


def enumerated_joint(enc, pred, weight, bias, targets, tl, ul, *, delay_penalty, **_):
    return enumerated_costs(joint_logits(enc, pred, weight, bias), targets, tl, ul, 0, delay_penalty)


def reference_joint(enc, pred, weight, bias, targets, tl, ul, *, delay_penalty, **_):
    return rnnt_loss_reference(joint_logits(enc, pred, weight, bias), targets, tl, ul, 0, "none",
                               delay_penalty=delay_penalty)


@KERNELS
@pytest.mark.parametrize("reference, size, chunk_size", [
    (enumerated_joint, dict(B=4, T=5, U=3), 3),  # every alignment listed
    (reference_joint, dict(B=12, T=9, U=6), 7),  # the autograd lattice; 7-row chunks straddle sequences
], ids=["enumerated", "reference_lattice"])
def test_fused_with_penalty_equals_float64_reference(simulated, reference, size, chunk_size):
    if simulated and reference is reference_joint:
        size = dict(B=6, T=5, U=4)
    params, lattice = joint_case(8, **size)
    kw = dict(delay_penalty=0.35)
    want, want_grads = params_value_and_grads(reference, params, lattice, **kw)
    with kernels(simulated):
        got, grads = params_value_and_grads(fused_rnnt_loss, params, lattice, blank=0, reduction="none",
                                            chunk_size=chunk_size, **kw)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-10)
    for name, g, w in zip(("enc", "pred", "weight", "bias"), grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-10, msg=lambda m: f"grad {name}: {m}")


def test_gradcheck_with_penalty():
    logits, targets, tl, ul, blank = small_case(9, B=3, T=4, U=2, V=4)
    x = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda x: rnnt_loss(x, targets, tl, ul, blank=blank, reduction="none", delay_penalty=0.7), (x,))
    params, (targets, tl, ul) = joint_case(10, B=3, T=4, U=2, H=3, V=4)
    params = [p.requires_grad_(True) for p in params]
    assert torch.autograd.gradcheck(
        lambda *ps: fused_rnnt_loss(*ps, targets, tl, ul, reduction="sum", chunk_size=2, delay_penalty=0.7),
        params)


@KERNELS
def test_zero_penalty_is_bit_identical(simulated):
    size = dict(B=3, T=4, U=2) if simulated else dict(B=5, T=8, U=4)
    logits, targets, tl, ul, blank = small_case(11, **size)
    logits = logits.float()
    params, lattice = joint_case(12, **size)
    params = [p.float() for p in params]
    with kernels(simulated):
        plain = value_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="none")
        fused_plain = params_value_and_grads(fused_rnnt_loss, params, lattice, reduction="none", chunk_size=3)
        for zero in (0.0,) if simulated else (0.0, -0.0, 0):  # the same guard either way; the simulator is slow
            off = value_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="none",
                                 delay_penalty=zero)
            fused_off = params_value_and_grads(fused_rnnt_loss, params, lattice, reduction="none", chunk_size=3,
                                               delay_penalty=zero)
            assert torch.equal(off[0], plain[0]) and torch.equal(off[1], plain[1])
            assert torch.equal(fused_off[0], fused_plain[0])
            assert all(torch.equal(a, b) for a, b in zip(fused_off[1], fused_plain[1]))


def test_lattice_layer_shifts_only_label_log_probs():
    """dispatch.lattice(delay_penalty) == the kernel on label log-probs shifted in NumPy; 0 leaves them alone."""
    rng = np.random.default_rng(13)
    B, T, U1 = 4, 6, 4
    blank_lp = np.log(rng.uniform(0.05, 0.9, (B, T, U1)))
    label_lp = np.log(rng.uniform(0.05, 0.9, (B, T, U1)))
    tl, ul = np.array([6, 3, 1, 5]), np.array([3, 0, 2, 3])
    untouched = torch.from_numpy(label_lp.copy())
    dispatch.lattice(torch.from_numpy(blank_lp), untouched, torch.from_numpy(tl), torch.from_numpy(ul), 0.0)
    assert torch.equal(untouched, torch.from_numpy(label_lp))
    lam = 0.4
    shifted = label_lp + lam * ((tl[:, None, None] - 1) / 2 - np.arange(T)[None, :, None])
    want = [np.zeros((B, T, U1)), np.zeros((B, T, U1)), np.zeros(B), np.zeros((B, T, U1)), np.zeros((B, T, U1))]
    rnnt_cpu.lattice(blank_lp, shifted, tl, ul, *want)
    got = dispatch.lattice(torch.from_numpy(blank_lp), torch.from_numpy(label_lp.copy()), torch.from_numpy(tl),
                           torch.from_numpy(ul), lam)
    for g, w in zip(got, want[2:]):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-14, atol=1e-15)


def test_penalty_pulls_emissions_earlier_and_its_derivative_is_the_expected_shift():
    """d cost / d lam = -E[sum_i ((T_b-1)/2 - t_i)] under the penalised posterior (-g_label is the posterior of
    emitting at a node), and the posterior's mean emission frame falls as lam grows (its derivative is -Var)."""
    rng = np.random.default_rng(14)
    B, T, U1 = 5, 9, 5
    blank_lp = torch.from_numpy(np.log(rng.uniform(0.05, 0.9, (B, T, U1))))
    label_lp = torch.from_numpy(np.log(rng.uniform(0.05, 0.9, (B, T, U1))))
    tl, ul = torch.tensor([9, 7, 4, 9, 2]), torch.tensor([4, 2, 3, 1, 1])
    shift = ((tl[:, None] - 1) / 2 - torch.arange(T)[None, :]).double()  # (B, T)

    def run(lam):
        return dispatch.lattice(blank_lp, label_lp.clone(), tl, ul, lam)

    mean_frames = []
    for lam in (-0.5, 0.0, 0.5, 2.0):
        costs, _, g_label = run(lam)
        posterior = -g_label  # (B, T, U+1)
        torch.testing.assert_close(posterior.sum(dim=(1, 2)), ul.double(), rtol=1e-12, atol=1e-12)  # U_b emissions
        h = 1e-5
        slope = (run(lam + h)[0] - run(lam - h)[0]) / (2 * h)
        torch.testing.assert_close(slope, -(posterior * shift[:, :, None]).sum(dim=(1, 2)), rtol=1e-6, atol=1e-8)
        frames = torch.arange(T, dtype=torch.float64)[None, :, None]
        mean_frames.append((posterior * frames).sum(dim=(1, 2)) / ul.clamp(min=1))  # (B,)
    mean_frames = torch.stack(mean_frames)  # (lams, B)
    assert (mean_frames[1:] < mean_frames[:-1]).all(), mean_frames


def test_penalty_float32_stays_close_to_float64():
    params, lattice = joint_case(15, B=6, T=20, U=8, H=16, V=29)
    want, want_grads = params_value_and_grads(reference_joint, params, lattice, delay_penalty=0.05)
    got, grads = params_value_and_grads(fused_rnnt_loss, [p.float() for p in params], lattice, reduction="none",
                                        delay_penalty=0.05)
    torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-4)
    for g, w in zip(grads, want_grads):
        torch.testing.assert_close(g.double(), w, rtol=1e-4, atol=1e-5)


def test_impossible_sequence_stays_inf_with_zero_gradient():
    logits, targets, tl, ul, blank = small_case(16)
    targets[0] = (blank + 1) % logits.shape[-1]
    logits[0, :, :, targets[0, 0]] = float("-inf")  # sequence 0 can never emit its first label
    costs, grad = value_and_grad(rnnt_loss, logits, targets, tl, ul, blank=blank, reduction="none",
                                 delay_penalty=0.5)
    assert costs[0] == float("inf") and torch.isfinite(costs[1:]).all()
    assert (grad[0] == 0).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "x"])
def test_bad_penalty_rejected(bad):
    logits, targets, tl, ul, blank = small_case(17)
    params, lattice = joint_case(18)
    with pytest.raises((ValueError, TypeError)):
        rnnt_loss(logits, targets, tl, ul, blank=blank, delay_penalty=bad)
    with pytest.raises((ValueError, TypeError)):
        fused_rnnt_loss(*params, *lattice, delay_penalty=bad)


@needs_gpu
def test_penalty_on_cuda_tensors_matches_cpu():
    logits, targets, tl, ul, blank = small_case(19, B=4, T=30, U=9, V=33)
    params, lattice = joint_case(20, B=4, T=30, U=9, H=32, V=33)
    results = []
    for device in ("cpu", "cuda"):
        x = logits.float().to(device)
        costs, grad = value_and_grad(rnnt_loss, x, targets.to(device), tl.to(device), ul.to(device), blank=blank,
                                     reduction="none", delay_penalty=0.1)
        ps = [p.float().to(device) for p in params]
        fused, grads = params_value_and_grads(fused_rnnt_loss, ps, [t.to(device) for t in lattice],
                                              reduction="none", chunk_size=16, delay_penalty=0.1, allow_tf32=False)
        results.append([t.cpu() for t in (costs, grad, fused, *grads)])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
