"""Prove fastasr's GPU path in one run, and say which performance targets it meets.

(a) kernel tests on the real device: tests/loss/test_cuda.py and every test marked `gpu` (pytest subprocesses).
(b) fused_rnnt_loss: the loss and the enc / pred / weight / bias gradients vs float64 (fastasr.loss.rnnt_loss on the
    unfused joint, on the CPU) and vs torchaudio, on a ragged batch (lengths 1..max), chunk_size 7 and the default.
(c) forward+backward time (median; CUDA events on GPU) and peak memory of fused vs torchaudio (joint included) and vs
    fastasr's loss on materialised logits, at the benchmark and a real-batch shape, fp32 and bf16; the targets.
(d) fastasr.model.features.LogMel on the device vs on the CPU: max abs difference and time per batch.
(e) a few minutes of training (fastasr.training.loop.train): hours of audio per device-hour, step time, data-wait share, CER.
The table is printed last; --out FILE gets the JSON (rewritten after every section, so a timeout keeps what was
done) and FILE with .md the markdown table. Exit status 1 if a check failed (FAIL / FAILED), else 0; MISS (a missed
performance target) only reports, unless --fail-on-miss.

GPU machine (no network, nothing installed, ≤ 8 min): prepare here, carry DIR, run there from the repository root:
    python tools/gpu_check.py --prepare .gpu_check     # espeak-ng corpus → DIR/shards (≤ 30 MB), wheels → DIR/wheels
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu_check/wheels/*.whl
    PYTHONPATH=/tmp/site:. python3 tools/gpu_check.py --device cuda --shards .gpu_check/shards --out $OUT/gpu_check.json
CPU (tests/tools/test_gpu_check.py runs it in CI): reduced sizes, tiny shards made in a temp dir, about a minute:
    python tools/gpu_check.py --device cpu --out tmp/gpu_check.json
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import inspect
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from gpu_check_data import make_tiny_shards, prepare  # tools/ is the script's own directory on sys.path

ROOT = Path(__file__).resolve().parent.parent
SR = 16000
GRADS = ("loss", "enc", "pred", "weight", "bias")
TOL = {"fp32": 1e-4, "fp32 tf32": 1e-2, "bf16": 5e-2, "bf16 autocast": 5e-2}  # norm-relative, each of GRADS
SIZES = {  # ragged: (b); bench, real: (c) as (B, T, U, V, H); the GPU ones are the shapes
    "cuda": dict(ragged=(16, 150, 40, 128, 96), bench=(32, 250, 100, 1024, 640), real=(240, 125, 70, 34, 640),
                 runs=10, mel_utts=64, mel_seconds=(2, 10), train_minutes=3.0, preset="small"),
    "cpu": dict(ragged=(16, 40, 12, 24, 16), bench=(4, 50, 20, 128, 64), real=(24, 40, 20, 34, 64),
                runs=3, mel_utts=16, mel_seconds=(1, 4), train_minutes=0.33, preset="tiny"),
}


@dataclass
class Row:
    section: str
    check: str
    result: str
    status: str = ""  # PASS | FAIL | MISS | FAILED: <error> | skipped: <why> | "" (a measurement)


class Skip(Exception):
    """A section that cannot run here: recorded as `skipped: <why>`, not as a failure."""


@dataclass
class Ctx:
    device: torch.device
    sizes: dict
    tmp: Path
    shards: Path | None
    deadline: float
    torchaudio: object | None  # torchaudio.functional, or None
    torchaudio_why: str
    out: Path | None
    meta: dict
    rows: list = field(default_factory=list)
    sections: dict = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def add(self, section: str, check: str, result: str, status: str = "") -> None:
        self.rows.append(Row(section, check, result, status))

    def write(self) -> None:
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            doc = {"meta": self.meta, "sections": self.sections, "rows": [asdict(r) for r in self.rows]}
            self.out.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
            self.out.with_suffix(".md").write_text(markdown(self.rows))


def markdown(rows: list[Row]) -> str:
    lines = ["| | check | result | status |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(str(x).replace("|", "\\|") for x in asdict(r).values()) + " |" for r in rows]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- loss inputs and references


def joint_inputs(B, T, U, V, H, *, seed=0, spread=False, low=0.75):
    """enc, pred, weight, bias (float32, CPU) and targets, logit and target lengths. spread: lengths 1..max over the
    batch (ragged: chunks of every length, sequences of one frame); else uniform in [low·max, max], one at max."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(B, T, H, generator=g), torch.randn(B, U + 1, H, generator=g),
              torch.randn(V, H, generator=g) / H ** 0.5, 0.1 * torch.randn(V, generator=g)]
    targets = torch.randint(1, V, (B, U), generator=g)
    if spread:
        tl = torch.linspace(1, T, B).round().long()[torch.randperm(B, generator=g)]
        ul = torch.linspace(1, U, B).round().long()[torch.randperm(B, generator=g)]
    else:
        tl = torch.randint(math.ceil(low * T), T + 1, (B,), generator=g)
        ul = torch.randint(math.ceil(low * U), U + 1, (B,), generator=g)
        tl[0], ul[0] = T, U
    return params, (targets, tl, ul)


