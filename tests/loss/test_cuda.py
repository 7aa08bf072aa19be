"""The CUDA lattice kernel (under NUMBA_ENABLE_CUDASIM=1 without a GPU) and, on a GPU, the losses on CUDA tensors."""
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from fastasr.kernels import rnnt_cpu, rnnt_cuda
from fastasr.loss import dispatch, fused_rnnt_loss, rnnt_loss

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
# Routing CPU tensors through the CUDA kernels needs the simulator; on a GPU machine the needs_gpu tests do it for real.
simulated = pytest.mark.skipif(not __import__("numba").config.ENABLE_CUDASIM, reason="needs NUMBA_ENABLE_CUDASIM=1")


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


def test_lattice_float32_matches_float64():
    blank_lp, label_lp, tl, ul = lattice_inputs(7, 3, 6, 4)
    want = run_lattice(rnnt_cpu.lattice, blank_lp, label_lp, tl, ul)
    low = [x.astype(np.float32) for x in (blank_lp, label_lp)]
    B, T, U1 = blank_lp.shape
    out = dict(alpha=np.zeros((B, T, U1), np.float32), beta=np.zeros((B, T, U1), np.float32),
               costs=np.zeros(B, np.float32), g_blank=np.zeros((B, T, U1), np.float32),
               g_label=np.zeros((B, T, U1), np.float32))
    rnnt_cuda.launch_lattice(*low, tl, ul, out["alpha"], out["beta"], out["costs"], out["g_blank"], out["g_label"])
    np.testing.assert_allclose(out["costs"], want["costs"], rtol=1e-5)
    np.testing.assert_allclose(out["g_blank"], want["g_blank"], atol=1e-5)
    np.testing.assert_allclose(out["g_label"], want["g_label"], atol=1e-5)


def test_threads_cover_wide_lattices():
    assert rnnt_cuda.threads_for(1) == 32 and rnnt_cuda.threads_for(101) == 128
    assert rnnt_cuda.threads_for(5000) == rnnt_cuda.MAX_THREADS


