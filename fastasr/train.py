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
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from fastasr import checkpoint as ckpt_io
from fastasr import tokenizer as tokenizers
from fastasr.config import Config, OptimConfig, speed_factors
from fastasr.errors import UserError
from fastasr.evaluate import score, transcribe_loader
from fastasr.model import Transducer, count_parameters, log_mel
from fastasr.tokenizer import AnyTokenizer, make_tokenizer, tokenizer_of
from fastasr.train_dist import Dist, gather, setup_distributed
from fastasr.train_logs import Logs, plot_losses
from fastasr.train_step import EMA, Clock, StepParts, Window, load_optimizer_state, make_optimizer, train_step
from fastasr.warm_start import check_resume, init_weights

log = logging.getLogger("fastasr.train")
TOKENIZER_WAIT_S = 4 * 3600  # how long ranks wait for rank 0 to train a SentencePiece model
VAL_SHARDS = 4  # the validation subset comes from the heads of at most this many val shards


def _resumed_stream(saved: dict, d: Dist, num_workers: int, path) -> dict:
    """build_loader arguments that continue a checkpoint's data stream on this rank: its own position under the
    same world size and workers, else the epoch's undelivered rest shared among this run's ranks (resume.py)."""
    positions, state = saved["data"], saved.get("stream")
    same = len(positions) == d.world and (state is None or state["workers"] == max(1, num_workers))
    if same:
        mine = positions[d.rank]
        exclude = {int(e): v for e, v in state.get("exclude", {}).items()} if state else {}
        return {"epoch": mine["epoch"], "skip_batches": mine["batches"], **({"exclude": exclude} if exclude else {})}
    if state is None:
        raise UserError(f"--resume: {path} was written by {len(positions)} ranks (this run has {d.world}) before "
                        "checkpoints recorded their data streams; resume it with the same world size and "
                        "data.num_workers")
    if d.is_main:
        log.warning(f"--resume: {path} was written by {len(positions)} ranks × {state['workers']} workers, this run "
                    f"has {d.world} × {max(1, num_workers)}: the epoch goes on with the utterances not delivered yet, "
                    "and each rank's random streams are derived anew from the seed, its rank and the step")
    return {"continue_from": (state, positions)}


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


def run_tokenizer(spec: str | None, data, run: Path, saved: dict | None, seed: int, d: Dist) -> AnyTokenizer:
    """A resumed run's own tokenizer, or the one `spec` asks for, made by rank 0 alone (a SentencePiece model is
    trained on the train transcripts) and handed to the other ranks; a mistake rank 0 finds stops every rank."""
    # Reading the transcripts and training can outlast train.dist_timeout_s (a remote corpus): the other ranks wait
    # in a CPU group of its own with a long timeout, made before the wait (torchrun ends them if rank 0 fails).
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=TOKENIZER_WAIT_S)) if d.world > 1 else None
    made = None
    if d.is_main:
        try:
            made = (tokenizer_of(saved) if saved is not None
                    else make_tokenizer(spec or "char", data, run, seed=seed)).to_dict()
        except UserError as err:
            made = {"error": str(err)}
    if group is not None:
        box = [made]
        dist.broadcast_object_list(box, src=0, group=group)
        dist.destroy_process_group(group)
        made = box[0]
    if "error" in made:
        raise UserError(made["error"])
    return tokenizers.from_dict(made)


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


