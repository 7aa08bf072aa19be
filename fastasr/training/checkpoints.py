"""Checkpoints: written atomically (temp file + rename), carrying everything a resumed run or a decoder needs.

Contents: `run_id` (a uuid4 hex, the same in every checkpoint of one run, --resume included), `config`
(Config.to_dict()), `tokenizer` (fastasr.text.tokenizer's to_dict; char runs also keep `alphabet`, which is all
older checkpoints have: `tokenizer_of` reads both), `model`, `optimizer`, `step`, `progress`
(elapsed training seconds, skipped steps), `data` (one {epoch, batches} per rank), `rng` (one set per rank).
Every value is a tensor, dict, list, tuple, str, bytes or number, so that fastasr.model.checkpoint.load reads it
with torch's weights-only unpickler; `convert` rewrites a checkpoint of an older fastasr (NumPy RNG state as an
ndarray) for `fastasr convert-checkpoint`.

A run directory holds `last.pt` (what --resume reads) and the last `train.keep` step checkpoints
`step-XXXXXXX.pt`, the inputs of `average` (icefall's --avg: the parameter-wise mean of the last N).
With train.ema_decay a checkpoint also carries `ema` (the moving average, in the model's state-dict layout, with
`progress.ema_updates`), and `ema.pt` beside last.pt is that average as a checkpoint to evaluate, written with it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from fastasr.errors import UserError
from fastasr.model.checkpoint import load, load_legacy
from fastasr.text.tokenizer import tokenizer_of


def save_atomic(obj: dict, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same directory, fsync, rename: a crash never leaves a torn checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def link_atomic(src: str | os.PathLike, path: str | os.PathLike) -> None:
    """`path` becomes a complete copy of `src` in one rename: a hard link where the file system has them (no second
    write of a large file), a copy otherwise."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


STEP_FILE = re.compile(r"step-(\d+)\.pt")


def step_path(run: str | os.PathLike, step: int) -> Path:
    return Path(run) / f"step-{step:07d}.pt"