def unfused(enc, pred, weight, bias, lattice, baseline, af=None):
    """The joint materialised, then torchaudio's loss (int32 lattice, float32 logits) or fastasr's rnnt_loss."""
    from fastasr.loss import rnnt_loss

    logits = F.linear(torch.tanh(enc[:, :, None] + pred[:, None]), weight, bias)  # (B, T, U+1, V)
    targets, tl, ul = lattice
    if baseline == "torchaudio":
        return af.rnnt_loss(logits.float(), targets.int(), tl.int(), ul.int(), blank=0, reduction="mean")
    return rnnt_loss(logits, targets, tl, ul, blank=0, reduction="mean")


def loss_and_grads(forward, tensors, amp=contextlib.nullcontext):
    """[loss, d enc, d pred, d weight, d bias] as float64 CPU tensors; backward outside autocast, as in training."""
    xs = [t.detach().clone().requires_grad_(True) for t in tensors]
    with amp():
        loss = forward(*xs)
    loss.backward()
    return [t.detach().double().cpu() for t in [loss] + [x.grad for x in xs]]


def errors(got, want) -> dict:
    return {n: {"max_abs": float((g - w).abs().max()), "rel": float((g - w).norm() / w.norm().clamp_min(1e-30))}
            for n, g, w in zip(GRADS, got, want)}


def tf32(enabled: bool) -> dict:
    from fastasr.loss import fused_rnnt_loss  # the keyword is new; older trees take no such argument

    return {"allow_tf32": enabled} if "allow_tf32" in inspect.signature(fused_rnnt_loss).parameters else {}


# ---------------------------------------------------------------- sections


