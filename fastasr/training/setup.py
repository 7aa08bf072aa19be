"""What a run sets up before its first step, and what it saves: resume or warm start, the tokenizer, the model,
optimiser and EMA, the step's parts, the train loader and the validation subset, and the checkpoint of a step.

`start` returns a `Session`, everything the loop in loop.py reads; `save` writes the session's checkpoint at a step.
Every checkpoint carries `run_id`, a uuid4 hex made when a run starts (a warm start is a new run) and kept by
--resume, so that `fastasr average` can tell step checkpoints of two runs apart.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from fastasr.errors import UserError
from fastasr.model.checkpoint import weights_digest
from fastasr.model.transducer import Transducer, log_mel, waveform_of
from fastasr.shards.index import Reach
from fastasr.text import tokenizer as tokenizers
from fastasr.text.tokenizer import AnyTokenizer, tokenizer_of
from fastasr.training import checkpoints as ckpt_io
from fastasr.training.config import Config, speed_factors
from fastasr.training.dist import Dist, gather, setup_distributed
from fastasr.training.logs import Logs
from fastasr.training.step import EMA, StepParts, load_optimizer_state, make_optimizer
from fastasr.training.tokenizer import make_tokenizer
from fastasr.training.warm_start import check_resume, init_weights

log = logging.getLogger("fastasr.train")
TOKENIZER_WAIT_S = 4 * 3600  # how long ranks wait for rank 0 to train a SentencePiece model
VAL_SHARDS = 4  # the validation subset comes from the heads of at most this many val shards


@dataclass
class Session:
    """One rank's run, as set up: the resolved config, the rank, the model and what a step touches, the data, and
    where the run stands (the step, training seconds and skipped steps it resumed at; the loader's epoch)."""

    config: Config
    run: Path
    d: Dist
    tokenizer: AnyTokenizer
    model: Transducer
    optimizer: torch.optim.Optimizer
    ema: EMA | None
    parts: StepParts | None  # None once released (it holds the DDP reducer)
    loader: object  # fastasr.data.Loader
    val_batches: list
    logs: Logs
    saved: dict | None  # the checkpoint resumed from
    run_id: str = ""  # set by start: the resumed checkpoint's, else a new one
    step: int = 0
    elapsed: float = 0.0
    skipped: int = 0
    epoch: int = 0


def start(data: str, run: Path, config: Config, *, resume: bool, init_from, tokenizer: str | None,
          reach: Reach | None = None) -> Session:
    """Set up one rank's run (train()'s arguments; see there; `reach`: the opt-ins of an index read from a URL)."""
    saved = read_resumed(run, tokenizer) if resume else None
    d = setup_distributed(config.train.device, config.train.dist_timeout_s)
    tok = run_tokenizer(tokenizer, data, run, saved, config.train.seed, d, reach)
    config = replace(config, model=replace(config.model, vocab_size=tok.vocab_size))
    if saved is not None:
        # Model, optimiser and data settings are the run's; stopping, logging and checkpoints this invocation's.
        check_resume(Config.from_dict(saved["config"]), config, run / "last.pt")
    if d.is_main:
        run.mkdir(parents=True, exist_ok=True)
        settings = {**config.to_dict(), "tokenizer": tokenizers.record(tok, tokenizer)}  # a record, not a setting
        (run / "config.json").write_text(json.dumps(settings, indent=2) + "\n")  # the resolved settings
    if config.train.threads and d.device.type == "cpu":
        torch.set_num_threads(config.train.threads)
    seed = config.train.seed + d.rank
    random.seed(seed), np.random.seed(seed), torch.manual_seed(seed)

    model = Transducer(config.model).to(d.device)
    optimizer = make_optimizer(model, config.optim)
    logs = Logs(run, d.is_main, resumed_at=None if saved is None else int(saved["step"]))
    s = Session(config, run, d, tok, model, optimizer, None, None, None, [], logs, saved, run_id=new_run_id(saved))
    resumed = restore_weights(s, init_from) if saved is not None or init_from is not None else {}
    if config.model.streaming and saved is None and init_from is None:
        measure_feature_stats(s, data, reach)  # before the EMA, which copies the buffers
    s.ema = make_ema(s)
    s.parts = step_parts(s)
    s.loader = train_loader(data, s, resumed, reach)
    s.epoch = s.loader.epoch
    s.val_batches = load_val_subset(data, config, tok, reach) if d.is_main else []
    return s


def new_run_id(saved: dict | None) -> str:
    """The resumed run's id, or a new one: for a new run, and for a checkpoint older than run ids (its later
    checkpoints then differ from its earlier ones, which `average` reports as unchecked). Only rank 0's is saved."""
    if saved is not None and isinstance(saved.get("run_id"), str):
        return saved["run_id"]
    return uuid.uuid4().hex


def read_resumed(run: Path, spec: str | None) -> dict | None:
    """RUN/last.pt when there is one to resume, after checking that `--tokenizer spec` does not contradict it."""
    if not (run / "last.pt").exists():
        return None
    saved = ckpt_io.load(run / "last.pt")
    tokenizers.check_resume(spec, tokenizer_of(saved, run / "last.pt"), run / "last.pt")
    return saved


def run_tokenizer(spec: str | None, data, run: Path, saved: dict | None, seed: int, d: Dist,
                  reach: Reach | None = None) -> AnyTokenizer:
    """A resumed run's own tokenizer, or the one `spec` asks for, made by rank 0 alone (a SentencePiece model is
    trained on the train transcripts) and handed to the other ranks; a mistake rank 0 finds stops every rank."""
    # Reading the transcripts and training can outlast train.dist_timeout_s (a remote corpus): the other ranks wait
    # in a CPU group of its own with a long timeout, made before the wait (torchrun ends them if rank 0 fails).
    group = dist.new_group(backend="gloo", timeout=timedelta(seconds=TOKENIZER_WAIT_S)) if d.world > 1 else None
    made = None
    if d.is_main:
        try:
            made = (tokenizer_of(saved) if saved is not None
                    else make_tokenizer(spec or "char", data, run, seed=seed, reach=reach)).to_dict()
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


def restore_weights(s: Session, init_from) -> dict:
    """The resumed checkpoint's weights, optimiser and position into `s` (returns how its data stream goes on), or
    `--init-from`'s weights only (returns {})."""
    saved = s.saved
    if saved is not None:
        s.model.load_state_dict(saved["model"])
        load_optimizer_state(s.optimizer, saved["optimizer"])
        s.step, s.elapsed = saved["step"], saved["progress"]["elapsed_s"]
        s.skipped = saved["progress"]["skipped_steps"]
        return resumed_stream(saved, s.d, s.config.data.num_workers, s.run / "last.pt")
    source = ckpt_io.load(init_from)
    changed = init_weights(s.model, source, s.tokenizer, init_from)
    if s.d.is_main:
        log.info(f"initialised from {init_from} (its step {source['step']}): weights only, a fresh optimiser "
                 "and schedule")
        for line in changed:
            log.warning(line)
    return {}


def resumed_stream(saved: dict, d: Dist, num_workers: int, path) -> dict:
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


def make_ema(s: Session) -> EMA | None:
    """After the weights are final (resumed, initialised): a new average starts at them, a resumed one continues."""
    saved, decay = s.saved, s.config.train.ema_decay
    ema = EMA(s.model, decay) if decay else None
    if ema is not None and saved is not None and "ema" in saved:
        ema.load_state_dict(saved["ema"], saved["progress"]["ema_updates"])
    elif saved is not None and s.d.is_main and (ema is not None or "ema" in saved):
        log.warning("--resume: " + ("the run kept no EMA of the weights; it starts now, from the resumed weights"
                                    if ema is not None else "train.ema_decay=0: the run's EMA (ema.pt) stops here"))
    return ema


def step_parts(s: Session) -> StepParts:
    """What a step touches: the model (in DDP under torchrun), log-mel, SpecAugment, bf16 autocast on GPU."""
    from fastasr.model.features import SpecAugment

    d, c = s.d, s.config
    ddp = DDP(s.model, device_ids=[d.local_rank] if d.device.type == "cuda" else None) if d.world > 1 else s.model
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if d.device.type == "cuda" and c.train.amp else nullcontext()
    augment = SpecAugment(freq_masks=c.data.freq_masks, freq_width=c.data.freq_width, time_masks=c.data.time_masks,
                          time_width=c.data.time_width).to(d.device)
    return StepParts(ddp, s.model, s.optimizer, log_mel(c.model).to(d.device), augment, amp, c.optim.grad_clip,
                     d.world, d.device, s.ema, c.train.delay_penalty)


def train_loader(data: str, s: Session, resumed: dict, reach: Reach | None = None):
    """The infinite train loader, from the start or where the resumed stream left off."""
    from fastasr.data import build_loader

    c = s.config.data
    epoch, consumed = 0, 0
    if "continue_from" not in resumed and resumed:
        epoch, consumed = resumed["epoch"], resumed["skip_batches"]
    return build_loader(data, "train", max_batch_seconds=c.max_batch_seconds, num_workers=c.num_workers,
                        shuffle=True, seed=s.config.train.seed, epoch=epoch, skip_batches=consumed, infinite=True,
                        tokenizer=s.tokenizer, speed_perturb=speed_factors(c.speed_perturb),
                        max_duration=c.max_duration, waveform=waveform_of(s.config.model), **asdict(reach or Reach()),
                        **{k: v for k, v in resumed.items() if k not in ("epoch", "skip_batches")})


def load_val_subset(data, config: Config, tokenizer=None, reach: Reach | None = None) -> list:
    """`val_utterances` utterances of val, the same fixed subset at every validation: the first ones in index order
    of up to VAL_SHARDS shards spread evenly over the split (a bounded read, also for remote shards). Not the first
    batches the val loader makes: those are the first length bucket to fill, all of one length."""
    return spread_subset(data, "val", config.data.val_utterances, config, tokenizer, reach)


def spread_subset(data, split: str, n: int, config: Config, tokenizer=None, reach: Reach | None = None) -> list:
    """Batches of the first utterances of up to VAL_SHARDS shards spread over `split`, n in all."""
    from fastasr.data import build_loader
    from fastasr.data.loader import read_index

    shards = [(s["path"], int(s.get("groups", s["samples"])))
              for s in read_index(data, reach)["splits"][split]["shards"]]
    picked = {shards[i * len(shards) // VAL_SHARDS][0] for i in range(VAL_SHARDS)} if shards else set()
    left, shards_left = n, len(picked)
    unwanted = {}
    for path, count in shards:
        take = 0
        if path in picked:
            take = min(count, -(-left // shards_left))  # an even share of what is left; a short shard's rest goes on
            left, shards_left = left - take, shards_left - 1
        unwanted[path] = set(range(take, count))
    return list(build_loader(data, split, max_batch_seconds=config.data.val_batch_seconds, num_workers=0,
                             tokenizer=tokenizer, shuffle=False, infinite=False, rank=0, world_size=1,
                             max_duration=config.data.max_duration, exclude={0: unwanted},
                             waveform=waveform_of(config.model),
                             **asdict(reach or Reach())))


STATS_UTTERANCES = 400  # train utterances a streaming model's feature statistics are measured on


@torch.no_grad()
def measure_feature_stats(s: Session, data, reach: Reach | None) -> None:
    """A new streaming run's global feature mean and std per bin (Encoder.feat_mean / feat_std), over
    STATS_UTTERANCES train utterances spread over the split, in float64; every rank measures the same ones."""
    frontend = log_mel(s.config.model)
    total, sq, frames = 0.0, 0.0, 0
    for batch in spread_subset(data, "train", STATS_UTTERANCES, s.config, s.tokenizer, reach):
        feats, lens = frontend(batch.audio.double(), batch.audio_lens)  # (B, T, F)
        valid = (torch.arange(feats.shape[1])[None, :] < lens[:, None])[..., None]  # (B, T, 1)
        total = total + (feats * valid).sum((0, 1))
        sq = sq + (feats * feats * valid).sum((0, 1))
        frames += int(lens.sum())
    if not frames:
        return
    mean = total / frames
    std = (sq / frames - mean * mean).clamp_min(1e-10).sqrt()
    enc = s.model.encoder
    enc.feat_mean.copy_(mean.to(enc.feat_mean))
    enc.feat_std.copy_(std.to(enc.feat_std))
    if s.d.is_main:
        log.info("streaming front end: global mean %.2f and std %.2f (averaged over bins) from %d train frames",
                 float(mean.mean()), float(std.mean()), frames)


def restore_rng(s: Session) -> None:
    """The resumed ranks' random streams, exactly; under another world size each rank's derived anew from the
    seed, its rank and the step."""
    saved, d = s.saved, s.d
    if saved is None:
        return
    if len(saved["rng"]) == d.world:
        ckpt_io.set_rng_state(saved["rng"][d.rank])
    else:
        seed = s.config.train.seed + 1_000_003 * s.step + d.rank
        random.seed(seed), np.random.seed(seed % 2**32), torch.manual_seed(seed)


def save(s: Session, step: int, elapsed: float, skipped: int) -> None:
    """The checkpoint at `step` (every rank takes part: positions, RNG states and weight digests are gathered)."""
    d, tokenizer, ema = s.d, s.tokenizer, s.ema
    # Batches delivered since the stream's start: a checkpoint (between optimiser steps) resumes exactly.
    here = s.loader.position()
    positions = gather({"epoch": here["epoch"], "batches": here["skip_batches"]}, d)
    rngs = gather(ckpt_io.rng_state(), d)
    digests = gather(weights_digest(s.model), d)  # DDP keeps ranks bit-identical; this records it
    # With train.ema_decay the checkpoint carries the average too, and save_step writes it as RUN/ema.pt.
    averaged = {} if ema is None else {"ema": ema.state_dict()}
    progress = {"elapsed_s": elapsed, "skipped_steps": skipped,
                **({} if ema is None else {"ema_updates": ema.updates_done()})}
    if d.is_main:
        # "alphabet" for readers older than "tokenizer"; a SentencePiece run has none, so they refuse it.
        old_readers = {"alphabet": tokenizer.alphabet} if tokenizer.kind == "char" else {}
        ckpt_io.save_step({"config": s.config.to_dict(), "tokenizer": tokenizer.to_dict(), **old_readers,
                           "run_id": s.run_id, "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(), "step": step,
                           "progress": progress, "data": positions, "stream": s.loader.stream_state(),
                           "rng": rngs, "rank_weight_digests": digests, **averaged},
                          s.run, keep=s.config.train.keep)
