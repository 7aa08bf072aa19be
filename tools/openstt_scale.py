"""Open STT-scale metadata without audio, and what each metadata path costs one process.

    python tools/openstt_scale.py DIR --samples 16500000 [--per-shard 1000]   # write DIR/durations-train.json + twin
    python tools/openstt_scale.py DIR --measure                               # load both ways, one process each
    python tools/openstt_scale.py DIR --manifest 1000000                      # write DIR/openstt-1000000.csv
    python tools/openstt_scale.py DIR --measure-shard 1000000 [--part 1/1000] [--group-by dir]
                                                                 # one job-array task's listing + plan
    python tools/openstt_scale.py DIR --index 1000000 --measure-paths         # the loader's and indexer's paths

--measure runs each way in a fresh child process and prints JSON: seconds to load the table, the private memory
(RssAnon) it added, and the same after reading one reader's share of it (every 48th shard: world 8 × 6 workers),
with the mapped file's pages (RssFile: page cache, one copy per node whatever the number of processes). The
values are uniform in 0.5–20 s with a fixed seed; the numbers are what matter, not their meaning.

--index ROWS writes DIR/index-ROWS/: an index.json of ROWS samples in shards of --per-shard (60/20/20 train, val,
test; no tar behind them) with its durations tables. --measure-paths then runs each path on it in a fresh child
process and prints one JSON line per path: wall seconds and peak RSS above the child's imports —
  table        the train table loaded (mapped twin) as every reader does
  epoch_plan   one reader's epoch planned from the table (rank 0 of world 8, worker 0 of 6): its batches
  rank_plan    the same for all 6 readers of rank 0 (its whole epoch)
  resume       rank 0 resumed 90 % into its epoch (plan_resume replays its 6 readers' merge from the table)
  reshard      an 8-rank run 90 % into its epoch continued by rank 0 of 4 (continue_elsewhere replays all 48
               readers and collects what was delivered; --skip-reshard leaves it out at large sizes)
  stats        `fastasr stats --durations-only`: counts, hours, percentiles of every split from the tables
  index_merge  `fastasr index`'s merge: the per-shard scans of the train split into index.json, its durations
               table and rejected.tsv
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[3])
from fastasr.data.durations import durations_table
def rss_mb(kind="RssAnon:"):  # private memory; RssFile: pages of mapped files, one copy per node in the page cache
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(kind):
                return int(line.split()[1]) / 1024
path, mode = sys.argv[1], sys.argv[2]
if mode == "json":  # as a reader without the twin does it
    import fastasr.data.durations as d
    d.read_binary = lambda p: None
base, base_file = rss_mb(), rss_mb("RssFile:")
t = time.perf_counter()
table = durations_table(path)
load_s, load_mb = time.perf_counter() - t, rss_mb() - base
names = list(table.shards)
mine = names[::48]  # one reader's shards of 8 ranks x 6 workers
t = time.perf_counter()
n = sum(len(table.shards.get(s, [])) for s in mine)
read_s = time.perf_counter() - t
print(json.dumps({"mode": mode, "load_s": round(load_s, 3), "load_private_mb": round(load_mb, 1),
                  "share_samples": n, "share_read_s": round(read_s, 3),
                  "private_after_share_mb": round(rss_mb() - base, 1),
                  "shared_file_pages_mb": round(rss_mb("RssFile:") - base_file, 1)}))
"""


def write(out: Path, samples: int, per_shard: int) -> None:
    import numpy as np

    from fastasr.shards.index import write_durations_table

    rng = np.random.default_rng(0)
    shards, left, i = {}, samples, 0
    while left > 0:
        n = min(per_shard, left)
        shards[f"train/shard-{i:06d}.tar"] = np.round(rng.uniform(0.5, 20.0, n), 6).tolist()
        left, i = left - n, i + 1
    out.mkdir(parents=True, exist_ok=True)
    write_durations_table(out / "durations-train.json", "train", shards)
    print(f"wrote {len(shards)} shards, {samples} samples: "
          f"{(out / 'durations-train.json').stat().st_size / 1e6:.0f} MB JSON, "
          f"{(out / 'durations-train.npy').stat().st_size / 1e6:.0f} MB binary")


# Open STT's manifest layout: SUBSET/H/HH/ID.opus with the transcript beside it (ids are 12 hex digits).
SUBSETS = ("public_youtube1120", "public_youtube700", "radio_2", "audiobooks_2", "asr_public_phone_calls_2",
           "public_lecture_1", "tts_russian_addresses_rhvoice_4voices", "private_buriy_audiobooks_2")


