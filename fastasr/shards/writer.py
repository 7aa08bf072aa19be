"""Corpus → WebDataset tar shards: list, plan, check and write in parallel, account for every row.

The flow (see DESIGN.md): the main process lists the corpus (fastasr.corpus: its readers), rejects duplicate
keys and overlapping segments (corpus.segments), hashes every key — or its `--group-by` group (corpus.grouping) — into a
split, sorts each split's keys and cuts them into shards of `shard_size` input rows. That plan depends only on the
listing and the options, so a rerun, or another machine running `--part I/N`, computes the same one. Workers then
write whole shards: each row is checked (`corpus.checks`), accepted samples go into `KEY.{opus,wav,flac}` / `KEY.txt` /
`KEY.json` members with fixed tar metadata, so the same inputs give byte-identical shards. A shard is written to a
temporary name and renamed, any older sidecar removed first; then its sidecar `OUT/.meta/<split>/shard-NNNNNN.json`
(counts, rejects, and a fingerprint of its rows and options, sizes and mtimes of its input files) is written and
renamed. The sidecar is the commit mark: a rerun skips a shard whose sidecar matches (same rows, options and
unchanged files) and whose tar has the recorded size, and rewrites any other. OUT must be new, empty or a fastasr
build (or `force`); only files the build wrote are deleted there (shards.ownership).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import multiprocessing as mp
import os
import tarfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fastasr.corpus.checks import SEED_RULE, Filters, Reject, Sample, check_row
from fastasr.corpus.grouping import GroupRule, group_of, parse_group_by
from fastasr.corpus.listing import Listing
from fastasr.corpus.plan import plan_rows
from fastasr.corpus.readers import FORMATS, read_source
from fastasr.corpus.rows import Row, outside_keys_relative
from fastasr.corpus.split import ShardPlan, shards_of_part
from fastasr.errors import UserError
from fastasr.shards import ownership
from fastasr.shards.index import build_index, part_paths, write_outputs
from fastasr.shards.ownership import meta_path as _meta_path
from fastasr.text.normalization import DEFAULT_TEXT, TextConfig

log = logging.getLogger("fastasr.shard")


@dataclass(frozen=True)
class ShardOptions:
    text: TextConfig = DEFAULT_TEXT
    filters: Filters = field(default_factory=Filters)
    split_fractions: dict = field(default_factory=lambda: {"train": 0.6, "val": 0.2, "test": 0.2})
    seed: int = 17
    shard_size: int = 1000
    group_by: str | None = None  # corpus.grouping's rule; None: every row hashed on its key

    def settings(self) -> dict:
        """Everything that decides the output; recorded in the index and in each shard's fingerprint."""
        settings = {
            "text": self.text.to_dict(),
            "seed": self.seed,
            "split_fractions": self.split_fractions,
            "seed_rule": SEED_RULE,
            "shard_size": self.shard_size,
            "filters": asdict(self.filters),
        }
        if self.group_by is not None:  # only when set: shards built before the option existed stay complete
            settings["group_by"] = self.group_by
        return settings


@dataclass
class BuildResult:
    index: dict
    index_path: Path | None  # OUT/index.json once the whole dataset is complete (None: other parts still missing)
    written: int  # shards written by this run
    skipped: int  # complete shards found and kept
    elapsed: float


