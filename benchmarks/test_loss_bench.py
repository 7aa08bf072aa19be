"""RNN-T loss benchmarks, each beside its baseline in the same run (numbers in benchmarks/RESULTS.md).

  CPU time:    rnnt_loss forward+backward vs the PyTorch-autograd lattice (fastasr.loss.reference), B=4 T=100 U=30 V=64.
  CPU memory:  fused_rnnt_loss vs rnnt_loss on materialised F.linear logits (autograd), B=8 T=200 U=60 V=1024 H=256.
               Peak = VmHWM of a fresh subprocess after the step minus its VmRSS just before, the high-water mark
               reset (/proc/self/clear_refs = 5) after imports, a warm-up step at a tiny shape and input creation.
  CPU launches: GEMM calls per fused forward+backward at B=128 short sequences against ceil(sum T_b / chunk_size)
               (the number of chunks when chunks cross sequences; at least B when they do not).
  CPU time:    fused_rnnt_loss vs the materialised joint + rnnt_loss at the real Open STT batch shape (B=240 T=125
               U=70 V=34) with H reduced from 640 to 64 for the CPU.
  GPU:         fused_rnnt_loss vs torchaudio.functional.rnnt_loss, joint included, forward+backward, time and
               torch.cuda.max_memory_allocated, B=32 T=250 U=100 H=640, V=1024 and V=500 (skipped without CUDA).
Run: pytest benchmarks/test_loss_bench.py --benchmark-enable
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F

from fastasr.loss import fused_rnnt_loss, rnnt_loss
from fastasr.loss.reference import rnnt_loss_reference


def lattice_case(B, T, U, V, *, device="cpu", seed=0):
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(1, V, (B, U), generator=g)
    logit_lengths = torch.randint(T * 3 // 4, T + 1, (B,), generator=g)
    logit_lengths[0] = T
    target_lengths = torch.randint(U * 3 // 4, U + 1, (B,), generator=g)
    target_lengths[0] = U
    return [x.to(device) for x in (targets, logit_lengths, target_lengths)]


# ---------------------------------------------------------------- CPU time

CPU_SHAPE = dict(B=4, T=100, U=30, V=64)
CPU_IMPLS = {"fastasr": rnnt_loss, "torch_autograd_reference": rnnt_loss_reference}


@pytest.fixture(params=[1, None], ids=["1thread", "allthreads"])
def cpu_threads(request):
    """Both libraries limited to n threads (None: their defaults). One thread is the contention-proof comparison on a
    shared machine; all threads shows the parallel kernels."""
    import numba

    saved = torch.get_num_threads(), numba.get_num_threads()
    n = request.param
    if n is not None:
        torch.set_num_threads(n)
        numba.set_num_threads(n)
    yield torch.get_num_threads()
    torch.set_num_threads(saved[0])
    numba.set_num_threads(saved[1])


@pytest.mark.parametrize("impl", list(CPU_IMPLS))
def test_cpu_rnnt_loss_forward_backward(benchmark, impl, cpu_threads):
    B, T, U, V = CPU_SHAPE.values()
    logits = torch.randn(B, T, U + 1, V, generator=torch.Generator().manual_seed(0))  # (B, T, U+1, V)
    lattice = lattice_case(B, T, U, V)
    fn = CPU_IMPLS[impl]

    def step():
        x = logits.detach().requires_grad_(True)
        loss = fn(x, *lattice, blank=0)
        loss.backward()
        return loss.item()

    step()  # warm-up outside the timing: Numba compile / cache load
    benchmark.group = f"rnnt cpu fwd+bwd B={B} T={T} U={U} V={V} threads={cpu_threads}"
    benchmark.extra_info.update(CPU_SHAPE, threads=cpu_threads)
    benchmark.pedantic(step, rounds=50, iterations=1, warmup_rounds=2)


# ---------------------------------------------------------------- CPU: launches and the real-batch shape

def joint_case(B, T, U, V, H, *, seed=0, spread=(0.75, 1.0)):
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(B, T, H, generator=g), torch.randn(B, U + 1, H, generator=g),
              torch.randn(V, H, generator=g) / H ** 0.5, torch.zeros(V)]
    lo, hi = spread
    targets = torch.randint(1, V, (B, U), generator=g)
    tl = torch.randint(max(1, int(T * lo)), T + 1, (B,), generator=g)
    ul = torch.randint(int(U * lo), U + 1, (B,), generator=g)
    tl[0], ul[0] = T, U
    return [p.requires_grad_(True) for p in params], (targets, tl, ul)


def count_gemms(fn) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    gemms = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.addmm_.default,
             torch.ops.aten.bmm.default}
    calls = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func in gemms:
                calls.append(func)
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return len(calls)


def test_cpu_gemm_calls_per_fused_call(benchmark):
    B, T, U, V, H, chunk = 128, 24, 8, 34, 32, 256
    params, lattice = joint_case(B, T, U, V, H, spread=(0.25, 1.0))

    def step():
        for p in params:
            p.grad = None
        loss = fused_rnnt_loss(*params, *lattice, chunk_size=chunk)
        loss.backward()
        return loss

    step()  # warm-up: Numba compile / cache load
    gemms = count_gemms(step)
    chunks = -(-int(lattice[1].sum()) // chunk)
    benchmark.group = f"rnnt cpu fused launches B={B} T<={T} U<={U} chunk_size={chunk}"
    benchmark.extra_info.update(B=B, T=T, U=U, V=V, H=H, chunk_size=chunk, gemm_calls=gemms, chunks=chunks,
                                gemms_per_chunk=gemms / chunks)
    print(f"\nGEMM calls {gemms} for {chunks} chunks (sum T_b = {int(lattice[1].sum())}, B = {B})")
    benchmark.pedantic(step, rounds=10, iterations=1, warmup_rounds=1)
    assert gemms <= 5 * chunks, (gemms, chunks)


REAL_SHAPE = dict(B=240, T=125, U=70, V=34, H=64)  # Open STT at 1200 s per batch, base preset; H=640 on a GPU


@pytest.mark.parametrize("impl", ["fused", "materialised"])
def test_cpu_real_batch_shape_fused_vs_materialised(benchmark, impl):
    params, lattice = joint_case(**REAL_SHAPE)

    def step():
        for p in params:
            p.grad = None
        enc, pred, w, b = params
        if impl == "fused":
            loss = fused_rnnt_loss(enc, pred, w, b, *lattice)
        else:
            logits = F.linear(torch.tanh(enc[:, :, None] + pred[:, None]), w, b)  # (B, T, U+1, V)
            loss = rnnt_loss(logits, *lattice, blank=0)
        loss.backward()
        return loss.item()

    step()  # warm-up outside the timing
    benchmark.group = "rnnt cpu joint+loss fwd+bwd, real batch shape B=240 T=125 U=70 V=34 H=64"
    benchmark.extra_info.update(REAL_SHAPE, threads=torch.get_num_threads())
    benchmark.pedantic(step, rounds=3, iterations=1, warmup_rounds=0)


# ---------------------------------------------------------------- CPU peak memory

MEM_SHAPE = dict(B=8, T=200, U=60, V=1024, H=256)
_MEM_SCRIPT = textwrap.dedent("""
    import json, sys, time
    import torch, torch.nn.functional as F
    from fastasr.loss import fused_rnnt_loss, rnnt_loss
    impl, B, T, U, V, H = sys.argv[1], *map(int, sys.argv[2:])

    def make(B, T, U, V, H):
        g = torch.Generator().manual_seed(0)
        p = [torch.randn(B, T, H, generator=g), torch.randn(B, U + 1, H, generator=g),
             torch.randn(V, H, generator=g) / H ** 0.5, torch.zeros(V)]
        lattice = (torch.randint(1, V, (B, U), generator=g), torch.full((B,), T), torch.full((B,), U))
        return [x.requires_grad_(True) for x in p], lattice

    def step(params, lattice):
        enc, pred, w, b = params
        if impl == "fused":
            loss = fused_rnnt_loss(enc, pred, w, b, *lattice)
        else:
            logits = F.linear(torch.tanh(enc[:, :, None] + pred[:, None]), w, b)  # (B, T, U+1, V)
            loss = rnnt_loss(logits, *lattice, blank=0)
        loss.backward()
        return loss.item()

    def status_kb(field):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))

    step(*make(2, 5, 3, 7, 4))  # warm-up: compile, load caches
    params, lattice = make(B, T, U, V, H)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
    base = status_kb("VmRSS")
    t0 = time.perf_counter()
    loss = step(params, lattice)
    seconds = time.perf_counter() - t0
    peak = status_kb("VmHWM")
    print(json.dumps(dict(peak_mb=(peak - base) / 1024, seconds=seconds, loss=loss)))
