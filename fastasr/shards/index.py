"""OUT/index.json and OUT/rejected.tsv: opening an index (its fields checked, the paths it names kept within
`Reach`), building them from shard results, and combining `--part` builds.

With `--part I/N`, part I writes its own `OUT/parts/index-I-of-N.json` and `OUT/parts/rejected-I-of-N.tsv`. The part
that finds all N part files present (whichever finishes last) combines them into `OUT/index.json` and
`OUT/rejected.tsv`; `fastasr shard --merge OUT` does the same by hand. Combining is a pure function of the part files,
so two parts finishing at the same moment write the same bytes (each through a temporary file and a rename).
"""

from __future__ import annotations

import json
import os
import posixpath
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from fastasr import sources
from fastasr.corpus.split import SPLITS
from fastasr.errors import UserError
from fastasr.shards.schema import check_durations, check_index

FORMAT = "fastasr-shards/1"
PARTS_DIR = "parts"
# index.json and the durations tables are read whole and parsed: bounded first. Open STT's 16.5 M utterances make a
# 98 MB durations table; a larger file is refused before it is read past this size.
MAX_METADATA_BYTES = 512 << 20


def open_index(path: str | os.PathLike, option: str = "--data", allow_file: bool = False,
               reach: Reach | None = None) -> tuple[Path | str, dict]:
    """(shard directory or URL prefix, its index.json) for a path or URL a user gave as `option`; UserError naming it
    when it is not one (`allow_file`: the index.json itself will do), when a field is malformed (schema.py) or when
    a path it names is out of its `reach` (default: no opt-ins)."""
    if sources.is_remote(str(path)):
        root, index, where = _open_remote_index(str(path), option)
    else:
        root, index, where = _open_local_index(Path(path), option, allow_file)
    check_index(index, where)
    check_paths(root, index, reach or Reach(), where)
    return root, index


def _open_local_index(path: Path, option: str, allow_file: bool) -> tuple[Path, dict, str]:
    index_path = path / "index.json" if path.is_dir() or not allow_file else path
    if not index_path.is_file():
        what = f"has no {index_path.name}" if path.is_dir() else "does not exist"
        if path.is_file() and not allow_file:
            what = "is a file"
        if index_path.exists():
            what = f"holds {index_path.name}, but not as a regular file"
        raise UserError(f"{option} {path} {what} (it should be a shard directory made by `fastasr shard`, with "
                        f"index.json, or a URL prefix holding one)")
    where = f"{option} {path}: {index_path}"
    try:
        index = json.loads(sources.read_bytes(str(index_path), MAX_METADATA_BYTES))
    except (ValueError, OSError) as err:
        raise UserError(f"{where} cannot be read as JSON ({err})") from None
    _check_format(index, where)
    return index_path.parent, index, where


def _open_remote_index(url: str, option: str) -> tuple[str, dict, str]:
    if sources.is_pipe(url):
        raise UserError(f"{option} {url}: a pipe: source is a shard, not a shard directory; give the directory or URL "
                        "prefix holding index.json")
    root = url[: -len("/index.json")] if url.endswith("/index.json") else url.rstrip("/")
    index_url = sources.join(root, "index.json")
    try:
        data = sources.read_bytes(index_url, MAX_METADATA_BYTES)
    except FileNotFoundError:
        raise UserError(f"{option} {url}: {index_url} does not exist (it should hold the index.json of a shard "
                        "directory)") from None
    except OSError as err:
        raise UserError(f"{option} {url}: {index_url} cannot be read ({err})") from None
    try:
        index = json.loads(data)
    except ValueError as err:
        raise UserError(f"{option} {url}: {index_url} cannot be read as JSON ({err})") from None
    where = f"{option} {url}: {index_url}"
    _check_format(index, where)
    return root, index, where


def _check_format(index, where: str) -> None:
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        got = index.get("format") if isinstance(index, dict) else None
        raise UserError(f"{where} is not a fastasr shard index (format {got!r}, expected {FORMAT!r})")


