"""The training loop: one readable function, single process or under torchrun (DDP; nccl on GPU, gloo on CPU).

Each step: the next `optim.accum_steps` batches (an infinite loader, so ranks never wait on each other for data),
each → device → log-mel → SpecAugment → model (bf16 autocast on GPU: the joint's GEMMs in bf16, the RNN-T loss
in float32) → backward (DDP all-reduces in the last one's only) → clip → a device-side "non-finite, skip" flag
all-reduced across ranks → fused AdamW step that the flag cancels on the device. A step is an optimiser step: the
lr schedule, max_steps and checkpoints count those, the loader position counts batches.
Nothing makes the host wait for the device inside a step (the loss gets its lengths from the CPU batch, so
it copies nothing back either): losses, counts and the ranks' clocks are read back at sync points only (every
`log_every` steps, at validation, checkpoints and the last step).
"""

from __future__ import annotations

import gc
import itertools
import json
import logging
import math
import os
import random
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from fastasr import checkpoint as ckpt_io
from fastasr.config import Config, OptimConfig
from fastasr.evaluate import score, transcribe_loader
from fastasr.model import Transducer, count_parameters, log_mel
from fastasr.text import Tokenizer
from fastasr.train_logs import Logs, plot_losses
from fastasr.train_step import Clock, StepParts, Window, load_optimizer_state, make_optimizer, train_step
from fastasr.warm_start import check_resume, init_weights

log = logging.getLogger("fastasr.train")


@dataclass(frozen=True)
class Dist:
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_pref: str = "auto") -> Dist:
    """torchrun's RANK / WORLD_SIZE / LOCAL_RANK when present; a single process otherwise."""
    use_cuda = torch.cuda.is_available() and device_pref in ("auto", "cuda")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return Dist(rank, world, local_rank, device)


