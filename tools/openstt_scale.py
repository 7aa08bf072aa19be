"""Open STT-scale metadata without audio, and what reading it costs one process: the durations table today.

    python tools/openstt_scale.py DIR --samples 16500000 [--per-shard 1000]   # write DIR/durations-train.json + twin
    python tools/openstt_scale.py DIR --measure                               # load both ways, one process each

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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("dir", type=Path)
    p.add_argument("--samples", type=int, default=None)
    p.add_argument("--per-shard", type=int, default=1000)
    p.add_argument("--measure", action="store_true")
    args = p.parse_args()
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