@dataclass(frozen=True)
class Reach:
    """Where the paths named inside an index (its shards, its durations tables) may lead: the one rule every reader
    of an index applies, through `resolve`.

    An index read from a local directory is the user's own file: its paths may be anything a source may be
    (relative or absolute paths, file://, URLs, `pipe:CMD`), as if typed on the command line. An index read from a
    URL is data from elsewhere: each path must resolve under that index's own URL prefix. A `pipe:` command there
    runs only with `allow_pipe` (--allow-pipe); anything else — an absolute local path, file://, another host,
    bucket or scheme, `..` out of the prefix, an fsspec `::` chain — is followed only with `allow_foreign_paths`
    (--allow-foreign-paths).
    """

    allow_pipe: bool = False
    allow_foreign_paths: bool = False

    def resolve(self, root: str, path: str, where: str) -> str:
        """The source `path` names, for the index at `root`; `where` (the index file and the field) starts the
        UserError that refuses it."""
        root, path = str(root), str(path)
        url = sources.join(root, path)
        if not sources.is_remote(root):
            return url
        if sources.is_pipe(path):
            if not self.allow_pipe:
                raise UserError(f"{where}: {sources.shown(path)} is a pipe: command, and an index read from a URL "
                                "does not run commands (to run it: --allow-pipe, or allow_pipe=True)")
            return url
        if not self.allow_foreign_paths and not _under(root, url):
            raise UserError(f"{where}: {sources.shown(path)} is not under {root.rstrip('/')}/, and an index read "
                            "from a URL names its files under its own prefix (to follow it: --allow-foreign-paths, "
                            "or allow_foreign_paths=True)")
        return url


def _under(root: str, url: str) -> bool:
    """`url` lies under the URL prefix `root`: same scheme and host, no `..` out of it, no fsspec chain."""
    prefix = root.rstrip("/") + "/"
    if not url.startswith(prefix) or "::" in url:
        return False
    rest = unquote(url[len(prefix):].split("?", 1)[0].split("#", 1)[0]).replace("\\", "/")
    norm = posixpath.normpath(rest) if rest else ""
    return norm not in ("", ".", "..") and not norm.startswith(("../", "/"))


def check_paths(root: str | Path, index: dict, reach: Reach, where: str) -> None:
    """Every path the index names (each split's shards and durations table) within `reach`; UserError naming the
    first that is not."""
    for name, entry in index["splits"].items():
        for i, shard in enumerate(entry["shards"]):
            reach.resolve(root, shard["path"], f"{where}: splits.{name}.shards[{i}].path")
        if entry.get("durations"):
            reach.resolve(root, entry["durations"], f"{where}: splits.{name}.durations")