""")


def measure_peak(impl):
    shape = [str(v) for v in MEM_SHAPE.values()]
    out = subprocess.run([sys.executable, "-c", _MEM_SCRIPT, impl, *shape], check=True, capture_output=True,
                         text=True, env=dict(os.environ))
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_peak_memory_fused_vs_materialised(benchmark):
    materialised = measure_peak("materialised")
    fused = benchmark.pedantic(measure_peak, args=("fused",), rounds=1, iterations=1)
    ratio = fused["peak_mb"] / materialised["peak_mb"]
    benchmark.group = "rnnt cpu peak memory B=8 T=200 U=60 V=1024 H=256"
    benchmark.extra_info.update(MEM_SHAPE, fused=fused, materialised=materialised, peak_ratio=ratio)
    print(f"\nfused {fused}\nmaterialised {materialised}\nratio {ratio:.3f}")
    assert abs(fused["loss"] - materialised["loss"]) <= 1e-4 * abs(materialised["loss"]), (fused, materialised)
    assert ratio <= 0.25, ratio


# ---------------------------------------------------------------- GPU

gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
GPU_SHAPES = [dict(B=32, T=250, U=100, V=1024, H=640), dict(B=32, T=250, U=100, V=500, H=640)]


def gpu_case(B, T, U, V, H):
    g = torch.Generator().manual_seed(0)
    params = [torch.randn(B, T, H, generator=g), torch.randn(B, U + 1, H, generator=g),
              torch.randn(V, H, generator=g) / H ** 0.5, torch.zeros(V)]
    params = [p.cuda().requires_grad_(True) for p in params]
    return params, lattice_case(B, T, U, V, device="cuda")


def gpu_step(impl, params, lattice):
    enc, pred, w, b = params
    if impl.startswith("fastasr_fused"):  # "fastasr_fused" uses TF32 for the joint, "fastasr_fused_ieee" does not
        loss = fused_rnnt_loss(enc, pred, w, b, *lattice, blank=0, allow_tf32=impl == "fastasr_fused")
    else:
        import torchaudio.functional as AF

        logits = F.linear(torch.tanh(enc[:, :, None] + pred[:, None]), w, b)  # (B, T, U+1, V)
        targets, tl, ul = lattice
        loss = AF.rnnt_loss(logits, targets.int(), tl.int(), ul.int(), blank=0)
    loss.backward()
    return loss


@gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: f"V{s['V']}")
@pytest.mark.parametrize("impl", ["fastasr_fused", "torchaudio"])
def test_gpu_joint_and_loss(benchmark, impl, shape):
    if impl == "torchaudio":
        pytest.importorskip("torchaudio.functional")
    params, lattice = gpu_case(**shape)

    def step():
        for p in params:
            p.grad = None
        loss = gpu_step(impl, params, lattice)
        torch.cuda.synchronize()
        return loss

    step()  # warm-up: Numba CUDA compile, cuBLAS handles
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    loss = step()
    peak_mb = (torch.cuda.max_memory_allocated() - before) / 2 ** 20
    benchmark.group = f"rnnt gpu joint+loss fwd+bwd V={shape['V']}"
    benchmark.extra_info.update(shape, peak_extra_mb=peak_mb, loss=float(loss), device=torch.cuda.get_device_name())
    benchmark.pedantic(step, rounds=5, iterations=1, warmup_rounds=1)


@gpu
@pytest.mark.parametrize("shape", GPU_SHAPES, ids=lambda s: f"V{s['V']}")
def test_gpu_values_match_torchaudio(shape):
    pytest.importorskip("torchaudio.functional")
    params, lattice = gpu_case(**shape)
    results = []
    for impl in ("fastasr_fused_ieee", "torchaudio"):
        for p in params:
            p.grad = None
        loss = gpu_step(impl, params, lattice)
        results.append([loss.detach()] + [p.grad.clone() for p in params])
    for name, got, want in zip(("loss", "enc", "pred", "weight", "bias"), *results):
        err = ((got - want).norm() / want.norm()).item()
        assert err <= 1e-4, (name, err)
