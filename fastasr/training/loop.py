"""The training loop: one readable function, single process or under torchrun (DDP; nccl on GPU, gloo on CPU).

SIGINT and SIGTERM end the loop after the current step with a checkpoint there (fastasr.training.interrupt).
Each step: the next `optim.accum_steps` batches (an infinite loader, so ranks never wait on each other for data),
each → device → log-mel → SpecAugment → model (bf16 autocast on GPU: the joint's GEMMs in bf16, the RNN-T loss
in float32) → backward (DDP all-reduces in the last one's only) → clip → a device-side "non-finite, skip" flag
all-reduced across ranks → fused AdamW step that the flag cancels on the device. A step is an optimiser step: the
lr schedule, max_steps and checkpoints count those, the loader position counts batches.
Nothing makes the host wait for the device inside a step (the loss gets its lengths from the CPU batch, so
it copies nothing back either): losses, counts and the ranks' clocks are read back at sync points only (every
`log_every` steps, at validation, checkpoints and the last step). The set-up before the first step (resume, warm
start, tokenizer, model, loaders) is setup.py's.
"""

from __future__ import annotations

import dataclasses
import gc
import itertools
import json
import logging
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from fastasr.model.decode import transcribe_loader
from fastasr.model.transducer import Transducer, count_parameters
from fastasr.shards.index import Reach
from fastasr.text.scoring import score
from fastasr.text.tokenizer import AnyTokenizer
from fastasr.training.config import Config, OptimConfig
from fastasr.training.interrupt import Interrupts
from fastasr.training.logs import plot_losses
from fastasr.training.setup import Session, restore_rng, save, start
from fastasr.training.step import Clock, Reading, Window, train_step

log = logging.getLogger("fastasr.train")