def atomic_write(path: Path, data: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(data, encoding="utf-8")
    os.replace(tmp, path)


def build_index(
    settings: dict,
    shards: list[dict],
    rejects: list[tuple[str, str, str, bool]],
    input_rows: int,
    listing_rows: int,
    group_counts: dict[str, int] | None = None,
) -> dict:
    """The index of one build (or one part). `shards`: [{"path", "samples", "seconds", "rejected": Counter}],
    `rejects`: (source, reason, detail, seed_rule) rows (a split's "rejected" counts the rows its shards rejected;
    rows rejected before the split was known, duplicates, overlapping segments and malformed lines, are only in the
    totals). `settings` holds text, seed, split_fractions and the rest of the options. With `--group-by`,
    `group_counts` is the number of groups planned into each split (every part of a build plans them alike)."""
    splits = {}
    for split in SPLITS:
        mine = sorted((s for s in shards if s["path"].startswith(split + "/")), key=lambda s: s["path"])
        splits[split] = {
            "samples": sum(s["samples"] for s in mine),
            "seconds": round(sum(s["seconds"] for s in mine), 3),
            "shards": [{"path": s["path"], "samples": s["samples"], "seconds": round(s["seconds"], 3)} for s in mine],
            "rejected": dict(sorted(sum((Counter(s.get("rejected", {})) for s in mine), Counter()).items())),
            "durations": durations_name(split),
        }
        if group_counts is not None:
            splits[split]["groups"] = group_counts[split]
    samples = sum(v["samples"] for v in splits.values())
    by_reason = Counter(r[1] for r in rejects)
    index = {
        "format": FORMAT,
        "text": settings["text"],
        "seed": settings["seed"],
        "split_fractions": settings["split_fractions"],
        "group_by": settings.get("group_by"),
        "splits": splits,
        "totals": {
            "input_rows": input_rows,
            "samples": samples,
            "seconds": round(sum(v["seconds"] for v in splits.values()), 3),
            "rejected": len(rejects),
        },
        "rejected": dict(sorted(by_reason.items())),
        "seed_rule": {
            "rule": settings["seed_rule"],
            "speaking_rate_rejects": by_reason.get("speaking_rate", 0),
            "rejects_it_would_catch": sum(1 for r in rejects if r[3]),
            "speaking_rate_rejects_it_would_catch": sum(1 for r in rejects if r[3] and r[1] == "speaking_rate"),
        },
        "settings": {k: v for k, v in settings.items()
                     if k not in ("text", "seed", "split_fractions", "seed_rule", "group_by")},
        "listing_rows": listing_rows,
    }
    check_accounting(index)
    return index


DURATIONS_FORMAT = "fastasr-durations/1"


def durations_name(split: str) -> str:
    return f"durations-{split}.json"


def write_durations_table(path: Path, split: str, shards: dict[str, list]) -> None:
    """`{"format", "split", "shards": {path: [seconds or null per KEY group, tar order]}}` (fastasr/data/durations.py
    reads it), atomically: a reader never sees half a table; then its binary twin (durations_bin), which local
    readers map instead of parsing the JSON."""
    from fastasr.shards.durations_bin import write_binary

    atomic_write(path, json.dumps({"format": DURATIONS_FORMAT, "split": split, "shards": shards},
                                  separators=(",", ":")))
    write_binary(path, split, shards)


def read_durations_table(url: str) -> dict[str, list]:
    """The {shard path: durations} of the table at `url`, its fields checked: a UserError naming the file (and the
    field) when it cannot be read or is malformed."""
    try:
        data = json.loads(sources.read_bytes(url, MAX_METADATA_BYTES))
    except OSError as err:
        raise UserError(f"{sources.describe(url)}: the durations table cannot be read ({err})") from None
    except ValueError as err:
        raise UserError(f"{sources.describe(url)}: the durations table cannot be read as JSON ({err})") from None
    if not isinstance(data, dict) or data.get("format") != DURATIONS_FORMAT:
        got = data.get("format") if isinstance(data, dict) else None
        raise UserError(f"{sources.describe(url)}: format {got!r}, expected {DURATIONS_FORMAT!r}")
    check_durations(data, sources.describe(url))
    return data["shards"]


def write_durations(out: Path, index: dict, durations: dict[str, list]) -> None:
    """The durations tables the index names, written before the index itself."""
    for split, entry in index["splits"].items():
        write_durations_table(out / entry["durations"], split,
                              {s["path"]: durations[s["path"]] for s in entry["shards"]})


def _meta_durations(out: Path, shard_path: str) -> list:
    """A shard's durations from its sidecar OUT/.meta/<split>/shard-NNNNNN.json (writer.py writes them)."""
    meta = json.loads((out / ".meta" / shard_path.replace(".tar", ".json")).read_text(encoding="utf-8"))
    return meta["durations"]


def check_accounting(index: dict) -> None:
    t = index["totals"]
    if t["input_rows"] != t["samples"] + t["rejected"]:
        raise RuntimeError(
            f"accounting error: {t['input_rows']} input rows but {t['samples']} samples + {t['rejected']} rejected"
        )


def rejected_tsv(rejects: list[tuple[str, str, str, bool]]) -> str:
    lines = ["source\treason\tdetail"]
    for source, reason, detail, _ in sorted(rejects):
        lines.append(f"{_clean(source)}\t{reason}\t{_clean(detail)}")
    return "\n".join(lines) + "\n"


def read_rejected_tsv(path: Path) -> list[tuple[str, str, str]]:
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return [tuple((line.split("\t") + ["", ""])[:3]) for line in rows if line]


def _clean(s: str) -> str:
    return " ".join(s.replace("\t", " ").splitlines())


def part_paths(out: Path, part: int, parts: int) -> tuple[Path, Path]:
    d = out / PARTS_DIR
    return d / f"index-{part}-of-{parts}.json", d / f"rejected-{part}-of-{parts}.tsv"


def write_outputs(out: Path, index: dict, rejects: list, part: int = 1, parts: int = 1,
                  durations: dict[str, list] | None = None) -> Path | None:
    """Write the index and rejected.tsv of a build (and its durations tables: shard path → durations); for a part,
    its part files, then combine if all are there. Returns the path of the combined index.json when it was written."""
    if parts == 1:
        write_durations(out, index, durations if durations is not None else
                        {s["path"]: _meta_durations(out, s["path"]) for e in index["splits"].values()
                         for s in e["shards"]})
        atomic_write(out / "rejected.tsv", rejected_tsv(rejects))
        atomic_write(out / "index.json", json.dumps(index, ensure_ascii=False, indent=1))
        return out / "index.json"
    (out / PARTS_DIR).mkdir(parents=True, exist_ok=True)
    index_path, tsv_path = part_paths(out, part, parts)
    atomic_write(tsv_path, rejected_tsv(rejects))
    atomic_write(index_path, json.dumps({**index, "part": [part, parts]}, ensure_ascii=False, indent=1))
    if all(part_paths(out, i, parts)[0].exists() for i in range(1, parts + 1)):
        return merge_parts(out, parts)
    return None


def find_parts(out: Path) -> int:
    names = sorted((out / PARTS_DIR).glob("index-*-of-*.json"))
    counts = {int(p.stem.rsplit("-", 1)[1]) for p in names}
    if not counts:
        raise UserError(f"--merge {out}: {out / PARTS_DIR} holds no part indexes (written by `fastasr shard --part "
                        f"I/N`)")
    if len(counts) != 1:
        raise UserError(f"--merge {out}: {out / PARTS_DIR} holds parts of builds with different N: {sorted(counts)}")
    return counts.pop()


def merge_parts(out: Path, parts: int | None = None) -> Path:
    """Combine OUT/parts/index-*-of-N.json and rejected-*-of-N.tsv into OUT/index.json and OUT/rejected.tsv."""
    out = Path(out)
    parts = parts or find_parts(out)
    indexes, rejects = [], []
    for i in range(1, parts + 1):
        index_path, tsv_path = part_paths(out, i, parts)
        if not index_path.exists():
            raise FileNotFoundError(f"part {i}/{parts} has not finished: {index_path} is missing")
        indexes.append(json.loads(index_path.read_text(encoding="utf-8")))
        rejects += read_rejected_tsv(tsv_path)
    first = indexes[0]
    for idx in indexes[1:]:
        for field in ("text", "seed", "split_fractions", "group_by", "settings", "listing_rows"):
            if idx.get(field) != first.get(field):
                raise ValueError(f"parts were built with different {field}: {first[field]!r} vs {idx[field]!r}")
    merged = {k: v for k, v in first.items() if k != "part"}
    merged["splits"] = {}
    for split in SPLITS:
        shards = sorted((s for idx in indexes for s in idx["splits"][split]["shards"]), key=lambda s: s["path"])
        merged["splits"][split] = {
            "samples": sum(s["samples"] for s in shards),
            "seconds": round(sum(s["seconds"] for s in shards), 3),
            "shards": shards,
            "rejected": dict(sorted(sum((Counter(idx["splits"][split]["rejected"]) for idx in indexes),
                                        Counter()).items())),
            "durations": durations_name(split),
        }
        if "groups" in first["splits"][split]:  # planned globally: the same in every part
            merged["splits"][split]["groups"] = first["splits"][split]["groups"]
    merged["totals"] = {k: sum(idx["totals"][k] for idx in indexes) for k in first["totals"]}
    merged["totals"]["seconds"] = round(merged["totals"]["seconds"], 3)
    merged["rejected"] = dict(sorted(sum((Counter(idx["rejected"]) for idx in indexes), Counter()).items()))
    merged["seed_rule"] = {
        k: (v if isinstance(v, str) else sum(idx["seed_rule"][k] for idx in indexes))
        for k, v in first["seed_rule"].items()
    }
    check_accounting(merged)
    if merged["totals"]["input_rows"] != merged["listing_rows"]:
        raise RuntimeError(
            f"parts cover {merged['totals']['input_rows']} rows but the listing has {merged['listing_rows']}"
        )
    write_durations(out, merged, {s["path"]: _meta_durations(out, s["path"]) for e in merged["splits"].values()
                                  for s in e["shards"]})
    atomic_write(out / "rejected.tsv", rejected_tsv([(*r, False) for r in rejects]))
    atomic_write(out / "index.json", json.dumps(merged, ensure_ascii=False, indent=1))
    return out / "index.json"
