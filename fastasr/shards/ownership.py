"""What in OUT is fastasr's: `fastasr shard` builds only into an empty folder or its own build, and deletes only
files it wrote.

A fastasr build is recognised by BUILD_MARK (`OUT/.meta/fastasr-build`, written before the first shard, so that a
build killed before its index.json is still recognised and resumes), or — for builds made before the mark — by an
`index.json` of `fastasr shard` (format fastasr-shards/1 without `origin`: `fastasr index` writes one beside
another tool's shards), a shard sidecar `.meta/SPLIT/shard-NNNNNN.json` or a part index `parts/index-I-of-N.json`.
Any other OUT holding a file is refused (UserError) unless `force`; with it, the build writes its own names there
(SPLIT/shard-NNNNNN.tar of its plan, index.json, rejected.tsv, durations-SPLIT.json, parts/, .meta/) and nothing
else.

Deleting, also in its own build: a shard of an earlier plan (`SPLIT/shard-NNNNNN.tar`, exactly that name) only
when its sidecar says fastasr wrote it (the sidecar's tar_size is the file's size); a shard without one is left
and logged. Temporary files only under fastasr's own temporary names (`.shard-NNNNNN.tar.tmp-PID`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from fastasr.corpus.split import SPLITS
from fastasr.errors import UserError
from fastasr.shards.index import FORMAT, PARTS_DIR

META_DIR = ".meta"
BUILD_MARK = "fastasr-build"
SHARD_NAME = re.compile(r"shard-\d{6}\.tar")
TMP_NAME = re.compile(r"\.shard-\d{6}\.(tar|json)\.tmp-\d+")
_PART_INDEX = re.compile(r"index-\d+-of-\d+\.json")
_MAX_INDEX_BYTES = 256 << 20  # an index.json larger than this is not read to find out whose it is

log = logging.getLogger("fastasr.shard")


def meta_path(out: Path, plan_path: str) -> Path:
    """The sidecar of shard `plan_path` (SPLIT/shard-NNNNNN.tar)."""
    return out / META_DIR / plan_path.replace(".tar", ".json")


def refuse_foreign(out: Path, force: bool = False) -> None:
    """UserError when OUT holds a file and is not a fastasr build (unless `force`); nothing is created."""
    if out.exists() and not out.is_dir():
        raise UserError(f"OUT {out} is a file, not a folder")
    if out.is_dir() and not force and not is_build(out):
        found = first_file(out)
        if found is not None:
            raise UserError(f"OUT {out} holds {found.relative_to(out)} and is not a fastasr shard build: give a new "
                            f"or empty folder, or --force to build into it (only the build's own names are "
                            f"written there, nothing else is deleted)")


def mark(out: Path) -> None:
    """Create OUT and its BUILD_MARK, before any shard is written."""
    (out / META_DIR).mkdir(parents=True, exist_ok=True)
    try:  # O_EXCL: parts of one build starting together; an empty mark is a mark
        os.close(os.open(out / META_DIR / BUILD_MARK, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    except FileExistsError:
        pass


def is_build(out: Path) -> bool:
    if (out / META_DIR / BUILD_MARK).is_file():
        return True
    if any(SHARD_NAME.fullmatch(p.with_suffix(".tar").name) for s in SPLITS
           for p in (out / META_DIR / s).glob("shard-*.json")):
        return True
    if any(_PART_INDEX.fullmatch(p.name) for p in (out / PARTS_DIR).glob("index-*-of-*.json")):
        return True
    return _is_shard_index(out / "index.json")


def _is_shard_index(path: Path) -> bool:
    try:
        if not path.is_file() or path.stat().st_size > _MAX_INDEX_BYTES:
            return False
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(index, dict) and index.get("format") == FORMAT and "origin" not in index


def first_file(out: Path) -> Path | None:
    """Some file (anything not a directory) under OUT, or None when it holds only empty folders."""
    stack = [out]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    return Path(entry.path)
    return None


def wrote(out: Path, plan_path: str) -> bool:
    """Whether the shard at plan_path is one fastasr wrote: its sidecar records the tar's size."""
    try:
        meta = json.loads(meta_path(out, plan_path).read_text(encoding="utf-8"))
        return isinstance(meta, dict) and meta.get("tar_size") == (out / plan_path).stat().st_size
    except (OSError, ValueError):
        return False


def remove_stale(out: Path, keep: set[str]) -> None:
    """Shards of an earlier, different plan (fewer rows, other options) must not linger beside the new ones; a file
    of that name that fastasr did not write stays (and is named in the log)."""
    for split in SPLITS:
        folder = out / split
        if not folder.is_dir():
            continue
        for tar in sorted(folder.glob("shard-*.tar")):
            plan_path = f"{split}/{tar.name}"
            if plan_path in keep or not SHARD_NAME.fullmatch(tar.name):
                continue
            if wrote(out, plan_path):
                tar.unlink()
                meta_path(out, plan_path).unlink(missing_ok=True)
            else:
                log.warning("%s is not in this build's plan and no sidecar says fastasr wrote it: left alone", tar)
        remove_temporary(folder)
        if (out / META_DIR / split).is_dir():
            remove_temporary(out / META_DIR / split)


def remove_temporary(folder: Path, name: str | None = None) -> None:
    """fastasr's temporary files in folder (of shard `name` only, when given): left by a killed run."""
    for tmp in folder.glob(f".{name or 'shard-*'}.tmp-*"):
        if TMP_NAME.fullmatch(tmp.name):
            tmp.unlink(missing_ok=True)