def check_kernel_tests(ctx: Ctx) -> dict:
    """(a) pytest in subprocesses on the real device; counts from their JUnit XML."""
    if not ctx.cuda:
        raise Skip("no CUDA device")
    marked = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text())
    runs = {"tests/loss/test_cuda.py": ["tests/loss/test_cuda.py"], "tests marked gpu": ["-m", "gpu", *marked]}
    results, end = {}, time.monotonic() + min(150.0, ctx.left() - 300)
    for i, (name, args) in enumerate(runs.items()):
        xml = ctx.tmp / f"junit-{i}.xml"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
               f"--junitxml={xml}", *args]
        try:
            proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(30, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            ctx.add("a", name, "", "FAILED: timeout")
            continue
        print(proc.stdout[-3000:], proc.stderr[-2000:], flush=True)
        r = results[name] = dict(junit_counts(xml) if xml.exists() else {"passed": 0, "skipped": 0, "not_collected": [],
                                 "failed": ["no JUnit report"]}, rc=proc.returncode)
        failed = f" ({', '.join(r['failed'][:5])})" if r["failed"] else ""
        notes = f"; not collected: {', '.join(r['not_collected'])}" if r["not_collected"] else ""
        ctx.add("a", name, f"{r['passed']} passed, {len(r['failed'])} failed{failed}, {r['skipped']} skipped{notes}",
                "FAIL" if r["failed"] or not (r["passed"] or r["skipped"]) else "PASS")
    return results


def junit_counts(xml: Path) -> dict:
    import xml.etree.ElementTree as ET

    out = {"passed": 0, "failed": [], "skipped": 0, "not_collected": []}
    for case in ET.parse(xml).getroot().iter("testcase"):
        name = "::".join(filter(None, (case.get("classname"), case.get("name"))))
        bad = [c for c in case if c.tag in ("failure", "error")]
        text = " ".join((c.get("message") or "") + (c.text or "") for c in bad)
        if bad and "collection failure" in text and "No module named" in text:
            # A dev-only module the GPU machine lacks (librosa): the module's GPU tests never ran; said, not failed.
            out["not_collected"].append(f"{name} (no {text.split('No module named')[1].split()[0].strip(chr(39))})")
        elif bad:
            out["failed"].append(name)
        else:
            out["skipped" if any(c.tag == "skipped" for c in case) else "passed"] += 1
    return out


def check_accuracy(ctx: Ctx) -> dict:
    """(b) fused on the device vs float64 on the CPU (from the inputs rounded to the case's dtype) and vs torchaudio."""
    from fastasr.loss import fused_rnnt_loss

    params, lattice = joint_inputs(*ctx.sizes["ragged"], spread=True)
    lat_dev = [x.to(ctx.device) for x in lattice]
    refs = {dt: loss_and_grads(lambda *p: unfused(*p, lattice, "fastasr"), [p.to(dt).double() for p in params])
            for dt in (torch.float32, torch.bfloat16)}
    none, bf16_amp = contextlib.nullcontext, lambda: torch.autocast("cuda", dtype=torch.bfloat16)
    cases = [("fp32", torch.float32, none, tf32(False))]
    if ctx.cuda and tf32(True):
        cases.append(("fp32 tf32", torch.float32, none, tf32(True)))
    cases.append(("bf16", torch.bfloat16, none, {}))
    if ctx.cuda:  # on the CPU autocast is no training mode, and the recomputing backward would not see it
        cases.append(("bf16 autocast", torch.float32, bf16_amp, {}))
    out, ta = {"shape": dict(zip("BTUVH", ctx.sizes["ragged"]))}, None
    if ctx.torchaudio is None:
        ctx.add("b", "fused vs torchaudio", "", f"skipped: {ctx.torchaudio_why}")
    else:
        try:
            ta = loss_and_grads(lambda *p: unfused(*p, lat_dev, "torchaudio", ctx.torchaudio),
                                [p.to(ctx.device) for p in params])
            out["torchaudio vs float64"] = verdict(ctx, "torchaudio fp32 vs float64 (the baseline itself)", ta,
                                                   refs[torch.float32], TOL["fp32"])
        except Exception as err:  # the baseline failing must not hide the fused results
            ctx.add("b", "torchaudio fp32", "", f"FAILED: {type(err).__name__}: {str(err)[:200]}")
    for label, dtype, amp, kw in cases:
        for chunk in (7, None):
            fused = loss_and_grads(lambda *p: fused_rnnt_loss(*p, *lat_dev, blank=0, chunk_size=chunk, **kw),
                                   [p.to(dtype).to(ctx.device) for p in params], amp)
            name = f"{label} chunk_size={chunk or 'default'}"
            ref = refs[torch.bfloat16 if dtype == torch.bfloat16 else torch.float32]
            out[f"{name} vs float64"] = verdict(ctx, f"fused {name} vs float64", fused, ref, TOL[label])
            if label == "fp32" and ta is not None:
                out[f"{name} vs torchaudio"] = verdict(ctx, f"fused {name} vs torchaudio", fused, ta, TOL[label])
    return out


def verdict(ctx: Ctx, check: str, got, want, tol: float) -> dict:
    err = errors(got, want)
    text = " · ".join(f"{n} {e['rel']:.1e}" for n, e in err.items())
    ok = max(e["rel"] for e in err.values()) <= tol
    ctx.add("b", check, f"rel err {text}", "PASS" if ok else f"FAIL (> {tol:g})")
    return err


def measure(ctx: Ctx, impl: str, shape, bf16: bool) -> dict:
    """Median forward+backward time after two warm-up steps, and the peak memory of one step beyond its inputs."""
    from fastasr.loss import fused_rnnt_loss

    params, lattice = joint_inputs(*shape, seed=1, low=0.9 if shape[0] > 100 else 0.75)
    # bf16 on CUDA is training's autocast; on the CPU the tensors themselves (CPU autocast is no training mode).
    dtype = torch.bfloat16 if bf16 and not ctx.cuda else torch.float32
    amp = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if bf16 and ctx.cuda else contextlib.nullcontext
    ps = [p.to(dtype).to(ctx.device).requires_grad_(True) for p in params]
    lat = [x.to(ctx.device) for x in lattice]

    def step():
        for p in ps:
            p.grad = None
        with amp():
            loss = (fused_rnnt_loss(*ps, *lat, blank=0, **(tf32(False) if impl == "fused no-tf32" else {}))
                    if impl.startswith("fused") else unfused(*ps, lat, impl, ctx.torchaudio))
        loss.backward()
        if ctx.cuda:
            torch.cuda.synchronize()

    step(), step()
    for p in ps:
        p.grad = None
    gc.collect()
    if ctx.cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = cpu_peak(step)
    times = []
    for _ in range(ctx.sizes["runs"]):
        if ctx.cuda:  # events bracket the GPU work; step()'s own synchronize ends it
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            step()
            times.append(1000 * (time.perf_counter() - t0))
    ps.clear()  # free the inputs before the next measurement
    if ctx.cuda:
        torch.cuda.empty_cache()
    return {"ms": statistics.median(times), "ms_runs": times, "peak_mb": None if peak is None else peak / 2 ** 20}


def cpu_peak(step) -> int | None:
    """Resident bytes one step adds: malloc_trim first hands freed pages back, so reusing them cannot hide the
    step's memory; clear_refs=5 resets the high-water mark (VmHWM). None where /proc does not allow it."""
    def kb(name):
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith(name + ":"))
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        base = kb("VmRSS")
    except OSError:
        step()
        return None
    step()
    return 1024 * (kb("VmHWM") - base)