def write_manifest(out: Path, rows: int) -> Path:
    """An Open STT-shaped headerless CSV of `rows` rows (audio_path,text_path,duration); no audio behind it."""
    import numpy as np

    rng = np.random.default_rng(1)
    path = out / f"openstt-{rows}.csv"
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.partial")
    with open(tmp, "w", encoding="utf-8") as f:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            ids = rng.integers(0, 16 ** 12, n, dtype=np.int64)
            subset = rng.integers(0, len(SUBSETS), n)
            durations = rng.uniform(0.5, 20.0, n)
            lines = []
            for i, s, d in zip(ids.tolist(), subset.tolist(), durations.tolist()):
                h = f"{i:012x}"
                stem = f"{SUBSETS[s]}/{h[0]}/{h[1:3]}/{h}"
                lines.append(f"{stem}.opus,{stem}.txt,{d:.3f}\n")
            f.writelines(lines)
    tmp.replace(path)
    print(f"wrote {path}: {rows} rows, {path.stat().st_size / 1e6:.0f} MB")
    return path


SHARD_CHILD = r"""
import resource, sys, time
sys.path.insert(0, sys.argv[1])
from fastasr.cli import main
import fastasr.shards.writer  # the command's imports are the baseline, not part of the listing
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
rc = main(sys.argv[2:])
print(f"RC {rc}")
print(f"PEAK {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base} {time.perf_counter() - t}")
"""


def measure_shard(out: Path, rows: int, part: str, group_by: str | None = None) -> dict:
    """`fastasr shard MANIFEST OUT --part I/N --verify header` in a fresh process: wall time and peak RSS above
    the imports. The rows' audio does not exist, so the part's own rows are rejected (missing audio) at once: what
    is measured is the listing and the plan every task of a job array pays."""
    import shutil

    manifest = out / f"openstt-{rows}.csv"
    if not manifest.exists():
        write_manifest(out, rows)
    dest = out / f"shards-{rows}"
    shutil.rmtree(dest, ignore_errors=True)
    done = subprocess.run([sys.executable, "-c", SHARD_CHILD, str(ROOT), "shard", str(manifest), str(dest),
                           "--part", part, "--verify", "header", "--workers", "1", "--quiet",
                           *(["--group-by", group_by] if group_by else [])],
                          capture_output=True, text=True)
    peak = [line for line in done.stdout.splitlines() if line.startswith("PEAK ")]
    if not peak:
        raise SystemExit(f"the shard run failed:\n{done.stderr[-3000:]}")
    kb, seconds = peak[-1].split()[1:]
    return {"rows": rows, "part": part, "group_by": group_by, "wall_s": round(float(seconds), 1), "peak_rss_above_imports_mb":
            round(int(kb) / 1024, 1)}


def measure_table(table: Path) -> list[dict]:
    """The durations table at `table` loaded each way (the JSON parsed, the binary twin mapped), a process each."""
    return [json.loads(subprocess.run([sys.executable, "-c", CHILD, str(table), mode, str(ROOT)],
                                      capture_output=True, text=True, check=True).stdout)
            for mode in ("json", "binary")]


WORLD, WORKERS, DONE = 8, 6, 0.9  # the node the paths are measured for, and how deep into the epoch a resume is


def write_index(out: Path, rows: int, per_shard: int) -> Path:
    """DIR/index-ROWS/: index.json and durations tables of `rows` samples, no shards behind them."""
    import numpy as np

    from fastasr.shards.index import atomic_write, build_index, write_durations
    from fastasr.shards.writer import ShardOptions

    rng = np.random.default_rng(0)
    dest = out / f"index-{rows}"
    dest.mkdir(parents=True, exist_ok=True)
    shards, durations, left = [], {}, rows
    counters = {"train": 0, "val": 0, "test": 0}
    while left > 0:
        n = min(per_shard, left)
        split = ("train", "train", "train", "val", "test")[len(shards) % 5]
        path = f"{split}/shard-{counters[split]:06d}.tar"
        counters[split] += 1
        values = np.round(rng.uniform(0.5, 20.0, n), 3).tolist()
        shards.append({"path": path, "samples": n, "seconds": sum(values)})
        durations[path] = values
        left -= n
    index = build_index(ShardOptions().settings(), shards, [], rows, rows)
    index["text"]["alphabet"] = "абвгдежзийклмнопрстуфхцчшщъыьэюя "
    write_durations(dest, index, durations)
    atomic_write(dest / "index.json", json.dumps(index, ensure_ascii=False, indent=1))
    print(f"wrote {dest}: {len(shards)} shards, {rows} samples")
    return dest