def build_shards(
    source: str | Path,
    out: str | Path,
    options: ShardOptions = ShardOptions(),
    *,
    manifest: str | Path | None = None,
    workers: int | None = None,
    part: tuple[int, int] = (1, 1),
    progress: bool = True,
    force: bool = False,
) -> BuildResult:
    """Build (or resume) the dataset of `source` in `out`. `out` must be new, empty or a fastasr build unless
    `force` (shards.ownership says what is written and deleted there)."""
    start = time.perf_counter()
    out = Path(out)
    workers = workers or len(os.sched_getaffinity(0))
    rule = parse_group_by(options.group_by)  # a bad pattern fails before the listing
    ownership.refuse_foreign(out, force)
    _, rows_iter = read_source(source, manifest)
    rows = outside_keys_relative(Listing(rows_iter))
    log.info("listed %d input rows in %.1f s (%.0f MB)", len(rows), time.perf_counter() - start, rows.nbytes() / 1e6)
    if not rows:
        raise UserError(f"no input rows in SOURCE {source}" + (f" with manifest {manifest}" if manifest else "")
                        + f"; expected {FORMATS}")
    planned = time.perf_counter()
    plan = plan_rows(rows, options.seed, options.split_fractions, options.shard_size, rule, options.text)
    plans, pre_rejects = plan.shards, plan.pre_rejects
    log.info("planned %d shards in %.1f s", len(plans), time.perf_counter() - planned)
    mine = shards_of_part(plans, *part)
    plan_digest = _plan_digest(plans, pre_rejects, rows)
    if part[0] != 1:
        pre_rejects = []  # rows rejected before planning (duplicates, malformed lines) belong to part 1

    ownership.mark(out)
    for name in ("index.json", "rejected.tsv"):  # an index present means a complete dataset; not during a rebuild
        (out / name).unlink(missing_ok=True)
    for stale in part_paths(out, *part) if part != (1, 1) else ():
        stale.unlink(missing_ok=True)  # this part's files from an earlier run must not join the merge
    settings = options.settings()
    tasks = [_task(p, rows, rule, settings, options, out) for p in mine]
    results, written = _run_tasks(tasks, workers, progress, total=sum(len(p.rows) for p in mine))
    if part == (1, 1):
        ownership.remove_stale(out, {p.path for p in plans})

    shards = [{"path": r["path"], "samples": r["samples"], "seconds": r["seconds"],
               "rejected": Counter(x[1] for x in r["rejects"]), "durations": r["durations"]} for r in results]
    rejects = [(r.source, r.reason, r.detail, r.seed_rule) for r in pre_rejects]
    rejects += [tuple(x) for r in results for x in r["rejects"]]
    index = build_index({**settings, "plan": plan_digest}, shards, rejects,
                        sum(len(p.rows) for p in mine) + len(pre_rejects), len(rows),
                        plan.group_counts if rule is not None else None)
    index_path = write_outputs(out, index, rejects, *part, durations={r["path"]: r["durations"] for r in results})
    return BuildResult(index, index_path, written, len(tasks) - written, time.perf_counter() - start)


def _plan_digest(plans: list[ShardPlan], pre_rejects: list[Reject], rows: Listing) -> str:
    """What every part computes alike from the listing: merging refuses parts whose plans differ (another listing)."""
    h = hashlib.sha256()
    label = rows.label if isinstance(rows, Listing) else (lambda i: rows[i].label)
    for p in plans:
        h.update(p.path.encode())
        for i in p.rows.tolist():
            h.update(b"\0" + label(i).encode())
    for r in pre_rejects:
        h.update(b"\1" + r.source.encode())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class _Task:
    plan_path: str
    rows: tuple[Row, ...]
    groups: tuple[str | None, ...]  # each row's --group-by group, written into its KEY.json
    text: TextConfig
    filters: Filters
    out: str
    fingerprint: str


def _task(plan: ShardPlan, rows: Listing, rule: GroupRule | None, settings: dict, options: ShardOptions,
          out: Path) -> _Task:
    mine = tuple(rows[i] for i in plan.rows)
    # the groups the plan hashed, found again for this part's rows only (the plan keeps none: 16.5 M strings)
    mine_groups = tuple(group_of(r, rule, options.text) if rule is not None else None for r in mine)
    h = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for r, g in zip(mine, mine_groups):
        fields = [r.source, r.audio, r.text_path, r.text]
        if r.is_segment:
            fields += [r.offset, r.length, r.channel]
        if "group_by" in settings:
            fields.append(g)
        h.update(json.dumps(fields).encode())
    return _Task(plan.path, mine, mine_groups, options.text, options.filters, str(out), h.hexdigest())