def step_checkpoints(run: str | os.PathLike) -> list[Path]:
    """The run's step checkpoints, oldest first (by step, not by name or time)."""
    found = [(int(m.group(1)), p) for p in Path(run).iterdir() if (m := STEP_FILE.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def save_step(obj: dict, run: str | os.PathLike, *, keep: int) -> None:
    """Write `obj` as last.pt, and with keep >= 1 as step-XXXXXXX.pt too, pruning to the newest `keep` of those only
    once the new ones are complete; when it carries `ema`, then ema.pt (each file atomic on its own)."""
    if keep < 1:
        save_atomic(obj, Path(run) / "last.pt")
    else:
        path = step_path(run, obj["step"])
        save_atomic(obj, path)
        link_atomic(path, Path(run) / "last.pt")
        for old in step_checkpoints(run)[:-keep]:
            old.unlink(missing_ok=True)
    if "ema" in obj:
        save_atomic(ema_checkpoint(obj), Path(run) / "ema.pt")


# What only --resume needs; an averaged checkpoint carries the rest of the newest one (config, tokenizer, step).
RESUME_ONLY = ("optimizer", "progress", "data", "rng", "rank_weight_digests", "ema")


def ema_checkpoint(obj: dict) -> dict:
    """A step checkpoint's EMA as the checkpoint eval, transcribe, export and --init-from read: its config, tokenizer
    and step, `model` the average. Without the resume state: ema.pt is for using the average, --resume reads last.pt
    (which carries the average too)."""
    out = {k: v for k, v in obj.items() if k not in RESUME_ONLY}
    return {**out, "model": obj["ema"], "ema_of": {"step": obj["step"], "updates": obj["progress"]["ema_updates"],
                                                   "decay": obj["config"]["train"]["ema_decay"]}}


def average(run: str | os.PathLike, last: int) -> dict:
    """The parameter-wise mean of the run's newest `last` step checkpoints, as a checkpoint eval, transcribe,
    export and --init-from read. Floating tensors are averaged in float64 and stored in their own dtype; others
    (integer buffers) are the newest checkpoint's. Checkpoints of different runs (run ids) are refused; those
    older than run ids are averaged unchecked, named in `averaged_unchecked`. `averaged_from` names the files,
    `averaged_steps` their steps."""
    run = Path(run)
    if not run.is_dir():
        raise UserError(f"{run}: no such run directory")
    paths = step_checkpoints(run)
    if len(paths) < last:
        raise UserError(f"--last {last}: {run} holds {len(paths)} step checkpoint(s) (step-XXXXXXX.pt; the run keeps "
                        f"train.keep of them)")
    paths = paths[-last:]
    newest = load(paths[-1])
    tokenizer = tokenizer_of(newest, paths[-1])
    sums = {k: v.to(torch.float64, copy=True) if v.is_floating_point() else v for k, v in newest["model"].items()}
    runs, unchecked = {}, []  # run id → its files; the files without one
    _note_run(paths[-1].name, newest, runs, unchecked)
    for path in paths[:-1]:
        ckpt = load(path)
        if _note_run(path.name, ckpt, runs, unchecked) > 1:
            continue  # refused below, once every file is named
        if tokenizer_of(ckpt, path).identity() != tokenizer.identity():
            raise UserError(f"{path}: its tokenizer, {tokenizer_of(ckpt, path).describe()}, differs from "
                            f"{paths[-1].name}'s, {tokenizer.describe()}, so they cannot be averaged")
        model = ckpt["model"]
        if model.keys() != sums.keys() or any(model[k].shape != sums[k].shape for k in sums):
            raise UserError(f"{path}: its parameters differ from {paths[-1].name}'s, so they cannot be averaged")
        for k, v in model.items():
            if v.is_floating_point():
                sums[k] += v.double()
    if len(runs) > 1:
        groups = " and ".join(f"{', '.join(sorted(names))} (run {run_id[:8]}…)" for run_id, names in
                              sorted(runs.items(), key=lambda item: min(item[1])))
        raise UserError(f"{run}: {groups} are checkpoints of {len(runs)} runs, so they cannot be averaged: "
                        "average the last N of one run")
    averaged = {k: (v / last).to(newest["model"][k].dtype) if v.is_floating_point() else v for k, v in sums.items()}
    out = {k: v for k, v in newest.items() if k not in RESUME_ONLY}
    return {**out, "model": averaged, "averaged_from": [p.name for p in paths],
            "averaged_steps": [int(STEP_FILE.fullmatch(p.name).group(1)) for p in paths],
            **({"averaged_unchecked": sorted(unchecked)} if unchecked else {})}


def _note_run(name: str, ckpt: dict, runs: dict, unchecked: list) -> int:
    """Record `ckpt` (the file `name`) under its run id in `runs`, or in `unchecked` when it is older than run ids;
    returns how many runs are seen so far."""
    run_id = ckpt.get("run_id")
    if isinstance(run_id, str):
        runs.setdefault(run_id, []).append(name)
    else:
        unchecked.append(name)
    return len(runs)


def rng_state() -> dict:
    """This process's random streams as tensors and plain values only, which a weights-only load reads back:
    python's (version, 625 ints, gauss) tuple as it is, NumPy's legacy MT19937 state with its key array as an int64
    tensor (not the ndarray np.random.get_state() returns), torch's (and CUDA's) byte tensors."""
    state = {"python": random.getstate(), "numpy": _numpy_state(np.random.get_state()),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _numpy_state(state: tuple) -> tuple:
    """np.random.get_state()'s (name, uint32 keys, pos, has_gauss, cached_gaussian) with plain values; also how
    convert-checkpoint rewrites the states older checkpoints hold."""
    name, keys, pos, has_gauss, cached = state
    keys = torch.from_numpy(np.asarray(keys, dtype=np.uint32).astype(np.int64))  # (624,)
    return str(name), keys, int(pos), int(has_gauss), float(cached)


def set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def convert(old: dict) -> dict:
    """An older checkpoint (read with load_legacy) with what a weights-only load refuses rewritten as plain values:
    each rank's NumPy RNG state (its key ndarray). Everything else is kept as it is."""
    if "rng" not in old:
        return dict(old)
    rng = [{**state, "numpy": _numpy_state(state["numpy"])} if "numpy" in state else state for state in old["rng"]]
    return {**old, "rng": rng}


def convert_file(old: str | os.PathLike, new: str | os.PathLike) -> dict:
    """`fastasr convert-checkpoint`: `old`, read with NumPy's arrays and scalars allowed (load_legacy), written to
    `new` (a new file; `old` stays) as a checkpoint that fastasr.model.checkpoint.load reads; returns it. What the
    weights-only load then refuses (objects other than an older fastasr's) removes `new` again, a UserError."""
    given = os.fspath(new)  # as typed: Path() drops a trailing separator
    old, new = Path(old), Path(new)
    if given.endswith(("/", os.sep)) or new.is_dir():
        raise UserError(f"{given}: is a directory; give the converted checkpoint a file name such as "
                        f"{new / 'new.pt'}")
    if new.exists() or new.is_symlink():
        raise UserError(f"{new}: exists; give the converted checkpoint a new name ({old} stays as it is)")
    converted = convert(load_legacy(old))
    save_atomic(converted, new)
    try:
        load(new)
    except UserError:
        new.unlink(missing_ok=True)
        raise UserError(f"{old}: not converted: it holds Python objects that no fastasr checkpoint holds (its copy "
                        "still needs more than a weights-only load)") from None
    return converted