PATH_CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
import fastasr.data.loader, fastasr.shards.foreign  # the imports are the baseline
sys.path.insert(0, sys.argv[1] + "/tools")
from openstt_scale import run_path
def status_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak RSS (VmHWM) starts again from now: the imports' own peak is not the path's
base = status_kb("VmRSS:")
t = time.perf_counter()
result = run_path(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
wall = time.perf_counter() - t
peak = (status_kb("VmHWM:") - base) / 1024
print("RESULT " + json.dumps({**result, "wall_s": round(wall, 2), "peak_rss_above_imports_mb": round(peak, 1)}))
"""


def _spec(dest: str, rank: int = 0, world: int = WORLD, **kw):
    from fastasr.data.loader import build_loader

    loader = build_loader(dest, "train", max_batch_seconds=200.0, num_workers=WORKERS, rank=rank, world_size=world,
                          seed=3, **kw)
    return loader.spec


def run_path(path: str, dest: str, args: dict) -> dict:
    """One metadata path on the index at `dest` (in a child process of measure_paths)."""
    from fastasr.data.durations import durations_table
    from fastasr.data.reader import make_handler, planned_batches

    if path == "table":
        table = durations_table(f"{dest}/durations-train.json")
        return {"path": path, "shards": len(table.shards)}
    if path == "epoch_plan":
        spec = _spec(dest)
        batches = samples = 0
        for planned in planned_batches(spec, 0, 0, handler=make_handler(spec, quiet=True), audio=False):
            batches, samples = batches + 1, samples + len(planned.samples)
        return {"path": path, "batches": batches, "samples": samples}
    if path == "rank_plan":
        spec = _spec(dest)
        batches = sum(1 for role in range(WORKERS)
                      for _ in planned_batches(spec, role, 0, handler=make_handler(spec, quiet=True), audio=False))
        return {"path": path, "batches": batches}
    if path == "resume":
        from fastasr.data.resume import plan_resume

        spec = _spec(dest)
        plan = plan_resume(spec, 0, args["skip_batches"], infinite=False)
        return {"path": path, "skipped_batches": sum(plan.skipped_batches.values())}
    if path == "reshard":
        from fastasr.data.resume import continue_elsewhere

        spec = _spec(dest, world=WORLD // 2)
        state = {"world": WORLD, "workers": WORKERS, "exclude": {}}
        positions = [{"epoch": 0, "batches": args["skip_batches"]}] * WORLD
        epoch, exclude, delivered = continue_elsewhere(spec, state, positions, infinite=False)
        return {"path": path, "epoch": epoch, "delivered": delivered}
    if path == "stats":
        from fastasr.shards.stats import compute_stats

        return {"path": path, "samples": compute_stats(dest, durations_only=True)["all"]["samples"]}
    if path == "index_merge":
        import tempfile

        from fastasr.shards.foreign import _combine, _write, split_entry
        from fastasr.shards.scan import ShardScan
        from fastasr.text.normalization import TextConfig

        table = durations_table(f"{dest}/durations-train.json")
        scans = []
        for shard in table.shards:  # what the indexing workers hand back: one scan per shard
            scans.append(ShardScan(f"file:///{shard}", shard, table.shards[shard]))
        with tempfile.TemporaryDirectory() as out:
            index = _combine(None, "train", split_entry("train", scans), TextConfig(), "txt")
            _write(Path(out), index, "train", scans, None)
        return {"path": path, "samples": index["totals"]["samples"]}
    raise ValueError(f"unknown path {path!r}")


def measure_paths(dest: Path, skip_reshard: bool = False) -> list[dict]:
    results = []
    for path in ("table", "epoch_plan", "rank_plan", "resume", "reshard", "stats", "index_merge"):
        if path == "reshard" and skip_reshard:
            continue
        args = {}
        if path in ("resume", "reshard"):  # 90 % of the rank's batches in the epoch
            args["skip_batches"] = int(DONE * results[2]["batches"])
        done = subprocess.run([sys.executable, "-c", PATH_CHILD, str(ROOT), path, str(dest), json.dumps(args)],
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            raise SystemExit(f"path {path} failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(lines[-1][len("RESULT "):]))
        print(json.dumps(results[-1]), flush=True)
    return results


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--measure", action="store_true")
    p.add_argument("--manifest", type=int, default=None, metavar="ROWS")
    p.add_argument("--measure-shard", type=int, default=None, metavar="ROWS")
    p.add_argument("--part", default="1/1000")
    p.add_argument("--group-by", default=None, help="with --measure-shard: the shard command's --group-by")
    p.add_argument("--index", type=int, default=None, metavar="ROWS")
    p.add_argument("--measure-paths", action="store_true")
    p.add_argument("--skip-reshard", action="store_true")
    args = p.parse_args()
    if args.index:
        dest = args.dir / f"index-{args.index}"
        if not (dest / "index.json").exists():
            write_index(args.dir, args.index, args.per_shard)
        if args.measure_paths:
            measure_paths(dest, args.skip_reshard)
    if args.manifest:
        write_manifest(args.dir, args.manifest)
    if args.measure_shard:
        print(json.dumps(measure_shard(args.dir, args.measure_shard, args.part, args.group_by)))
    if args.samples:
        write(args.dir, args.samples, args.per_shard)
    if args.measure:
        for result in measure_table(args.dir / "durations-train.json"):
            print(json.dumps({"samples": args.samples, **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