def lr_at(step: int, progress: float, optim: OptimConfig) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to `min_lr_ratio * lr` as progress goes 0 → 1.

    progress is the run's fraction done: steps / max_steps, or elapsed / max_minutes, whichever is further.
    """
    warm = min(1.0, (step + 1) / max(1, optim.warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return optim.lr * warm * (optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine)


def progress_of(step: int, elapsed_s: float, config: Config) -> float:
    t = config.train
    parts = []
    if t.max_steps:
        parts.append(step / t.max_steps)
    if t.max_minutes:
        parts.append(elapsed_s / (60.0 * t.max_minutes))
    return max(parts) if parts else step / max(1, config.optim.decay_steps)


def _gather(obj, d: Dist) -> list:
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def validate(model: Transducer, tokenizer: Tokenizer, frontend, val_batches: list, device) -> dict:
    model.eval()
    losses, weights = [], []
    with torch.no_grad():
        for batch in val_batches:
            b = batch.to(device)
            feats, feat_lens = frontend(b.audio, b.audio_lens)
            losses.append(float(model(feats, feat_lens, b.tokens, b.token_lens)) * len(b.keys))
            weights.append(len(b.keys))
    rows = list(transcribe_loader(model, tokenizer, frontend, val_batches, device))
    metrics = score([r for _, r, _ in rows], [h for _, _, h in rows])
    model.train()
    return {"loss": sum(losses) / max(1, sum(weights)), "wer": metrics["wer"], "cer": metrics["cer"],
            "example": rows[0][2] if rows else ""}


def load_val_subset(data, config: Config) -> list:
    """The first `val_utterances` of val in index order: the same fixed subset at every validation."""
    from fastasr.data import build_loader

    batches, n = [], 0
    loader = build_loader(data, "val", max_batch_seconds=config.data.val_batch_seconds, num_workers=0,
                          shuffle=False, infinite=False, rank=0, world_size=1)
    for batch in loader:
        batches.append(batch)
        n += len(batch.keys)
        if n >= config.data.val_utterances:
            break
    return batches


def train(data: str | os.PathLike, run: str | os.PathLike, config: Config, *, resume: bool = False,
          init_from: str | os.PathLike | None = None, batch_hook=None) -> dict:
    """Train on `data` (a shard directory), writing logs and checkpoints to `run`; returns the summary dict.

    resume: continue from run/last.pt when it exists; a model / optim / data setting of `config` that differs from
    the run's is a UserError. init_from: a checkpoint whose weights (only) start a run that does not resume.
    batch_hook(step, batch) -> batch lets tests inject faults (e.g. a non-finite batch) at a given step.
    """
    from fastasr.data import build_loader
    from fastasr.features import SpecAugment

    data, run = Path(data), Path(run)
    index = json.loads((data / "index.json").read_text())
    tokenizer = Tokenizer.from_index(index)
    config = replace(config, model=replace(config.model, vocab_size=tokenizer.vocab_size))
    saved = None
    if resume and (run / "last.pt").exists():
        saved = ckpt_io.load(run / "last.pt")
        # Model, optimiser and data settings are the run's; stopping, logging and checkpoints this invocation's.
        check_resume(Config.from_dict(saved["config"]), config, run / "last.pt")
    d = setup_distributed(config.train.device)
    if d.is_main:
        run.mkdir(parents=True, exist_ok=True)
        (run / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n")  # the resolved settings
    if config.train.threads and d.device.type == "cpu":
        torch.set_num_threads(config.train.threads)
    seed = config.train.seed + d.rank
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)

    model = Transducer(config.model).to(d.device)
    optimizer = make_optimizer(model, config.optim)
    frontend = log_mel(config.model).to(d.device)
    c = config.data
    augment = SpecAugment(freq_masks=c.freq_masks, freq_width=c.freq_width, time_masks=c.time_masks,
                          time_width=c.time_width).to(d.device)
    step, elapsed, skipped, epoch, consumed = 0, 0.0, 0, 0, 0
    if saved is not None:
        model.load_state_dict(saved["model"])
        load_optimizer_state(optimizer, saved["optimizer"])
        if len(saved["data"]) != d.world:
            raise ValueError(f"{run / 'last.pt'} was written by {len(saved['data'])} ranks and this run has {d.world}: "
                             "the data positions and random streams are per rank, so resume with the same world size")
        step, elapsed, skipped = saved["step"], saved["progress"]["elapsed_s"], saved["progress"]["skipped_steps"]
        epoch, consumed = saved["data"][d.rank]["epoch"], saved["data"][d.rank]["batches"]
    elif init_from is not None:
        source = ckpt_io.load(init_from)
        changed = init_weights(model, source, tokenizer.alphabet, init_from)
        if d.is_main:
            log.info(f"initialised from {init_from} (its step {source['step']}): weights only, a fresh optimiser "
                     "and schedule")
            for line in changed:
                log.warning(line)
        del source  # a second copy of the weights, not needed past here
    ddp = DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None) if d.world > 1 else model
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda" and config.train.amp \
        else nullcontext()
    parts = StepParts(ddp, model, optimizer, frontend, augment, amp, config.optim.grad_clip, d.world, d.device)

    loader = build_loader(data, "train", max_batch_seconds=c.max_batch_seconds, num_workers=c.num_workers,
                          shuffle=True, seed=config.train.seed, epoch=epoch, skip_batches=consumed, infinite=True)
    val_batches = load_val_subset(data, config) if d.is_main else []
    logs = Logs(run, d.is_main)
    if d.is_main:
        print(f"model: {count_parameters(model) / 1e6:.2f} M parameters, vocab {tokenizer.vocab_size}, "
              f"world {d.world} on {d.device}; starting at step {step}", flush=True)

    saved_at = step  # the step the checkpoint on disk holds (none yet, or the one resumed from)

    def save() -> None:
        nonlocal saved_at
        saved_at = step
        positions = _gather({"epoch": epoch, "batches": consumed}, d)
        rngs = _gather(ckpt_io.rng_state(), d)
        digests = _gather(ckpt_io.weights_digest(model), d)  # DDP keeps ranks bit-identical; this records it
        if d.is_main:
            ckpt_io.save_step({"config": config.to_dict(), "alphabet": tokenizer.alphabet,
                               "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                               "progress": {"elapsed_s": elapsed, "skipped_steps": skipped},
                               "data": positions, "rng": rngs, "rank_weight_digests": digests},
                              run, keep=config.train.keep)

    t = config.train
    bar = None
    if d.is_main and t.progress:
        from tqdm import tqdm

        bar = tqdm(total=t.max_steps or None, initial=step, unit="step", dynamic_ncols=True)
    totals = {"step_s": 0.0, "data_s": 0.0, "audio_s": 0.0, "steps": 0}
    last_val: dict = {}
    last_loss = None
    it = iter(loader)
    # The loader builds its DataLoader (which draws from torch's generator) on the first next(): take that batch
    # before restoring the RNG so a resumed run continues the exact random stream of the interrupted one.
    stream = itertools.chain([next(it)], it)
    if saved is not None:
        ckpt_io.set_rng_state(saved["rng"][d.rank])
    start = time.perf_counter() - elapsed
    clock, window = Clock(step, elapsed), Window(d.device, d.world)
    model.train()
    while not (t.max_steps and step >= t.max_steps):
        t0 = time.perf_counter()
        batches = [next(stream) for _ in range(config.optim.accum_steps)]
        data_s = time.perf_counter() - t0
        if batch_hook is not None:
            batches = [batch_hook(step, b) for b in batches]
        # The loader position counts batches, so a checkpoint (always between optimiser steps) resumes exactly.
        epoch, consumed = batches[-1].epoch, batches[-1].index + 1
        lr = lr_at(step, progress_of(step, clock.at(step), config), config.optim)
        loss, grad_norm, skip = train_step(parts, batches, lr)
        window.add(loss, grad_norm, skip, [b.audio_lens for b in batches], data_s)
        step += 1
        if bar is not None:
            bar.update(1)
        last = bool(t.max_steps) and step >= t.max_steps
        if not (last or step % t.log_every == 0 or step % t.val_every == 0 or step % t.ckpt_every == 0):
            continue
        # A sync point, at the same step on every rank; only here does the host wait for the device.
        r = window.read(start)
        elapsed, skipped = r.elapsed, skipped + r.skipped
        clock.agree(step, r)
        for k in totals:
            totals[k] += getattr(r, k)
        last = last or (bool(t.max_minutes) and elapsed >= 60.0 * t.max_minutes)  # agreed: all ranks stop here
        if r.loss is not None:  # a window of skipped steps only is dropped, not carried over
            last_loss = r.loss
            logs.write("train", {"step": step, "loss": r.loss, "lr": lr, "grad_norm": r.grad_norm,
                                 "skipped_steps": skipped, "step_ms": 1000 * r.step_s / r.steps,
                                 "data_wait_ms": 1000 * r.data_s / r.steps,
                                 "audio_x_realtime": r.audio_s * d.world / max(1e-9, r.step_s + r.data_s),
                                 "elapsed_s": elapsed, "epoch": epoch})
        if bar is not None:
            bar.set_postfix(loss="-" if r.loss is None else f"{r.loss:.3f}", lr=f"{lr:.2e}", skipped=skipped)
        if d.is_main and (step % t.val_every == 0 or last) and val_batches:
            last_val = validate(model, tokenizer, frontend, val_batches, d.device)
            logs.write("val", {"step": step, "loss": last_val["loss"], "wer": last_val["wer"],
                               "cer": last_val["cer"]})
            msg = (f"step {step}: val loss {last_val['loss']:.3f} WER {last_val['wer']:.2%} "
                   f"CER {last_val['cer']:.2%} | {last_val['example']!r}")
            (bar.write(msg) if bar is not None else print(msg, flush=True))
        if step % t.ckpt_every == 0:
            save()
        if last:
            break
        window.restart()  # after validation and saving, which are no part of the step time

    if saved_at != step:
        save()
    if bar is not None:
        bar.close()
    # Release the DDP reducer (which holds gloo/NCCL work objects) and the loader's iterator while the process group
    # is alive: left to interpreter finalisation they can abort the process after training has succeeded.
    it.close()
    del stream, it, ddp
    gc.collect()
    steps_run = max(1, totals["steps"])
    audio_h = totals["audio_s"] * d.world / 3600  # every rank saw a different batch of about the same size
    compute_h = (totals["step_s"] + totals["data_s"]) / 3600
    summary = {
        "steps": step, "skipped_steps": skipped, "epochs_started": epoch + 1, "world_size": d.world,
        "device": str(d.device.type), "parameters": count_parameters(model),
        "train_minutes": round(elapsed / 60, 2), "audio_hours_seen": round(audio_h, 3),
        "throughput_audio_h_per_h": round(audio_h / max(1e-9, compute_h), 1),
        "throughput_audio_h_per_device_h": round(audio_h / max(1e-9, compute_h) / d.world, 1),
        "step_ms": round(1000 * totals["step_s"] / steps_run, 1),
        "data_wait_ms": round(1000 * totals["data_s"] / steps_run, 1),
        "data_wait_fraction": round(totals["data_s"] / max(1e-9, totals["step_s"] + totals["data_s"]), 4),
        "final_train_loss": last_loss,
    }
    if last_val:
        summary.update(val_loss=round(last_val["loss"], 4), val_wer=round(last_val["wer"], 4),
                       val_cer=round(last_val["cer"], 4))
    if d.is_main:
        logs.close()
        plot_losses(run)
        (run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2), flush=True)
    if d.world > 1:
        dist.barrier()
    return summary