def check_speed_memory(ctx: Ctx) -> dict:
    """(c) fused vs torchaudio vs materialised fastasr, per shape and precision; the targets vs torchaudio."""
    # fused fp32 runs its GEMMs in TF32 by default and torchaudio's F.linear does not: the strict one says how much
    # of the lead that is.
    strict = ["fused no-tf32"] if ctx.cuda and tf32(False) else []
    out = {}
    for shape_name in ("bench", "real"):
        shape = ctx.sizes[shape_name]
        for precision in ("fp32", "bf16"):
            impls = ["fused"] + (strict if precision == "fp32" else []) + \
                (["torchaudio"] if ctx.torchaudio is not None else []) + ["fastasr"]
            key = f"{shape_name} {precision}"
            res = out[key] = {"shape": dict(zip("BTUVH", shape))}
            for impl in impls:
                try:
                    if ctx.left() < 60:
                        raise TimeoutError("skipped: time budget")
                    res[impl] = measure(ctx, impl, shape, precision == "bf16")
                except Exception as err:  # an OOM of a baseline is a result, not the end of the section
                    res[impl] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
                    gc.collect()
                    if ctx.cuda:
                        torch.cuda.empty_cache()
            ctx.add("c", f"{key} B={shape[0]} T={shape[1]} U={shape[2]} V={shape[3]} H={shape[4]} fwd+bwd",
                    " · ".join(f"{'materialised ' if i == 'fastasr' else ''}{i} " + (
                        res[i]["error"] if "error" in res[i] else f"{res[i]['ms']:.1f} ms, {mb(res[i]['peak_mb'])}")
                        for i in impls))
            for what, limit in [("time", 0.5)] + ([("peak memory", 0.1)] if shape_name == "bench" else []):
                target(ctx, res, f"target {key}: fused {what} ≤ {limit}× torchaudio", what, limit)
    return out


def mb(x) -> str:
    return "n/a" if x is None else f"{x / 1024:.2f} GB" if x >= 1024 else f"{x:.1f} MB"


def target(ctx: Ctx, res: dict, check: str, what: str, limit: float) -> None:
    f, t = res["fused"], res.get("torchaudio")
    if not ctx.cuda:
        status = "skipped: CPU mode (the targets are for the GPU)"
    elif t is None:
        status = f"skipped: {ctx.torchaudio_why}"
    elif "error" in f or "error" in t:
        status = "FAILED: fused did not run" if "error" in f else "skipped: torchaudio did not run"
    else:
        field_ = "ms" if what == "time" else "peak_mb"
        ratio = res[f"{field_}_ratio"] = f[field_] / t[field_]
        return ctx.add("c", check, f"{ratio:.3f}×", "PASS" if ratio <= limit else "MISS")
    ctx.add("c", check, "", status)