def load_val_subset(data, config: Config, tokenizer=None) -> list:
    """`val_utterances` utterances of val, the same fixed subset at every validation: the first ones in index order
    of up to VAL_SHARDS shards spread evenly over the split (a bounded read, also for remote shards). Not the first
    batches the val loader makes: those are the first length bucket to fill, all of one length."""
    from fastasr.data import build_loader
    from fastasr.data.loader import read_index

    shards = [(s["path"], int(s.get("groups", s["samples"])))
              for s in read_index(data)["splits"]["val"]["shards"]]
    picked = {shards[i * len(shards) // VAL_SHARDS][0] for i in range(VAL_SHARDS)} if shards else set()
    left, shards_left = config.data.val_utterances, len(picked)
    unwanted = {}
    for path, n in shards:
        take = 0
        if path in picked:
            take = min(n, -(-left // shards_left))  # an even share of what is left; a short shard's rest goes on
            left, shards_left = left - take, shards_left - 1
        unwanted[path] = set(range(take, n))
    return list(build_loader(data, "val", max_batch_seconds=config.data.val_batch_seconds, num_workers=0,
                             tokenizer=tokenizer, shuffle=False, infinite=False, rank=0, world_size=1,
                             exclude={0: unwanted}))


def train(data: str | os.PathLike, run: str | os.PathLike, config: Config, *, resume: bool = False,
          init_from: str | os.PathLike | None = None, batch_hook=None, tokenizer: str | None = None) -> dict:
    """Train on `data` (a shard directory), writing logs and checkpoints to `run`; returns the summary dict.

    resume: continue from run/last.pt when it exists; a model / optim / data setting of `config` that differs from
    the run's is a UserError. init_from: a checkpoint whose weights (only) start a run that does not resume.
    batch_hook(step, batch) -> batch lets tests inject faults (e.g. a non-finite batch) at a given step.
    tokenizer: the --tokenizer spec (fastasr.tokenizer; None: char, or on --resume the run's, which it must match).
    """
    from fastasr.data import build_loader
    from fastasr.features import SpecAugment

    data, run = str(data), Path(run)  # data: a directory or a URL prefix (fastasr.sources)
    spec = tokenizer
    saved = None
    if resume and (run / "last.pt").exists():
        saved = ckpt_io.load(run / "last.pt")
        tokenizers.check_resume(spec, tokenizer_of(saved, run / "last.pt"), run / "last.pt")
    d = setup_distributed(config.train.device, config.train.dist_timeout_s)
    tokenizer = run_tokenizer(spec, data, run, saved, config.train.seed, d)
    config = replace(config, model=replace(config.model, vocab_size=tokenizer.vocab_size))
    if saved is not None:
        # Model, optimiser and data settings are the run's; stopping, logging and checkpoints this invocation's.
        check_resume(Config.from_dict(saved["config"]), config, run / "last.pt")
    if d.is_main:
        run.mkdir(parents=True, exist_ok=True)
        settings = {**config.to_dict(), "tokenizer": tokenizers.record(tokenizer, spec)}  # a record, not a setting
        (run / "config.json").write_text(json.dumps(settings, indent=2) + "\n")  # the resolved settings
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
    step, elapsed, skipped, epoch, consumed, resumed = 0, 0.0, 0, 0, 0, {}
    if saved is not None:
        model.load_state_dict(saved["model"])
        load_optimizer_state(optimizer, saved["optimizer"])
        step, elapsed, skipped = saved["step"], saved["progress"]["elapsed_s"], saved["progress"]["skipped_steps"]
        resumed = _resumed_stream(saved, d, config.data.num_workers, run / "last.pt")
        if "continue_from" not in resumed:
            epoch, consumed = resumed["epoch"], resumed["skip_batches"]
    elif init_from is not None:
        source = ckpt_io.load(init_from)
        changed = init_weights(model, source, tokenizer, init_from)
        if d.is_main:
            log.info(f"initialised from {init_from} (its step {source['step']}): weights only, a fresh optimiser "
                     "and schedule")
            for line in changed:
                log.warning(line)
        del source  # a second copy of the weights, not needed past here
    # After the weights are final (resumed, initialised): a new average starts at them, a resumed one continues.
    ema = EMA(model, config.train.ema_decay) if config.train.ema_decay else None
    if ema is not None and saved is not None and "ema" in saved:
        ema.load_state_dict(saved["ema"], saved["progress"]["ema_updates"])
    elif saved is not None and d.is_main and (ema is not None or "ema" in saved):
        log.warning("--resume: " + ("the run kept no EMA of the weights; it starts now, from the resumed weights"
                                    if ema is not None else "train.ema_decay=0: the run's EMA (ema.pt) stops here"))
    ddp = DDP(model, device_ids=[d.local_rank] if d.device.type == "cuda" else None) if d.world > 1 else model
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda" and config.train.amp \
        else nullcontext()
    parts = StepParts(ddp, model, optimizer, frontend, augment, amp, config.optim.grad_clip, d.world, d.device, ema)

    loader = build_loader(data, "train", max_batch_seconds=c.max_batch_seconds, num_workers=c.num_workers,
                          shuffle=True, seed=config.train.seed, epoch=epoch, skip_batches=consumed, infinite=True,
                          tokenizer=tokenizer, speed_perturb=speed_factors(c.speed_perturb),
                          **{k: v for k, v in resumed.items() if k not in ("epoch", "skip_batches")})
    epoch = loader.epoch
    val_batches = load_val_subset(data, config, tokenizer) if d.is_main else []
    logs = Logs(run, d.is_main)
    if d.is_main:
        print(f"model: {count_parameters(model) / 1e6:.2f} M parameters, vocab {tokenizer.vocab_size}, "
              f"world {d.world} on {d.device}; starting at step {step}", flush=True)

    saved_at = step  # the step the checkpoint on disk holds (none yet, or the one resumed from)

    def save() -> None:
        nonlocal saved_at
        saved_at = step
        # Batches delivered since the stream's start: a checkpoint (between optimiser steps) resumes exactly.
        here = loader.position()
        positions = gather({"epoch": here["epoch"], "batches": here["skip_batches"]}, d)
        rngs = gather(ckpt_io.rng_state(), d)
        digests = gather(ckpt_io.weights_digest(model), d)  # DDP keeps ranks bit-identical; this records it
        # With train.ema_decay the checkpoint carries the average too, and save_step writes it as RUN/ema.pt.
        averaged = {} if ema is None else {"ema": ema.state_dict()}
        progress = {"elapsed_s": elapsed, "skipped_steps": skipped,
                    **({} if ema is None else {"ema_updates": ema.updates_done()})}
        if d.is_main:
            # "alphabet" for readers older than "tokenizer"; a SentencePiece run has none, so they refuse it.
            old_readers = {"alphabet": tokenizer.alphabet} if tokenizer.kind == "char" else {}
            ckpt_io.save_step({"config": config.to_dict(), "tokenizer": tokenizer.to_dict(), **old_readers,
                               "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                               "progress": progress, "data": positions, "stream": loader.stream_state(),
                               "rng": rngs,
                               "rank_weight_digests": digests, **averaged},
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
    if saved is not None and len(saved["rng"]) == d.world:
        ckpt_io.set_rng_state(saved["rng"][d.rank])
    elif saved is not None:  # another world size: each rank's streams re-derived from the seed, rank and step
        seed = config.train.seed + 1_000_003 * step + d.rank
        random.seed(seed), np.random.seed(seed % 2**32), torch.manual_seed(seed)
    start = time.perf_counter() - elapsed
    clock, window = Clock(step, elapsed), Window(d.device, d.world)
    model.train()
    while not (t.max_steps and step >= t.max_steps):
        t0 = time.perf_counter()
        batches = [next(stream) for _ in range(config.optim.accum_steps)]
        data_s = time.perf_counter() - t0
        if batch_hook is not None:
            batches = [batch_hook(step, b) for b in batches]
        epoch = batches[-1].epoch  # for the logs; checkpoints take the loader's position (exact with any workers)
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
