"""Open STT-scale metadata without audio, and what reading it costs one process: the durations table today.

    python tools/openstt_scale.py DIR --samples 16500000 [--per-shard 1000]   # write DIR/durations-train.json + twin
    python tools/openstt_scale.py DIR --measure                               # load both ways, one process each
    python tools/openstt_scale.py DIR --manifest 1000000                      # write DIR/openstt-1000000.csv
    python tools/openstt_scale.py DIR --measure-shard 1000000 [--part 1/1000] # one job-array task's listing + plan

--measure runs each way in a fresh child process and prints JSON: seconds to load the table, the private memory
(RssAnon) it added, and the same after reading one reader's share of it (every 48th shard: world 8 × 6 workers),
with the mapped file's pages (RssFile: page cache, one copy per node whatever the number of processes). The
values are uniform in 0.5–20 s with a fixed seed; the numbers are what matter, not their meaning.
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


def measure_shard(out: Path, rows: int, part: str) -> dict:
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
                           "--part", part, "--verify", "header", "--workers", "1", "--quiet"],
                          capture_output=True, text=True)
    peak = [line for line in done.stdout.splitlines() if line.startswith("PEAK ")]
    if not peak:
        raise SystemExit(f"the shard run failed:\n{done.stderr[-3000:]}")
    kb, seconds = peak[-1].split()[1:]
    return {"rows": rows, "part": part, "wall_s": round(float(seconds), 1), "peak_rss_above_imports_mb":
            round(int(kb) / 1024, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--measure", action="store_true")
    p.add_argument("--manifest", type=int, default=None, metavar="ROWS")
    p.add_argument("--measure-shard", type=int, default=None, metavar="ROWS")
    p.add_argument("--part", default="1/1000")
    args = p.parse_args()
    if args.manifest:
        write_manifest(args.dir, args.manifest)
    if args.measure_shard:
        print(json.dumps(measure_shard(args.dir, args.measure_shard, args.part)))
    if args.samples:
        write(args.dir, args.samples, args.per_shard)
    if args.measure:
        for mode in ("json", "binary"):
            done = subprocess.run([sys.executable, "-c", CHILD, str(args.dir / "durations-train.json"), mode,
                                   str(ROOT)], capture_output=True, text=True, check=True)
            print(json.dumps({"samples": args.samples, **json.loads(done.stdout)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
