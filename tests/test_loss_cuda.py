"""The CUDA lattice kernel (under NUMBA_ENABLE_CUDASIM=1 without a GPU) and, on a GPU, the losses on CUDA tensors."""
import numpy as np
import pytest
import torch

from fastasr.kernels import rnnt_cpu, rnnt_cuda
from fastasr.loss import fused_rnnt_loss, rnnt_loss

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def lattice_inputs(seed, B, T, U1):
    rng = np.random.default_rng(seed)
    blank_lp = np.log(rng.uniform(0.05, 0.9, (B, T, U1)))
    label_lp = np.log(rng.uniform(0.05, 0.9, (B, T, U1)))
    tl = rng.integers(1, T + 1, B).astype(np.int64)
    ul = rng.integers(0, U1, B).astype(np.int64)
    tl[0], ul[0] = T, U1 - 1
    return blank_lp, label_lp, tl, ul


def run_lattice(launch, blank_lp, label_lp, tl, ul):
    B, T, U1 = blank_lp.shape
    out = dict(alpha=np.zeros_like(blank_lp), beta=np.zeros_like(blank_lp), costs=np.zeros(B),
               g_blank=np.full_like(blank_lp, 7.0), g_label=np.full_like(blank_lp, 7.0))
    launch(blank_lp, label_lp, tl, ul, out["alpha"], out["beta"], out["costs"], out["g_blank"], out["g_label"])
    return out


@pytest.mark.parametrize("seed, B, T, U1", [(0, 2, 3, 3), (1, 3, 4, 2), (2, 1, 1, 3), (3, 2, 3, 1)])
def test_cuda_lattice_matches_cpu_kernel(seed, B, T, U1):
    blank_lp, label_lp, tl, ul = lattice_inputs(seed, B, T, U1)
    label_lp[-1, 0, 0] = -np.inf  # one dead edge: still possible, and exercises the -inf arithmetic
    want = run_lattice(rnnt_cpu.lattice, blank_lp, label_lp, tl, ul)
    got = run_lattice(rnnt_cuda.launch_lattice, blank_lp, label_lp, tl, ul)
    np.testing.assert_allclose(got["costs"], want["costs"], rtol=1e-12)
    np.testing.assert_allclose(got["g_blank"], want["g_blank"], atol=1e-12)
    np.testing.assert_allclose(got["g_label"], want["g_label"], atol=1e-12)


def test_cuda_lattice_impossible_sequence():
    blank_lp, label_lp, tl, ul = lattice_inputs(5, 2, 2, 2)
    tl[:], ul[:] = 2, 1
    label_lp[0, :, 0] = -np.inf  # sequence 0 can never emit its label
    got = run_lattice(rnnt_cuda.launch_lattice, blank_lp, label_lp, tl, ul)
    assert got["costs"][0] == np.inf and np.isfinite(got["costs"][1])
    assert (got["g_blank"][0] == 0).all() and (got["g_label"][0] == 0).all()


def test_threads_cover_wide_lattices():
    assert rnnt_cuda.threads_for(1) == 32 and rnnt_cuda.threads_for(101) == 128
    assert rnnt_cuda.threads_for(5000) == rnnt_cuda.MAX_THREADS


@pytest.mark.parametrize("fused_log_softmax", [True, False])
def test_gpu_torch_path_matches_cpu_kernels(fused_log_softmax):
    # On CUDA the V-wide steps run as torch ops; run those same functions on CPU tensors against the Numba kernels.
    from fastasr.loss import dispatch

    g = torch.Generator().manual_seed(3)
    B, T, U, V = 3, 5, 4, 6
    logits = torch.randn(B, T, U + 1, V, generator=g, dtype=torch.float64)  # (B, T, U+1, V)
    logits[0, 1, 2, :] = float("-inf")
    targets, tl, ul, blank = dispatch.check_lattice_inputs(
        torch.randint(0, V, (B, U), generator=g), torch.tensor([5, 3, 1]), torch.tensor([4, 2, 0]),
        B=B, T=T, U1=U + 1, V=V, blank=-1, device=logits.device)
    args = (logits, targets, tl, ul, blank, fused_log_softmax)
    want = dispatch.gather_log_probs(*args, store_probs=True)
    got = dispatch._gather_torch(logits, targets, blank, fused_log_softmax)
    inside = ((torch.arange(T)[None, :, None] < tl[:, None, None])
              & (torch.arange(U + 1)[None, None, :] <= ul[:, None, None]))  # (B, T, U+1)
    label_inside = inside & (torch.arange(U + 1)[None, None, :] < ul[:, None, None])
    for w, g_, mask in zip(want, got, (inside, inside, label_inside)):
        torch.testing.assert_close(g_[mask], w[mask])
    costs, g_blank, g_label = dispatch.lattice(want[1], want[2], tl, ul)
    scale = torch.tensor([1.0, 0.5, 2.0], dtype=torch.float64)
    kw = dict(blank=blank, fused_log_softmax=fused_log_softmax, clamp=0.3)
    tail = (targets, tl, ul, g_blank, g_label, scale)
    torch.testing.assert_close(dispatch._logits_grad_torch(logits, want[0], *tail, **kw),
                               dispatch.logits_grad(logits, want[0], want[3], *tail, **kw))