@pytest.mark.parametrize("fused_log_softmax", [True, False])
def test_gpu_torch_path_matches_cpu_kernels(fused_log_softmax):
    # On CUDA the V-wide steps run as torch ops; run those same functions on CPU tensors against the Numba kernels.
    g = torch.Generator().manual_seed(3)
    B, T, U, V = 3, 5, 4, 6
    logits = torch.randn(B, T, U + 1, V, generator=g, dtype=torch.float64)  # (B, T, U+1, V)
    logits[0, 1, 2, :] = float("-inf")
    targets, tl, ul, blank, _ = dispatch.check_lattice_inputs(
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


def row_case(seed, dtype=np.float64):
    """A chunk of 4 lattice rows from 3 sequences (B=3, T=4, U+1=4, V=6), with a dead node and a NaN-free row."""
    rng = np.random.default_rng(seed)
    B, T, U1, V = 3, 4, 4, 6
    logits = rng.standard_normal((4, 3, V)).astype(dtype)  # (n, U', V): U' = 3 < U+1
    logits[1, 2, :] = -np.inf  # a node where every symbol is impossible
    rows_b = np.array([2, 2, 0, 1], dtype=np.int64)
    rows_t = np.array([0, 3, 1, 2], dtype=np.int64)
    targets = rng.integers(0, V, (B, U1)).astype(np.int64)
    return logits, rows_b, rows_t, targets, (B, T, U1)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_row_log_probs_cuda_kernel_matches_cpu_kernel_and_logsumexp(dtype):
    logits, rows_b, rows_t, targets, shape = row_case(0, dtype)
    blank = 2
    outs = []
    for fn in (rnnt_cpu.row_log_probs, rnnt_cuda.launch_row_log_probs):
        out = [np.full(shape, 7.0, dtype=dtype) for _ in range(3)]
        fn(logits.copy(), rows_b, rows_t, targets, blank, *out)
        outs.append(out)
    x = torch.from_numpy(logits).double()  # (n, U', V)
    lz = torch.logsumexp(x, dim=-1)  # (n, U')
    tgt = torch.from_numpy(targets[rows_b, :3])  # (n, U')
    want = [lz, x[..., blank] - lz, x.gather(-1, tgt[..., None])[..., 0] - lz]
    want[1][1, 2] = want[2][1, 2] = -np.inf  # -inf - -inf: the kernels say "impossible", not NaN
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    for got in outs:
        for g, w in zip(got, want):
            picked = torch.from_numpy(g[rows_b, rows_t, :3]).double()  # (n, U')
            torch.testing.assert_close(picked, w, **tol)
            assert (g[:, :, 3] == 7.0).all()  # columns past U' are not touched
    # float32 kernels compute in float32 (not float64 with a final rounding): same inputs, float32 outputs
    assert outs[1][0].dtype == dtype


def test_row_log_probs_kernels_propagate_nan():
    logits, rows_b, rows_t, targets, shape = row_case(1)
    logits[2, 1, 4] = np.nan
    for fn in (rnnt_cpu.row_log_probs, rnnt_cuda.launch_row_log_probs):
        out = [np.zeros(shape) for _ in range(3)]
        fn(logits.copy(), rows_b, rows_t, targets, 0, *out)
        assert np.isnan(out[0][0, 1, 1]) and np.isfinite(out[0][0, 1, 0]), fn


@pytest.mark.parametrize("clamp", [-1.0, 0.2])
def test_row_grad_in_place_kernels_equal_the_torch_formula(clamp):
    # d loss / d logits = scale x clamp(softmax x occupancy + posteriors at blank and label): dispatch.node_grad_torch
    logits, rows_b, rows_t, targets, (B, T, U1) = row_case(2)
    blank = 1
    x = torch.from_numpy(logits)
    log_norm = np.zeros((B, T, U1))
    log_norm[rows_b, rows_t, :3] = torch.logsumexp(x, dim=-1).numpy()
    rng = np.random.default_rng(3)
    g_blank = -rng.uniform(0, 1, (B, T, U1))
    g_label = -rng.uniform(0, 1, (B, T, U1))
    g_blank[2, 0, 1] = g_label[2, 0, 1] = 0.0  # a node outside its sequence's lattice
    g_blank[2, 3, 2] = g_label[2, 3, 2] = 0.0
    scale = np.array([0.5, 2.0, 0.7])
    idx = (rows_b[:, None], rows_t[:, None], np.arange(3)[None, :])
    want = dispatch.node_grad_torch(x.clone(), torch.from_numpy(log_norm[idx]), torch.from_numpy(targets[idx[0], idx[2]]),
                                    torch.from_numpy(g_blank[idx]), torch.from_numpy(g_label[idx]),
                                    torch.from_numpy(scale[rows_b][:, None].repeat(3, 1)), blank, True, clamp)
    for fn in (rnnt_cpu.row_grad, rnnt_cuda.launch_row_grad):
        got = logits.copy()
        fn(got, rows_b, rows_t, log_norm, g_blank, g_label, targets, scale, blank, clamp)  # in place
        torch.testing.assert_close(torch.from_numpy(got), want, rtol=1e-12, atol=1e-12)
        assert (got[0, 1] == 0).all() and (got[1, 2] == 0).all()


def test_missing_nvvm_is_one_clear_error(tmp_path):
    # A real process without the simulator; NVVM hidden the way a CUDA machine without the toolkit lacks it.
    import subprocess
    import sys

    code = ("import numpy as np\n"
            "import numba.cuda.cudadrv.nvvm as nvvm\n"
            "nvvm.is_available = lambda: False\n"
            "from fastasr.kernels import rnnt_cuda\n"
            "x = np.zeros((1, 1, 1), np.float32)\n"
            "try:\n"
            "    rnnt_cuda.launch_row_log_probs(x, np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros((1, 1), np.int64), 0, x, x, x)\n"
            "except rnnt_cuda.NvvmMissing as err:\n"
            "    print('NvvmMissing:', err)\n")
    env = {k: v for k, v in __import__("os").environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "NvvmMissing:" in proc.stdout and "fastasr[gpu" in proc.stdout and "libNVVM" in proc.stdout, proc.stdout


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


@simulated
@pytest.mark.parametrize("clamp", [-1.0, 0.3])
def test_rnnt_loss_cuda_kernel_path_matches_cpu(clamp):
    # rnnt_loss on CUDA runs the row kernels over all B*T rows; under the simulator they run on CPU tensors here.
    g = torch.Generator().manual_seed(6)
    B, T, U, V = 3, 5, 3, 6
    logits = torch.randn(B, T, U + 1, V, generator=g, dtype=torch.float64)  # (B, T, U+1, V)
    targets = torch.randint(1, V, (B, U), generator=g)
    tl, ul = torch.tensor([5, 2, 4]), torch.tensor([3, 1, 0])
    logits[1, 3:] = float("nan")  # padding may hold anything
    results = []
    for simulated in (False, True):
        x = logits.clone().requires_grad_(True)
        with dispatch.cuda_kernels_on_cpu() if simulated else nullcontext():
            loss = rnnt_loss(x, targets, tl, ul, blank=0, reduction="none", clamp=clamp)
            loss.sum().backward()
        results.append((loss.detach(), x.grad))
    torch.testing.assert_close(results[1][0], results[0][0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(results[1][1], results[0][1], rtol=1e-12, atol=1e-12)
    assert (results[1][1][1, 2:] == 0).all()
