"""The durations table in binary beside its JSON: one float64 array that every loader process on a node maps from
the page cache instead of parsing (and copying) the JSON.

At Open STT's size (16.5 M samples) `durations-train.json` is ~100 MB of JSON, and each process that parses it holds
~750 MB of Python floats; the same numbers are 132 MB of float64 on disk, shared read-only by every process that
maps them, each paying in memory only for the pages it reads (its own shards' numbers). float64 keeps every value
the JSON holds exactly, so a plan made from either is the same plan (tests/data/test_durations_bin.py).

    durations-SPLIT.npy       float64, every shard's values one after another in the table's order, NaN for null
    durations-SPLIT.bin.json  {"format": BIN_FORMAT, "split", "values": "durations-SPLIT.npy", "count": N,
                               "shards": [[shard path, start, length], …], "json": {"bytes", "mtime_ns"}}

The sidecar is written last and names the JSON table it mirrors by size and modification time: a JSON table written
again without it (an older fastasr, another tool) no longer matches, and readers then parse the JSON as before. Only
local tables are mapped; a table read from a URL is the JSON one.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from fastasr.errors import UserError

BIN_FORMAT = "fastasr-durations-bin/1"


def bin_paths(json_path: Path) -> tuple[Path, Path]:
    """(values .npy, sidecar .bin.json) beside the JSON table durations-SPLIT.json."""
    stem = json_path.name[:-len(".json")] if json_path.name.endswith(".json") else json_path.name
    return json_path.with_name(stem + ".npy"), json_path.with_name(stem + ".bin.json")


def write_binary(json_path: Path, split: str, shards: dict[str, list]) -> None:
    """The binary twin of the JSON table just written at `json_path` (each file renamed into place)."""
    npy, sidecar = bin_paths(json_path)
    counts = [len(v) for v in shards.values()]
    values = np.fromiter((math.nan if x is None else x for v in shards.values() for x in v), dtype=np.float64,
                         count=sum(counts))
    tmp = npy.with_name(f".{npy.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, values)
    os.replace(tmp, npy)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist() if counts else []
    st = json_path.stat()
    meta = {"format": BIN_FORMAT, "split": split, "values": npy.name, "count": int(values.size),
            "shards": [[path, int(s), n] for path, s, n in zip(shards, starts, counts)],
            "json": {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}}
    tmp = sidecar.with_name(f".{sidecar.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(meta, separators=(",", ":")), encoding="utf-8")
    os.replace(tmp, sidecar)


class BinaryShards(Mapping):
    """{shard path: [seconds or None, …]} over the mapped array, each shard's list made when asked for."""

    def __init__(self, spans: dict[str, tuple[int, int]], values: np.ndarray, where: str):
        self.spans, self.values, self.where = spans, values, where

    def __getitem__(self, path: str) -> list:
        start, n = self.spans[path]
        part = self.values[start:start + n]
        if not (np.isnan(part) | ((part >= 0) & np.isfinite(part))).all():
            raise UserError(f"{self.where}: shard {path!r} has durations that are not seconds >= 0")
        return [None if math.isnan(x) else x for x in part.tolist()]

    def value(self, path: str, ordinal: int) -> float | None:
        """One sample's seconds (None: null, or no such shard or ordinal)."""
        span = self.spans.get(path)
        if span is None or not 0 <= ordinal < span[1]:
            return None
        x = float(self.values[span[0] + ordinal])
        if math.isnan(x):
            return None
        if not 0 <= x < math.inf:
            raise UserError(f"{self.where}: shard {path!r} sample {ordinal} has {x} seconds")
        return x

    def __iter__(self):
        return iter(self.spans)

    def __len__(self) -> int:
        return len(self.spans)


def read_binary(json_path: Path) -> BinaryShards | None:
    """The mapped twin of the local JSON table at `json_path`, or None when there is none that mirrors it (then
    the JSON is read). A twin that matches the JSON but is damaged is a UserError naming it."""
    npy, sidecar = bin_paths(json_path)
    try:
        meta = json.loads(sidecar.read_text(encoding="utf-8"))
        st = json_path.stat()
    except (OSError, ValueError):
        return None
    mirrored = meta.get("json") if isinstance(meta, dict) else None
    if (meta.get("format") != BIN_FORMAT or not isinstance(mirrored, dict)
            or mirrored.get("bytes") != st.st_size or mirrored.get("mtime_ns") != st.st_mtime_ns):
        return None
    try:
        values = np.load(json_path.with_name(meta["values"]) if Path(meta["values"]).name == meta["values"] else "",
                         mmap_mode="r", allow_pickle=False)
        spans = {path: (start, n) for path, start, n in meta["shards"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{sidecar}: the binary durations table cannot be read ({err}); delete {sidecar.name} to "
                        "read the JSON table instead") from None
    ok = (values.dtype == np.float64 and values.ndim == 1 and values.size == meta.get("count")
          and all(isinstance(s, int) and isinstance(n, int) and 0 <= s and s + n <= values.size
                  for s, n in spans.values()))
    if not ok:
        raise UserError(f"{sidecar}: the binary durations table does not match its sidecar; delete {sidecar.name} "
                        "to read the JSON table instead")
    return BinaryShards(spans, values, str(sidecar))