def _complete(task: _Task) -> dict | None:
    """The sidecar of a shard finished by an earlier run with the same rows and options, else None."""
    out = Path(task.out)
    try:
        meta = json.loads(_meta_path(out, task.plan_path).read_text(encoding="utf-8"))
        size = (out / task.plan_path).stat().st_size
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != task.fingerprint or meta.get("tar_size") != size or "durations" not in meta:
        return None  # (a sidecar without durations predates the durations tables: the shard is written again)
    return meta if meta.get("inputs") == _input_signature(task.rows) else None


def _input_signature(rows: tuple[Row, ...]) -> str:
    """Size and mtime of every input file of a shard: an edited transcript or replaced audio file since the last
    run makes the shard be rebuilt (a stat costs microseconds against the milliseconds of a decode)."""
    h = hashlib.sha256()
    for row in rows:
        for path in (row.audio, row.text_path):
            try:
                st = os.stat(path) if path else None
                h.update(f"{st.st_size}:{st.st_mtime_ns};".encode() if st else b"-;")
            except OSError:
                h.update(b"!;")
    return h.hexdigest()


# --- worker side --------------------------------------------------------------------------------------------------

_progress = None  # callable(rows, seconds) in this process


def _init_worker(queue) -> None:
    global _progress
    _progress = queue.put


def write_shard(task: _Task) -> dict:
    """Check every row of one shard and write the accepted ones; returns the sidecar content."""
    meta = _complete(task)
    if meta is not None:
        _report(len(task.rows), meta["seconds"])
        return {**meta, "skipped": True}
    out = Path(task.out)
    tar_path = out / task.plan_path
    tar_path.parent.mkdir(parents=True, exist_ok=True)
    ownership.remove_temporary(tar_path.parent, tar_path.name)  # left by a killed run
    tmp = tar_path.with_name(f".{tar_path.name}.tmp-{os.getpid()}")
    inputs = _input_signature(task.rows)  # before reading: a file changed during the run will be redone next time
    samples, seconds, rejects, durations = 0, 0.0, [], []
    pending_rows, pending_seconds, last = 0, 0.0, time.monotonic()
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tar:
        for row, group in zip(task.rows, task.groups):
            result = check_row(row, task.text, task.filters)
            if isinstance(result, Sample):
                durations.append(_add_sample(tar, result, group))
                samples += 1
                seconds += result.duration
                pending_seconds += result.duration
            else:
                rejects.append([result.source, result.reason, result.detail, result.seed_rule])
            pending_rows += 1
            if time.monotonic() - last > 0.25:
                _report(pending_rows, pending_seconds)
                pending_rows, pending_seconds, last = 0, 0.0, time.monotonic()
    meta_path = _meta_path(out, task.plan_path)
    # The old sidecar goes first: killed between the two renames, a rerun must find no sidecar and redo the shard,
    # never an old sidecar vouching for a tar written with other options.
    meta_path.unlink(missing_ok=True)
    os.replace(tmp, tar_path)
    _report(pending_rows, pending_seconds)
    meta = {
        "path": task.plan_path,
        "samples": samples,
        "seconds": seconds,
        "rejects": rejects,
        "durations": durations,  # as the KEY.json members hold them, in tar order (durations-SPLIT.json)
        "tar_size": tar_path.stat().st_size,
        "fingerprint": task.fingerprint,
        "inputs": inputs,
    }
    meta_path.parent.mkdir(parents=True, exist_ok=True)
    meta_tmp = meta_path.with_name(f".{meta_path.name}.tmp-{os.getpid()}")
    meta_tmp.write_text(json.dumps(meta, ensure_ascii=False), encoding="utf-8")
    os.replace(meta_tmp, meta_path)
    return {**meta, "skipped": False}


def _report(rows: int, seconds: float) -> None:
    if _progress is not None and rows:
        _progress((rows, seconds))


