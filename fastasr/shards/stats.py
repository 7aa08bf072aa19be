"""Statistics of a shard directory: counts, hours, duration and speaking-rate percentiles, rejects, plots.

Everything comes from index.json, the durations tables and the shards' `.json`/`.txt` members; audio members are
skipped over unread (no decode), so stats over a whole corpus cost about as much as reading the tar headers;
with `--durations-only` (collect_durations) they come from index.json and the durations tables alone, no shard
opened: seconds for Open STT's 16.5 M samples, without the transcripts' numbers (words, speaking rates, groups). The
shards may be remote (fastasr.sources) or another tool's (indexed by `fastasr index`).
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastasr import sources
from fastasr.corpus.checks import chars_per_second
from fastasr.corpus.split import SPLITS
from fastasr.errors import UserError
from fastasr.shards.index import Reach, open_index, read_durations_table
from fastasr.shards.scan import raw_transcript, refuse_member, split_name
from fastasr.text.normalization import TextConfig, normalize

PERCENTILES = (0, 1, 5, 25, 50, 75, 95, 99, 100)

log = logging.getLogger("fastasr.stats")


@dataclass
class SplitStats:
    durations: list[float] = field(default_factory=list)
    words: list[int] = field(default_factory=list)
    cps: list[float] = field(default_factory=list)
    groups: set[str] = field(default_factory=set)  # `--group-by` groups of the samples (their KEY.json "group")
    skipped: Counter = field(default_factory=Counter)  # samples left out while reading the shards, by reason


def load_index(path: str | Path, reach: Reach | None = None) -> tuple[Path | str, dict]:
    return open_index(path, "PATH", allow_file=True, reach=reach)


def iter_shard_records(url: str, durations: list | None = None, origin: dict | None = None,
                       text: TextConfig | None = None, skipped: Counter | None = None):
    """(key, duration, text, group) per usable sample of one shard, reading only the small members (through
    fastasr.sources: local, pipe:, URLs). Durations come from the split's durations table when there is one
    (`durations`: this shard's list, tar order), else from KEY.json; shards other tools wrote (`origin`, from
    `fastasr index`) give their transcript by its rule, normalised with `text`; their unusable samples (null in
    the table) are left out, as the loader leaves them out. So is a sample with a member whose tar header the
    loader refuses (scan.refuse_member: sparse, or over its size limit), logged and counted by reason in
    `skipped`."""
    rule = (origin or {}).get("transcript", "txt")
    with sources.open_input(url) as f, tarfile.open(fileobj=f, mode="r:" if f.seekable() else "r|") as tar:
        ordinal, key, members, refused = -1, None, {}, None
        for member in tar:
            if not member.isfile():
                continue
            k, ext = split_name(member.name)
            if k != key:
                if key is not None:
                    yield from _record(key, ordinal, members, durations, origin, rule, text, refused, skipped)
                ordinal, key, members, refused = ordinal + 1, k, {}, None
            refused = refused or refuse_member(member, ext)
            if ext in ("json", "txt") and not refused:
                members[ext] = tar.extractfile(member).read()  # audio bytes are skipped, by seeking where possible
        if key is not None:
            yield from _record(key, ordinal, members, durations, origin, rule, text, refused, skipped)


def _record(key, ordinal, members, durations, origin, rule, text, refused=None, skipped=None):
    if refused is not None:
        log.warning("skipped %s (%s): %s", key, *refused)
        if skipped is not None:
            skipped[refused[0]] += 1
        return
    duration = None
    if durations is not None:
        duration = durations[ordinal] if ordinal < len(durations) else None
        if duration is None:
            return
    info = json.loads(members["json"]) if "json" in members else {}
    if duration is None:
        duration = info["duration"]
    if origin is None:
        transcript = members["txt"].decode("utf-8")
    else:
        transcript = normalize(raw_transcript(members, rule), text)
    yield key, float(duration), transcript, info.get("group") if isinstance(info, dict) else None


def collect(root, index: dict, reach: Reach | None = None) -> dict[str, SplitStats]:
    reach, out = reach or Reach(), {}
    origin = index.get("origin")
    text = TextConfig.from_dict(index["text"]) if origin is not None else None
    for split in [s for s in SPLITS if s in index["splits"]]:  # an index of foreign shards may lack a split
        st = SplitStats()
        entry = index["splits"][split]
        table = None
        if entry.get("durations"):
            table = read_durations_table(reach.resolve(root, entry["durations"], f"splits.{split}.durations"))
        for shard in entry.get("shards", []):
            values = table.get(shard["path"]) if table is not None else None
            url = reach.resolve(root, shard["path"], f"splits.{split}.shards")
            for key, duration, transcript, group in iter_shard_records(url, values, origin, text, st.skipped):
                st.durations.append(duration)
                st.words.append(len(transcript.split()))
                st.cps.append(chars_per_second(transcript, duration))
                st.groups.add(group if group is not None else "\0" + key)
        out[split] = st
    return out


def collect_durations(root, index: dict, reach: Reach | None = None) -> dict[str, SplitStats]:
    """Every split's durations from its durations table alone, no shard opened: seconds at Open STT scale (a
    mapped binary table is sliced, not turned into Python floats). Null entries (unusable samples) are left out,
    as the loader leaves them out. A split without a table (an index written before them) is a UserError."""
    from fastasr.shards.durations_bin import read_binary

    reach, out = reach or Reach(), {}
    for split in [s for s in SPLITS if s in index["splits"]]:
        entry = index["splits"][split]
        if not entry.get("durations"):
            raise UserError(f"split {split!r} of the index has no durations table (written before fastasr kept "
                            "them): run `fastasr stats` without --durations-only")
        url = reach.resolve(root, entry["durations"], f"splits.{split}.durations")
        mapped = None if sources.is_remote(url) else read_binary(Path(sources._local(url)))
        paths = [shard["path"] for shard in entry.get("shards", [])]
        if mapped is not None:
            parts = [mapped.values[start:start + n] for start, n in (mapped.spans[p] for p in paths
                                                                       if p in mapped.spans)]
            values = np.concatenate(parts) if parts else np.zeros(0)
            values = values[~np.isnan(values)]
            if not ((values >= 0) & np.isfinite(values)).all():
                raise UserError(f"{sources.describe(url)}: durations that are not seconds >= 0")
        else:
            table = read_durations_table(url)
            values = np.array([v for p in paths for v in table.get(p, []) if v is not None], dtype=np.float64)
        out[split] = SplitStats(durations=values)
    return out


def summarize(index: dict, per_split: dict[str, SplitStats], transcripts: bool = True) -> dict:
    """A JSON-able summary: per split and overall counts, hours and percentiles; rejects by reason; with
    `--group-by`, the rule and the groups per split (of the samples in the shards; a sample without a group is one).
    transcripts=False (collect_durations): durations only, no words, speaking rates or groups."""
    grouped = index.get("group_by") is not None and transcripts

    def block(st: SplitStats) -> dict:
        d = np.asarray(st.durations, dtype=np.float64)
        c = np.asarray(st.cps, dtype=np.float64)
        res = {"samples": int(d.size), "hours": float(d.sum() / 3600)}
        if transcripts:
            res["words"] = int(sum(st.words))
        if grouped:
            res["groups"] = len(st.groups)
        if d.size:
            res["duration_percentiles"] = _percentiles(d, 3)
            if transcripts:
                res["cps_percentiles"] = _percentiles(c, 2)
        if st.skipped:  # samples the loader would refuse from their tar headers (sparse or oversized members)
            res["skipped_in_shards"] = dict(sorted(st.skipped.items()))
        return res

    everything = SplitStats(durations=np.concatenate([np.asarray(st.durations, dtype=np.float64)
                                                      for st in per_split.values()] or [np.zeros(0)]))
    for st in per_split.values():
        everything.words += st.words
        everything.skipped += st.skipped
        everything.cps += st.cps
        everything.groups |= st.groups
    return {
        "splits": {split: {**block(st), "rejected": index["splits"].get(split, {}).get("rejected", {})}
                   for split, st in per_split.items()},
        "all": block(everything),
        "input_rows": index["totals"]["input_rows"],
        "rejected": index["rejected"],
        "seed_rule": index.get("seed_rule"),
        "group_by": index.get("group_by"),
        "transcripts": transcripts,
    }


def _percentiles(x: np.ndarray, digits: int) -> dict[str, float]:
    return {f"p{q}": round(float(v), digits) for q, v in zip(PERCENTILES, np.percentile(x, PERCENTILES))}


def format_table(summary: dict) -> str:
    lines = [f"{'split':<7}{'samples':>9}{'hours':>9}{'dur p5':>8}{'p50':>7}{'p95':>7}{'max':>7}"
             f"{'cps p5':>8}{'p50':>7}{'p95':>7}"]
    for name, b in [*summary["splits"].items(), ("all", summary["all"])]:
        row = f"{name:<7}{b['samples']:>9}{b['hours']:>9.3f}"
        if b["samples"]:
            dp = b["duration_percentiles"]
            row += f"{dp['p5']:>8.2f}{dp['p50']:>7.2f}{dp['p95']:>7.2f}{dp['p100']:>7.2f}"
            if "cps_percentiles" in b:
                cp = b["cps_percentiles"]
                row += f"{cp['p5']:>8.1f}{cp['p50']:>7.1f}{cp['p95']:>7.1f}"
        lines.append(row)
    if not summary.get("transcripts", True):
        lines.append("durations only (from the durations tables; no transcript read): no speaking rates or groups")
    if summary.get("group_by") is not None and "groups" in summary["all"]:
        per = ", ".join(f"{name} {b['groups']}" for name, b in summary["splits"].items())
        lines.append(f"groups (--group-by {summary['group_by']}) of the samples in the shards: {per}; all "
                     f"{summary['all']['groups']} (index.json counts them as planned, rejected rows included)")
    rejected = summary["rejected"]
    lines.append(f"input rows {summary['input_rows']}, rejected {sum(rejected.values())}")
    lines.append(f"  {'reason':<24}{'all':>8}" + "".join(f"{s:>8}" for s in summary["splits"]))
    for reason, n in rejected.items():
        per = "".join(f"{b['rejected'].get(reason, 0):>8}" for b in summary["splits"].values())
        lines.append(f"  {reason:<24}{n:>8}{per}")
    skipped = summary["all"].get("skipped_in_shards")
    if skipped:
        lines.append("left out while reading the shards: " + ", ".join(f"{r} {n}" for r, n in skipped.items()))
    return "\n".join(lines)


def plot(per_split: dict[str, SplitStats], plots_dir: Path, filters: dict | None = None) -> list[Path]:
    """The seed's scatter (duration vs words) and a duration histogram, one colour per split (the largest split
    drawn first, so the smaller ones show over it), whole-second ticks, and the build's duration and speaking-rate
    bounds (`filters`: index.json's settings.filters) drawn as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    plots_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    order = sorted((s for s in per_split if per_split[s].durations), key=lambda s: -len(per_split[s].durations))
    f = filters or {}
    fig, ax = plt.subplots(figsize=(7, 5))
    for split in order:
        st = per_split[split]
        ax.scatter(st.durations, st.words, s=4, alpha=0.4, label=f"{split} ({len(st.durations)})")
    top = max((max(st.durations) for st in per_split.values() if st.durations), default=1.0)
    _bounds(ax, f, top)
    for key, label in (("min_cps", "min"), ("max_cps", "max")):  # characters per second, ~6 per word with space
        if f.get(key):
            ax.plot([0, top], [0, top * f[key] / 6.5], ":", color="grey", lw=1,
                    label=f"{label} speaking rate ({f[key]:g} chars/s, ~6.5 per word)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("duration, s")
    ax.set_ylabel("words")
    ax.set_title("duration vs words")
    ax.legend(fontsize=8)
    paths.append(plots_dir / "duration_vs_words.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4))
    if order:
        ax.hist([per_split[s].durations for s in order], bins=50, stacked=True, label=order)
    _bounds(ax, f, top)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if order:
        ax.legend(fontsize=8)
    ax.set_xlabel("duration, s")
    ax.set_ylabel("utterances")
    ax.set_title("duration histogram")
    paths.append(plots_dir / "duration_hist.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def _bounds(ax, filters: dict, top: float | None = None) -> None:
    """The duration bounds as dashed lines; the axis stays on the data (a bound beyond it is named in the legend)."""
    for key in ("min_duration", "max_duration"):
        if filters.get(key):
            beyond = top is not None and filters[key] > top
            ax.axvline(filters[key], ls="--", color="grey", lw=1,
                       label=f"{key.replace('_', ' ')} {filters[key]:g} s" + (" (beyond the data)" if beyond else ""))
    if top is not None:
        ax.set_xlim(0, top * 1.05)


def compute_stats(path: str | Path, plots_dir: str | Path | None = None, *, allow_pipe: bool = False,
                  allow_foreign_paths: bool = False, durations_only: bool = False) -> dict:
    """The summary of the shard directory (or URL prefix, or index.json) `path`; allow_pipe, allow_foreign_paths:
    the opt-ins of an index read from a URL (shards.index.Reach). durations_only: from index.json and the
    durations tables alone (collect_durations), no shard read."""
    if durations_only and plots_dir is not None:
        raise UserError("--plots draws words against durations, which needs the transcripts: drop --durations-only")
    reach = Reach(allow_pipe=allow_pipe, allow_foreign_paths=allow_foreign_paths)
    root, index = load_index(path, reach)
    per_split = (collect_durations if durations_only else collect)(root, index, reach)
    summary = summarize(index, per_split, transcripts=not durations_only)
    if plots_dir is not None:
        filters = (index.get("settings") or {}).get("filters")
        summary["plots"] = [str(p) for p in plot(per_split, Path(plots_dir), filters if isinstance(filters, dict)
                                                 else None)]
    return summary