def check_logmel(ctx: Ctx) -> dict:
    """(d) LogMel on the device vs on the CPU; on a CPU-only run, float32 vs its float64 path instead."""
    from fastasr.model.features import LogMel

    n, (lo, hi) = ctx.sizes["mel_utts"], ctx.sizes["mel_seconds"]
    rng = np.random.default_rng(0)
    lens = torch.from_numpy(rng.integers(lo * SR, hi * SR, n))
    audio = torch.zeros(n, int(lens.max()))
    for b, s in enumerate(lens.tolist()):
        t = np.arange(s) / SR
        x = sum(rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(80, 4000) * t) for _ in range(5))
        audio[b, :s] = torch.from_numpy((x + 0.01 * rng.standard_normal(s)).astype(np.float32))
    hours = float(lens.sum()) / SR / 3600

    @torch.inference_mode()
    def timed(module, a, l, reps):
        module(a, l)  # warm-up: cuFFT plans, the filterbank's copy to the device
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            feats, _ = module(a, l)
            if a.is_cuda:
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        return feats.cpu().double(), statistics.median(times)

    cpu, cpu_s = timed(LogMel(), audio, lens, 3)
    other, other_s = (timed(LogMel().to(ctx.device), audio.to(ctx.device), lens.to(ctx.device), 50) if ctx.cuda
                      else timed(LogMel(), audio.double(), lens, 1))
    diff = float((other - cpu).abs().max())
    name = "cuda vs cpu" if ctx.cuda else "cpu float32 vs float64"
    if not ctx.cuda:
        ctx.add("d", "LogMel cuda vs cpu", "", "skipped: no CUDA device")
    ctx.add("d", f"LogMel {name}, max abs Δ (normalised features)", f"{diff:.2e}",
            "PASS" if diff <= 1e-3 else "FAIL (> 1e-3)")
    speed = f"cuda {1000 * other_s:.2f} ms ({hours / other_s:.0f} h audio/s) · " if ctx.cuda else ""
    ctx.add("d", f"LogMel time per batch ({n} utts, {hours * 60:.1f} min)",
            f"{speed}cpu {1000 * cpu_s:.1f} ms ({hours / cpu_s:.2f} h audio/s)")
    return {"utterances": n, "audio_hours": hours, "cpu_ms": 1000 * cpu_s, "max_abs_diff": diff, "compared": name,
            **({"device_ms": 1000 * other_s} if ctx.cuda else {})}


def check_training(ctx: Ctx) -> dict:
    """(e) fastasr.training.loop.train for max_minutes on the given shards (or tiny ones made here): its summary dict."""
    from fastasr.training.config import preset
    from fastasr.training.loop import train

    shards = ctx.shards or make_tiny_shards(ctx.tmp / "shards")
    minutes = min(ctx.sizes["train_minutes"], (ctx.left() - 45) / 60)  # the last validation and exit need time
    if minutes < 0.1:
        raise Skip(f"time budget ({ctx.left():.0f} s left)")
    over = {"train": dict(max_minutes=round(minutes, 2), progress=False, device=ctx.device.type)}
    if not ctx.cuda:  # the tiny preset shrunk further: a step in tens of milliseconds
        over = {"model": dict(d_model=32, n_heads=2, n_layers=2, pred_embed=16, pred_hidden=32, joint_dim=24,
                              subsampling_channels=8),
                "optim": dict(warmup_steps=20),
                "data": dict(max_batch_seconds=8.0, num_workers=1, val_utterances=16, val_batch_seconds=20.0),
                "train": dict(over["train"], val_every=10 ** 6, ckpt_every=10 ** 6, log_every=5)}
    s = train(shards, ctx.tmp / "run", preset(ctx.sizes["preset"], over))
    ctx.add("e", f"{ctx.sizes['preset']} preset, {minutes:.2f} min on {shards}",
            f"{s['steps']} steps, {s['epochs_started']} epochs, {s['audio_hours_seen']} h audio, "
            f"{s['parameters'] / 1e6:.2f} M params")
    ctx.add("e", f"h of audio per {'GPU' if ctx.cuda else 'CPU'}-hour", f"{s['throughput_audio_h_per_device_h']}")
    ctx.add("e", "step time · data wait", f"{s['step_ms']} ms · {s['data_wait_ms']} ms")
    share = s["data_wait_fraction"]
    ctx.add("e", "target: data wait ≤ 5% of the step", f"{share:.1%}",
            ("PASS" if share <= 0.05 else "MISS") if ctx.cuda else "skipped: CPU mode")
    ctx.add("e", "val CER / WER reached", f"{s.get('val_cer', math.nan):.2%} / {s.get('val_wer', math.nan):.2%}")
    return dict(s, shards=str(shards), minutes=minutes)