def _add_sample(tar: tarfile.TarFile, s: Sample, group: str | None = None) -> float:
    """Adds the sample's three members; returns the duration its json member holds."""
    info = {"duration": round(s.duration, 6), "sample_rate": s.sample_rate, "channels": s.channels,
            "source": s.source, "raw_text": s.raw_text}
    if s.offset is not None:
        info["offset"] = s.offset
    if group is not None:
        info["group"] = group
    for name, data in (
        (f"{s.key}.{s.ext}", s.audio),
        (f"{s.key}.txt", s.text.encode("utf-8")),
        (f"{s.key}.json", json.dumps(info, ensure_ascii=False).encode("utf-8")),
    ):
        member = tarfile.TarInfo(name)
        member.size, member.mtime, member.mode = len(data), 0, 0o644  # fixed metadata: reproducible bytes
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        tar.addfile(member, io.BytesIO(data))
    return info["duration"]


# --- main side ----------------------------------------------------------------------------------------------------


def _run_tasks(tasks: list[_Task], workers: int, progress: bool, total: int) -> tuple[list[dict], int]:
    from tqdm import tqdm

    global _progress
    hours = [0.0]
    bar = None

    def update(item) -> None:
        rows, seconds = item
        hours[0] += seconds / 3600
        bar.update(rows)
        bar.set_postfix_str(f"{hours[0]:.2f} h", refresh=False)

    def make_bar():
        return tqdm(total=total, unit="utt", disable=not progress, dynamic_ncols=True, smoothing=0.05)

    if workers <= 1 or len(tasks) <= 1:
        bar = make_bar()
        _progress = update
        try:
            results = [write_shard(t) for t in tasks]
        finally:
            _progress = None
            bar.close()
    else:
        # fork: workers start in milliseconds with everything imported; the pool exists before any thread (tqdm's
        # monitor, the drain thread) is started, so nothing is forked mid-lock.
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        queue = ctx.SimpleQueue()
        with ctx.Pool(min(workers, len(tasks)), initializer=_init_worker, initargs=(queue,)) as pool:
            bar = make_bar()
            drain = threading.Thread(target=_drain, args=(queue, update), daemon=True)
            drain.start()
            try:
                results = list(pool.imap_unordered(write_shard, tasks))
            finally:
                queue.put(None)
                drain.join()
                bar.close()
    results.sort(key=lambda r: r["path"])
    return results, sum(1 for r in results if not r["skipped"])


def _drain(queue, update) -> None:
    while (item := queue.get()) is not None:
        update(item)


def format_summary(result: BuildResult) -> str:
    index = result.index
    t = index["totals"]
    lines = [f"{'split':<8}{'samples':>10}{'hours':>10}{'shards':>8}"]
    for split, v in index["splits"].items():
        lines.append(f"{split:<8}{v['samples']:>10}{v['seconds'] / 3600:>10.2f}{len(v['shards']):>8}")
    lines.append(f"{'total':<8}{t['samples']:>10}{t['seconds'] / 3600:>10.2f}")
    if index.get("group_by") is not None:
        per = ", ".join(f"{split} {v['groups']}" for split, v in index["splits"].items())
        lines.append(f"groups (--group-by {index['group_by']}) as planned, before the rows rejected while "
                     f"sharding: {per}")
    lines.append(f"input rows {t['input_rows']} = {t['samples']} in shards + {t['rejected']} rejected")
    for reason, n in index["rejected"].items():
        lines.append(f"  rejected {reason:<22}{n:>8}")
    sr = index["seed_rule"]
    lines.append(
        f"the original notebook's outlier rule ({sr['rule']}) would catch {sr['rejects_it_would_catch']} of the rejects "
        f"({sr['speaking_rate_rejects_it_would_catch']} of {sr['speaking_rate_rejects']} speaking-rate rejects)"
    )
    rate = t["input_rows"] / result.elapsed if result.elapsed else 0.0
    lines.append(
        f"{result.written} shards written, {result.skipped} already complete; {result.elapsed:.1f} s, "
        f"{rate:.0f} rows/s, {t['seconds'] / max(result.elapsed, 1e-9):.0f}x realtime"
    )
    return "\n".join(lines)