@pytest.mark.parametrize("clamp", [-1.0, 0.2])
def test_gpu_torch_chunk_path_matches_cpu_kernels(clamp):
    # The fused loss's per-chunk steps: torch ops on CUDA, Numba on CPU; compare both on CPU tensors.
    from fastasr.loss import dispatch

    g = torch.Generator().manual_seed(4)
    n, U1, V, blank = 3, 4, 6, 2
    logits = torch.randn(n, U1, V, generator=g)  # (n, U+1, V)
    targets = torch.randint(0, V, (U1,), generator=g)
    outs = []
    for fn in (dispatch.chunk_log_probs, dispatch._chunk_log_probs_torch):
        out = [torch.empty(n, U1) for _ in range(3)]
        fn(logits.clone(), targets, blank, *out)
        outs.append(out)
    for got, want in zip(outs[1], outs[0]):
        torch.testing.assert_close(got, want)
    log_norm = outs[0][0]
    g_blank = -torch.rand(n, U1, generator=g)
    g_label = -torch.rand(n, U1, generator=g)
    g_blank[0, 1] = g_label[0, 1] = 0.0  # a node outside the lattice
    scale = torch.tensor(0.7)
    want = dispatch.chunk_grad(logits.clone(), log_norm, g_blank, g_label, targets, scale, blank, clamp)
    got = dispatch._chunk_grad_torch(logits.clone(), log_norm, g_blank, g_label, targets, scale, blank, clamp)
    torch.testing.assert_close(got, want)
    assert (want[0, 1] == 0).all()


@needs_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("fused_log_softmax", [True, False])
def test_rnnt_loss_cuda_matches_cpu(dtype, fused_log_softmax):
    g = torch.Generator().manual_seed(0)
    B, T, U, V = 4, 20, 8, 12
    logits = torch.randn(B, T, U + 1, V, generator=g).to(dtype)
    if not fused_log_softmax:
        logits = logits.float().log_softmax(-1).to(dtype)
    targets = torch.randint(1, V, (B, U), generator=g, dtype=torch.int32)
    tl = torch.tensor([20, 13, 1, 7])
    ul = torch.tensor([8, 3, 0, 8])
    results = []
    for device in ("cpu", "cuda"):
        x = logits.to(device).requires_grad_(True)
        loss = rnnt_loss(x, targets.to(device), tl.to(device), ul.to(device), blank=0, reduction="none",
                         fused_log_softmax=fused_log_softmax, clamp=0.5)
        loss.sum().backward()
        results.append((loss.detach().cpu(), x.grad.float().cpu()))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-3, atol=1e-3 if dtype == torch.float16 else 1e-5)


@needs_gpu
@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_fused_rnnt_loss_cuda_matches_cpu(activation):
    g = torch.Generator().manual_seed(1)
    B, T, U, H, V = 3, 17, 6, 32, 29
    params = [torch.randn(B, T, H, generator=g), torch.randn(B, U + 1, H, generator=g),
              torch.randn(V, H, generator=g) / H ** 0.5, torch.randn(V, generator=g)]
    targets = torch.randint(1, V, (B, U), generator=g)
    tl, ul = torch.tensor([17, 9, 2]), torch.tensor([6, 0, 4])
    results = []
    for device in ("cpu", "cuda"):
        ps = [p.to(device).requires_grad_(True) for p in params]
        loss = fused_rnnt_loss(*ps, targets.to(device), tl.to(device), ul.to(device), activation=activation,
                               chunk_size=5)
        loss.backward()
        results.append([loss.detach().cpu()] + [p.grad.cpu() for p in ps])
    for got, want in zip(results[1], results[0]):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