def train(data: str | os.PathLike, run: str | os.PathLike, config: Config, *, resume: bool = False,
          init_from: str | os.PathLike | None = None, batch_hook=None, tokenizer: str | None = None,
          allow_pipe: bool = False, allow_foreign_paths: bool = False) -> dict:
    """Train on `data` (a shard directory or URL prefix), writing logs and checkpoints to `run`; returns the summary.

    resume: continue from run/last.pt when it exists; a model / optim / data setting of `config` that differs from
    the run's is a UserError. init_from: a checkpoint whose weights (only) start a run that does not resume.
    batch_hook(step, batch) -> batch lets tests inject faults (e.g. a non-finite batch) at a given step.
    tokenizer: the --tokenizer spec (fastasr.text.tokenizer; None: char, or on --resume the run's, which it must match).
    allow_pipe, allow_foreign_paths: build_loader's opt-ins for an index read from a URL (--allow-pipe, …).
    """
    s = start(str(data), Path(run), config, resume=resume, init_from=init_from, tokenizer=tokenizer,
              reach=Reach(allow_pipe=allow_pipe, allow_foreign_paths=allow_foreign_paths))
    config, d, t = s.config, s.d, s.config.train
    step, elapsed, skipped, epoch = s.step, s.elapsed, s.skipped, s.epoch
    saved_at = step  # the step the checkpoint on disk holds (none yet, or the one resumed from)
    if d.is_main and s.saved is not None:
        note_new_horizon(Config.from_dict(s.saved["config"]), config, step, s.elapsed)
    if d.is_main:
        note_endless_warmup(config, step)
    if d.is_main:
        print(f"model: {count_parameters(s.model) / 1e6:.2f} M parameters, vocab {s.tokenizer.vocab_size}, "
              f"world {d.world} on {d.device}; starting at step {step}", flush=True)
    bar = progress_bar(s)
    totals = {"step_s": 0.0, "data_s": 0.0, "audio_s": 0.0, "steps": 0}
    last_val, last_loss = {}, None
    it = iter(s.loader)
    # The loader builds its DataLoader (which draws from torch's generator) on the first next(): take that batch
    # before restoring the RNG so a resumed run continues the exact random stream of the interrupted one.
    stream = itertools.chain([next(it)], it)
    restore_rng(s)
    started = time.perf_counter() - elapsed
    clock, window = Clock(step, elapsed), Window(d.device, d.world)
    s.model.train()
    plain = dataclasses.replace(s.parts, delay_penalty=0.0)  # the warm-up's parts
    signum = 0  # the signal the ranks agreed to stop on (fastasr.training.interrupt), 0: none
    with Interrupts() as stop:
        while not (t.max_steps and step >= t.max_steps):
            t0 = time.perf_counter()
            batches = [next(stream) for _ in range(config.optim.accum_steps)]
            data_s = time.perf_counter() - t0
            if batch_hook is not None:
                batches = [batch_hook(step, b) for b in batches]
            epoch = batches[-1].epoch  # for the logs; checkpoints take the loader's position (exact, any workers)
            lr = lr_at(step, progress_of(step, clock.at(step), config), config.optim)
            # k2's recipes switch the delay penalty on after the lr warm-up: pulling emissions earlier before the
            # model aligns at all keeps it from converging.
            parts = s.parts if step >= config.optim.warmup_steps else plain
            loss, grad_norm, skip = train_step(parts, batches, lr)
            window.add(loss, grad_norm, skip, [b.audio_lens for b in batches], data_s)
            step += 1
            if bar is not None:
                bar.update(1)
            last = bool(t.max_steps) and step >= t.max_steps
            alone_stopping = stop.requested and d.world == 1  # a single process stops at this very step
            if not (last or alone_stopping or step % t.log_every == 0 or step % t.val_every == 0
                    or step % t.ckpt_every == 0):
                continue
            # A sync point, at the same step on every rank; only here does the host wait for the device.
            r = window.read(started, stop.signum or 0)
            elapsed, skipped = r.elapsed, skipped + r.skipped
            clock.agree(step, r)
            for k in totals:
                totals[k] += getattr(r, k)
            last = last or (bool(t.max_minutes) and elapsed >= 60.0 * t.max_minutes)  # agreed: all ranks stop here
            signum = r.signal  # agreed too: an interrupt that reached any rank stops every rank at this step
            last = last or bool(signum)
            if r.loss is not None:  # a window of skipped steps only is dropped, not carried over
                last_loss = r.loss
                log_window(s, r, step, lr, skipped, elapsed, epoch)
            if bar is not None:
                bar.set_postfix(loss="-" if r.loss is None else f"{r.loss:.3f}", lr=f"{lr:.2e}", skipped=skipped)
            # Interrupted, save at once (a pre-emption's grace period is short); validation waits for --resume.
            if d.is_main and (step % t.val_every == 0 or (last and not signum)) and s.val_batches:
                last_val = validate_and_log(s, step, bar)
            if step % t.ckpt_every == 0:
                save(s, step, elapsed, skipped)
                saved_at = step
            if last:
                break
            window.restart()  # after validation and saving, which are no part of the step time
        if saved_at != step:  # still inside: a signal now must not cut the last checkpoint short
            save(s, step, elapsed, skipped)
    if bar is not None:
        bar.close()
    # Release the DDP reducer (which holds gloo/NCCL work objects) and the loader's iterator while the process group
    # is alive: left to interpreter finalisation they can abort the process after training has succeeded.
    it.close()
    del stream, it
    s.parts = None
    gc.collect()
    summary = summarize(s, totals, step=step, skipped=skipped, epoch=epoch, elapsed=elapsed, last_loss=last_loss,
                        last_val=last_val)
    if signum:
        summary["interrupted"] = signal.Signals(signum).name
    return finish(s, summary)


def lr_at(step: int, progress: float, optim: OptimConfig) -> float:
    """Linear warm-up over `warmup_steps`, then cosine decay to `min_lr_ratio * lr` as progress goes 0 → 1.

    progress is the run's fraction done: steps / max_steps, or elapsed / max_minutes, whichever is further.
    """
    warm = min(1.0, (step + 1) / max(1, optim.warmup_steps))
    cosine = 0.5 * (1.0 + math.cos(math.pi * min(1.0, max(0.0, progress))))
    return optim.lr * warm * (optim.min_lr_ratio + (1.0 - optim.min_lr_ratio) * cosine)


