"""`fastasr index`: an index.json for WebDataset shards that other tools wrote, so fastasr's loader can read them.

Writes, beside the index (DIR = the folder of `--out DIR/index.json`):
- `DIR/index.json` (`fastasr-shards/1`): per split its shards with usable samples, KEY groups and seconds, the
  rejected counts, the text settings and `origin` (`webdataset`, the transcript rule, `normalized: false` — the
  loader normalises the stored transcripts with the same settings);
- `DIR/durations-SPLIT.json` (`fastasr-durations/1`): per shard, one entry per KEY group in tar order — its header
  duration in seconds, or null for a group that cannot be used;
- `DIR/rejected.tsv`: every unusable group (`PATH#KEY`, reason, detail).
A shard's path in these files is the URL as given (after brace expansion); a local file becomes an absolute path,
or a path relative to DIR when it lies under DIR, so that the folder can be moved or served over HTTP as a whole.
Indexing another split into the same DIR adds it (or replaces it, when indexed again) and keeps the others.
Shards are independent: worker processes read several at once.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import os
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from fastasr import sources
from fastasr.corpus.split import SPLITS
from fastasr.errors import UserError
from fastasr.shards.index import (FORMAT, atomic_write, check_accounting, durations_name, read_rejected_tsv,
                                  rejected_tsv, write_durations_table)
from fastasr.shards.scan import ShardScan, parse_transcript_rule, scan_shard
from fastasr.text.normalization import TextConfig

log = logging.getLogger("fastasr.index")

ORIGIN_KIND = "webdataset"


@dataclass
class IndexResult:
    index_path: Path
    index: dict
    split: str
    scans: list[ShardScan]  # in the order given
    elapsed: float

    @property
    def unreadable(self) -> list[ShardScan]:
        return [s for s in self.scans if s.error is not None]


def resolve_out(out: str | os.PathLike) -> Path:
    """`--out DIR/index.json`; a directory, or a new name without a suffix, will do (DIR/index.json in it)."""
    text = str(out)
    if sources.is_remote(text):
        raise UserError(f"--out {text}: the index is written to a local folder (copy or serve it from there)")
    path = Path(text[len("file://"):] if text.startswith("file://") else text)
    if path.is_dir() or text.endswith(("/", os.sep)) or (not path.exists() and not path.suffix):
        path = path / "index.json"
    if path.name != "index.json":
        raise UserError(f"--out {text}: name the index DIR/index.json (the loader reads DIR/index.json)")
    if path.parent.exists() and not path.parent.is_dir():
        raise UserError(f"--out {text}: {path.parent} is not a directory")
    return path


def index_path(url: str, root: Path) -> str:
    """How the shard at `url` is named in the index: URLs and pipes as given; local files absolute, or relative to
    `root` when they lie under it (the loader resolves relative paths against the index's folder)."""
    if sources.is_remote(url):
        return url
    local = os.path.abspath(_local(url))
    rel = os.path.relpath(local, os.path.abspath(root))
    return local if rel == os.pardir or rel.startswith(os.pardir + os.sep) else Path(rel).as_posix()


def plan_shards(patterns: list[str], root: Path) -> list[tuple[str, str]]:
    """(url, index path) per shard, brace patterns expanded; a missing local file or a shard named twice is a
    mistake in what was asked for (UserError), found before anything is read."""
    urls = sources.expand(patterns)
    if not urls:
        raise UserError("no shards: SHARD_URLS expanded to nothing")
    missing = [u for u in urls if not sources.is_remote(u) and not os.path.isfile(_local(u))]
    if missing:
        raise UserError(f"{len(missing)} of {len(urls)} local shards do not exist, the first {missing[0]!r}")
    planned, seen = [], {}
    for url in urls:
        path = index_path(url, root)
        if path in seen:
            raise UserError(f"shard {path} is given twice ({seen[path]!r} and {url!r})")
        seen[path] = url
        planned.append((url, path))
    return planned


def existing_index(index_file: Path, text: dict, rule: str, split: str, paths: list[str]) -> dict | None:
    """The index already in DIR, when another split is being added; refused when it disagrees with this run."""
    if not index_file.exists():
        return None
    try:
        index = json.loads(index_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise UserError(f"--out {index_file}: exists but cannot be read as JSON ({err})") from None
    origin = index.get("origin") if isinstance(index, dict) else None
    if not isinstance(origin, dict) or index.get("format") != FORMAT or origin.get("kind") != ORIGIN_KIND:
        raise UserError(f"--out {index_file}: exists and is not an index written by `fastasr index` (a `fastasr "
                        f"shard` directory cannot take foreign shards); choose another folder")
    if index.get("text") != text:
        raise UserError(f"--out {index_file}: its splits were indexed with other text settings "
                        f"{_text_flags(index.get('text'))}; give the same --keep-digits/--keep-latin/--no-fold-yo")
    if origin.get("transcript") != rule:
        raise UserError(f"--out {index_file}: its splits take transcripts from {origin.get('transcript')!r}, not "
                        f"{rule!r}; give --transcript {origin.get('transcript')}")
    mine = set(paths)
    for other, entry in index.get("splits", {}).items():
        if other == split:
            continue
        both = [s["path"] for s in entry["shards"] + entry.get("unreadable", []) if s["path"] in mine]
        if both:
            raise UserError(f"shard {both[0]} is already in split {other!r} of {index_file} (a shard belongs to "
                            f"one split)")
    return index


def index_shards(patterns: list[str] | str, out: str | os.PathLike, *, split: str = "train", transcript: str = "txt",
                 text: TextConfig = TextConfig(), workers: int | None = None, progress: bool = True) -> IndexResult:
    """Read every shard once and write DIR/index.json, DIR/durations-SPLIT.json and DIR/rejected.tsv."""
    start = time.perf_counter()
    if split not in SPLITS:  # the names the rest of fastasr reads (train, eval and stats know no others)
        raise UserError(f"--split wants one of {', '.join(SPLITS)}, got {split!r}")
    rule = parse_transcript_rule(transcript)
    index_file = resolve_out(out)
    root = index_file.parent
    planned = plan_shards([patterns] if isinstance(patterns, str) else list(patterns), root)
    old = existing_index(index_file, text.to_dict(), rule, split, [p for _, p in planned])
    root.mkdir(parents=True, exist_ok=True)  # only once the request is known to be sound
    scans = _scan_all(planned, rule, text, workers, progress)
    for s in scans:
        if s.error is not None:
            log.warning("%s: cannot be read, left out of the index: %s", sources.describe(s.url), s.error)
        if s.json_mismatch:
            log.warning("%s: %d json durations differ from the audio header by more than 10 ms (the header is "
                        "used), e.g. %s", sources.describe(s.url), s.json_mismatch, s.mismatch_example)
    index = _combine(old, split, split_entry(split, scans), text, rule)
    _write(root, index, split, scans, old)
    return IndexResult(index_file, index, split, scans, time.perf_counter() - start)


def split_entry(split: str, scans: list[ShardScan]) -> dict:
    good = [s for s in scans if s.error is None]
    return {
        "samples": sum(s.samples for s in good),
        "seconds": round(sum(s.seconds for s in good), 3),
        "shards": [{"path": s.path, "samples": s.samples, "groups": len(s.durations), "seconds": round(s.seconds, 3)}
                   for s in good],
        "rejected": dict(sorted(Counter(r[1] for s in good for r in s.rejects).items())),
        "durations": durations_name(split),
        "unreadable": [{"path": s.path, "error": s.error} for s in scans if s.error is not None],
        "warnings": {"json_duration_mismatch": sum(s.json_mismatch for s in good)},
    }


def _combine(old: dict | None, split: str, entry: dict, text: TextConfig, rule: str) -> dict:
    splits = dict(old["splits"]) if old else {}
    splits[split] = entry
    splits = {name: splits[name] for name in SPLITS if name in splits}
    groups = sum(sh["groups"] for v in splits.values() for sh in v["shards"])
    by_reason = sum((Counter(v["rejected"]) for v in splits.values()), Counter())
    index = {
        "format": FORMAT,
        "text": text.to_dict(),
        "origin": {"kind": ORIGIN_KIND, "transcript": rule, "normalized": False},
        "seed": None,
        "split_fractions": None,
        "group_by": None,
        "splits": splits,
        "totals": {
            "input_rows": groups,
            "samples": sum(v["samples"] for v in splits.values()),
            "seconds": round(sum(v["seconds"] for v in splits.values()), 3),
            "rejected": sum(by_reason.values()),
            "unreadable_shards": sum(len(v.get("unreadable", [])) for v in splits.values()),
        },
        "rejected": dict(sorted(by_reason.items())),
        "listing_rows": groups,
    }
    check_accounting(index)
    return index


def _write(root: Path, index: dict, split: str, scans: list[ShardScan], old: dict | None) -> None:
    """Durations, then rejected.tsv, then index.json last: the index only ever names files already complete."""
    write_durations_table(root / durations_name(split), split,
                          {s.path: s.durations for s in scans if s.error is None})
    rows = [(*r, False) for s in scans for r in s.rejects]
    tsv = root / "rejected.tsv"
    if old is not None and tsv.exists():  # keep the other splits' rows; this split's old rows are replaced
        replaced = [sh["path"] for sh in old["splits"].get(split, {}).get("shards", [])] + [s.path for s in scans]
        prefixes = tuple(p + "#" for p in replaced)
        rows += [(*r, False) for r in read_rejected_tsv(tsv) if not r[0].startswith(prefixes)]
    atomic_write(tsv, rejected_tsv(rows))
    atomic_write(root / "index.json", json.dumps(index, ensure_ascii=False, indent=1))


def _scan_all(planned: list[tuple[str, str]], rule: str, text: TextConfig, workers: int | None,
              progress: bool) -> list[ShardScan]:
    """Shards are independent: worker processes read them (parsing tars and headers holds the GIL, so threads would
    not scale); with one worker or one shard, this process does."""
    from tqdm import tqdm

    workers = max(1, min(workers or os.cpu_count() or 1, len(planned)))
    results: list[ShardScan | None] = [None] * len(planned)
    totals = [0, 0.0]

    def done(i: int, scan: ShardScan) -> None:
        results[i] = scan
        totals[0], totals[1] = totals[0] + scan.samples, totals[1] + scan.seconds
        bar.set_postfix_str(f"{totals[0]} utt, {totals[1] / 3600:.2f} h", refresh=False)
        bar.update(1)

    if workers == 1:
        bar = tqdm(total=len(planned), unit="shard", disable=not progress, dynamic_ncols=True)
        with bar:
            for i, (url, path) in enumerate(planned):
                done(i, scan_shard(url, path, rule, text))
        return results
    # fork: workers start at once with everything imported; they are all started by the first submit, before any
    # thread of ours (tqdm's monitor) exists, so nothing is forked mid-lock
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
    try:
        futures = {pool.submit(scan_shard, url, path, rule, text): i for i, (url, path) in enumerate(planned)}
        bar = tqdm(total=len(planned), unit="shard", disable=not progress, dynamic_ncols=True)
        with bar:
            for future in as_completed(futures):
                done(futures[future], future.result())
    except BaseException:  # a UserError from one shard (a scheme nobody can open), Ctrl-C: not the other shards
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown()
    return results


def format_summary(result: IndexResult) -> str:
    entry = result.index["splits"][result.split]
    groups = sum(s["groups"] for s in entry["shards"])
    rejected = sum(entry["rejected"].values())
    lines = [
        f"split {result.split}: {len(result.scans)} shards, {len(entry['shards'])} indexed, "
        f"{len(result.unreadable)} unreadable (left out)",
        f"{groups} samples read = {entry['samples']} usable ({entry['seconds'] / 3600:.2f} h) + {rejected} "
        f"unusable (in rejected.tsv)",
    ]
    lines += [f"  unusable {reason:<20}{n:>8}" for reason, n in entry["rejected"].items()]
    lines += [f"  unreadable shard {u['path']}: {u['error']}" for u in entry["unreadable"]]
    if entry["warnings"]["json_duration_mismatch"]:
        lines.append(f"warning: {entry['warnings']['json_duration_mismatch']} json durations differ from the audio "
                     f"header by > 10 ms (the header was used)")
    others = [f"{name} {v['samples']}" for name, v in result.index["splits"].items() if name != result.split]
    if others:
        lines.append(f"other splits kept: {', '.join(others)}")
    lines.append(f"{result.elapsed:.1f} s, {entry['seconds'] / max(result.elapsed, 1e-9):.0f}x realtime")
    return "\n".join(lines)


def _local(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def _text_flags(text) -> str:
    return json.dumps({k: v for k, v in text.items() if k != "alphabet"}) if isinstance(text, dict) else repr(text)