# ---------------------------------------------------------------- main

SECTIONS = {"a": ("kernel tests on the device", check_kernel_tests),
            "b": ("loss and gradients vs torchaudio and float64", check_accuracy),
            "c": ("time and peak memory, fused vs torchaudio", check_speed_memory),
            "d": ("log-mel on the device vs the CPU", check_logmel),
            "e": ("training throughput and CER", check_training)}


def run_section(ctx: Ctx, key: str) -> None:
    title, fn = SECTIONS[key]
    print(f"\n=== ({key}) {title} [{ctx.left():.0f} s left]", flush=True)
    start, first = time.monotonic(), len(ctx.rows)
    try:
        results, status, error = fn(ctx), "ok", None
    except Skip as why:
        results, status, error = {}, "skipped", str(why)
        ctx.add(key, title, "", f"skipped: {why}")
    except Exception as err:  # one section's crash must not cost the others
        traceback.print_exc()
        results, status, error = {}, "failed", f"{type(err).__name__}: {err}"
        ctx.add(key, title, "", f"FAILED: {error[:300]}")
    ctx.sections[key] = {"title": title, "status": status, "error": error,
                         "seconds": round(time.monotonic() - start, 1), "results": results}
    ctx.write()
    print(markdown(ctx.rows[first:]) + f"({key}) {status} in {ctx.sections[key]['seconds']} s", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu",
                   help="full sizes on cuda, reduced ones on cpu (default here: %(default)s)")
    p.add_argument("--shards", type=Path, help="shard directory for (e) (default: tiny shards made in a temp dir)")
    p.add_argument("--out", type=Path, help="JSON results; the markdown table goes beside it as .md (default: none)")
    p.add_argument("--only", default="abcde", help="the sections to run (default: %(default)s)")
    p.add_argument("--budget-minutes", type=float, help="limit for the whole run (default: 8 cuda, 3 cpu)")
    p.add_argument("--train-minutes", type=float, help="length of (e) (default: 3 cuda, 0.33 cpu)")
    p.add_argument("--fail-on-miss", action="store_true", help="a missed performance target also exits 1")
    p.add_argument("--prepare", type=Path, metavar="DIR", help="make DIR/shards and DIR/wheels here, then exit")
    p.add_argument("--utterances", type=int, default=2000, help="corpus size for --prepare (default: %(default)s)")
    args = p.parse_args(argv)
    if args.prepare:
        return prepare(args.prepare, args.utterances)
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch sees no CUDA device")
    try:
        import torchaudio.functional as af

        af.rnnt_loss  # noqa: B018 (torchaudio 2.9 dropped it for a while)
        why = ""
    except Exception as err:
        af, why = None, f"torchaudio not importable ({type(err).__name__}: {err})"[:120]
    sizes = dict(SIZES[args.device], **({"train_minutes": args.train_minutes} if args.train_minutes else {}))
    budget = args.budget_minutes or (8.0 if args.device == "cuda" else 3.0)
    meta = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
            "cuda": torch.version.cuda, "torchaudio": getattr(sys.modules.get("torchaudio"), "__version__", why),
            "python": sys.version.split()[0], "argv": sys.argv[1:], "sizes": sizes}
    print(json.dumps(meta), flush=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        ctx = Ctx(torch.device(args.device), sizes, Path(tmp), args.shards, started + 60 * budget, af, why,
                  args.out, meta)
        for key in args.only:
            run_section(ctx, key)
    bad = [r for r in ctx.rows if r.status.startswith("FAIL") or (args.fail_on_miss and r.status == "MISS")]
    meta.update(seconds=round(time.monotonic() - started, 1), failed_checks=len(bad))
    ctx.write()
    print(f"\n=== gpu_check on {meta['device']}: {meta['seconds']} s, {len(bad)} failed\n{markdown(ctx.rows)}",
          end="", flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