def note_new_horizon(saved: Config, config: Config, step: int, elapsed: float) -> None:
    """--resume with another max_steps / max_minutes than the run's moves its schedule: say so, with the lr it
    implies at the resumed step, before and after."""
    before, after = saved.train, config.train
    changed = [f"{k} {getattr(before, k)} → {getattr(after, k)}" for k in ("max_steps", "max_minutes")
               if getattr(before, k) != getattr(after, k)]
    if not changed:
        return
    old = lr_at(step, progress_of(step, elapsed, saved), saved.optim)
    new = lr_at(step, progress_of(step, elapsed, config), config.optim)
    ends = ", ".join(x for x in (f"step {after.max_steps}" if after.max_steps else "",
                                 f"{after.max_minutes:g} min" if after.max_minutes else "") if x)
    print(f"fastasr train: --resume with {', '.join(changed)}: the cosine schedule now ends at "
          f"{ends or f'optim.decay_steps {config.optim.decay_steps}'}; the lr at step {step} is {new:.3g} "
          f"(it was {old:.3g} under the run's limits)", file=sys.stderr, flush=True)


def note_endless_warmup(config: Config, step: int) -> None:
    """A run whose steps end inside the lr warm-up never trains at its lr (a short run, a short fine-tune): say so."""
    t, o = config.train, config.optim
    if not (t.max_steps and step < t.max_steps <= o.warmup_steps):
        return
    top = lr_at(t.max_steps - 1, progress_of(t.max_steps - 1, 0.0, config), o)
    log.warning(f"optim.warmup_steps={o.warmup_steps} >= --max-steps {t.max_steps}: the lr is still ramping up when "
                f"the run ends (at most {top:.2g} of optim.lr={o.lr:g}); for a short run or a fine-tune set e.g. "
                f"optim.warmup_steps={max(1, t.max_steps // 10)}")


def progress_of(step: int, elapsed_s: float, config: Config) -> float:
    t = config.train
    parts = []
    if t.max_steps:
        parts.append(step / t.max_steps)
    if t.max_minutes:
        parts.append(elapsed_s / (60.0 * t.max_minutes))
    return max(parts) if parts else step / max(1, config.optim.decay_steps)


def progress_bar(s: Session):
    if not (s.d.is_main and s.config.train.progress):
        return None
    from tqdm import tqdm

    return tqdm(total=s.config.train.max_steps or None, initial=s.step, unit="step", dynamic_ncols=True)


def log_window(s: Session, r: Reading, step: int, lr: float, skipped: int, elapsed: float, epoch: int) -> None:
    s.logs.write("train", {"step": step, "loss": r.loss, "lr": lr, "grad_norm": r.grad_norm,
                           "skipped_steps": skipped, "step_ms": 1000 * r.step_s / r.steps,
                           "data_wait_ms": 1000 * r.data_s / r.steps,
                           "audio_x_realtime": r.audio_s * s.d.world / max(1e-9, r.step_s + r.data_s),
                           "elapsed_s": elapsed, "epoch": epoch})


def validate(model: Transducer, tokenizer: AnyTokenizer, frontend, val_batches: list, device) -> dict:
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


def validate_and_log(s: Session, step: int, bar) -> dict:
    val = validate(s.model, s.tokenizer, s.parts.frontend, s.val_batches, s.d.device)
    s.logs.write("val", {"step": step, "loss": val["loss"], "wer": val["wer"], "cer": val["cer"]})
    msg = (f"step {step}: val loss {val['loss']:.3f} WER {val['wer']:.2%} CER {val['cer']:.2%} | "
           f"{val['example']!r}")
    (bar.write(msg) if bar is not None else print(msg, flush=True))
    return val


def summarize(s: Session, totals: dict, *, step: int, skipped: int, epoch: int, elapsed: float, last_loss,
              last_val: dict) -> dict:
    d = s.d
    steps_run = max(1, totals["steps"])
    audio_h = totals["audio_s"] * d.world / 3600  # every rank saw a different batch of about the same size
    compute_h = (totals["step_s"] + totals["data_s"]) / 3600
    summary = {
        "steps": step, "skipped_steps": skipped, "epochs_started": epoch + 1, "world_size": d.world,
        "device": str(d.device.type), "parameters": count_parameters(s.model),
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
    return summary


def finish(s: Session, summary: dict) -> dict:
    """The main rank's last records (logs closed, loss plot, summary.json), then every rank meets once more."""
    if s.d.is_main:
        s.logs.close()
        plot_losses(s.run)
        (s.run / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        print(json.dumps(summary, indent=2), flush=True)
        if "interrupted" in summary:
            print(f"fastasr train: interrupted ({summary['interrupted']}) at step {summary['steps']}; saved "
                  f"{s.run / 'last.pt'}; continue with --resume", file=sys.stderr, flush=True)
    if s.d.world > 1:
        dist.barrier()
    return summary
