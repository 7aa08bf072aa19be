"""Remote shards, resume planning and speed perturbation, each beside its baseline in the same run.

Corpus: a few hundred 1.5–8 s speech-like 16 kHz mono Opus files in shards of 20 (tests/data_shards.py).

- http_vs_local: one epoch of build_loader (2 workers) from a real HTTP server on 127.0.0.1 (tests/http_shards.py)
  and from the same shards on the local disk, interleaved round by round; plus the bytes the server sent per epoch
  ÷ the shard bytes (1.0 = each byte fetched once). The server is local: this measures the transport's cost, not a
  network's latency or bandwidth.
- resume_planning: planning a resume after N consumed batches from the durations table vs from the tar headers
  (the same shards, the index without its table), for N = a quarter, a half and all of the epoch.
- speed_perturb: one epoch (1 worker) with data.speed_perturb=0.9,1.0,1.1 vs without.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from data_shards import Utt, encode, speech_like, write_shards  # noqa: E402
from http_shards import ShardServer, shard_bytes  # noqa: E402

from fastasr.data import build_loader  # noqa: E402
from fastasr.data.resume import plan_resume  # noqa: E402

N_FILES, SHARD, ROUNDS, BATCH_SECONDS = 320, 20, 3, 60.0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources_bench")
    rng = np.random.default_rng(1)
    utts = []
    for i in range(N_FILES):
        dur = float(rng.uniform(1.5, 8.0))
        audio = encode(speech_like(dur, 16000, 1, i), 16000, "opus")
        utts.append(Utt(f"bench/{i % 4}/u{i:05d}", "opus", audio, "мама мыла раму", sf.info(io.BytesIO(audio)).duration,
                        16000, 1))
    write_shards(root / "shards", utts, [SHARD] * (N_FILES // SHARD))
    # The same shards with an index from before the durations tables: planning reads tar headers.
    shutil.copytree(root / "shards", root / "no_table")
    index = json.loads((root / "no_table" / "index.json").read_text())
    index["splits"]["train"].pop("durations")
    (root / "no_table" / "index.json").write_text(json.dumps(index))
    return root, sum(u.duration for u in utts) / 3600


def epoch(source, workers: int, **kw) -> int:
    n = 0
    for b in build_loader(source, max_batch_seconds=BATCH_SECONDS, num_workers=workers, seed=0, pin_memory=False,
                          **kw):
        n += int(b.audio_lens.sum())
        float(b.audio.numpy().sum())
    return n


def interleaved(benchmark, kinds: dict, rounds: int = ROUNDS) -> dict[str, list[float]]:
    wall = {k: [] for k in kinds}

    def one_round():
        for k, fn in kinds.items():
            t = time.perf_counter()
            fn()
            wall[k].append(time.perf_counter() - t)

    benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    return wall


def test_http_vs_local(benchmark, corpus):
    root, hours = corpus
    epoch(root / "shards", 0)  # warm-up: Numba, imports
    with ShardServer(root / "shards") as server:
        epoch(server.url, 2)
        server.sent.clear()
        epoch(server.url, 2)
        fetched = server.shard_bytes_sent() / shard_bytes(root / "shards")
        wall = interleaved(benchmark, {"local_2w": lambda: epoch(root / "shards", 2),
                                       "http_2w": lambda: epoch(server.url, 2)})
    info = benchmark.extra_info
    for k, v in wall.items():
        info[f"{k}_hours_per_s_best"] = hours / min(v)
    info["ratio_http_over_local"] = min(wall["local_2w"]) / min(wall["http_2w"])
    info["bytes_fetched_over_shard_bytes"] = fetched
    print({k: round(v, 4) for k, v in info.items()})


def test_resume_planning_table_vs_tar_headers(benchmark, corpus):
    root, _ = corpus
    loaders = {name: build_loader(root / name, max_batch_seconds=BATCH_SECONDS, num_workers=2, seed=0)
               for name in ("shards", "no_table")}
    total = len(list(build_loader(root / "shards", max_batch_seconds=BATCH_SECONDS, num_workers=2, seed=0)))
    kinds = {}
    for frac in (0.25, 0.5, 1.0):
        n = max(1, int(total * frac))
        for name, label in (("shards", "table"), ("no_table", "tar_headers")):
            spec = replace(loaders[name].spec)
            kinds[f"{label}_{int(frac * 100)}pct"] = (lambda s=spec, n=n: plan_resume(s, 0, n, infinite=True))
    wall = interleaved(benchmark, kinds)
    info = benchmark.extra_info
    info["epoch_batches"] = total
    for k, v in wall.items():
        info[f"{k}_ms_best"] = 1000 * min(v)
    for frac in (25, 50, 100):
        info[f"ratio_tar_over_table_{frac}pct"] = min(wall[f"tar_headers_{frac}pct"]) / min(wall[f"table_{frac}pct"])
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in info.items()})


def test_speed_perturb_cost(benchmark, corpus):
    root, hours = corpus
    epoch(root / "shards", 0)
    wall = interleaved(benchmark, {"plain_1w": lambda: epoch(root / "shards", 1),
                                   "speed_1w": lambda: epoch(root / "shards", 1, speed_perturb=(0.9, 1.0, 1.1))})
    info = benchmark.extra_info
    for k, v in wall.items():
        info[f"{k}_hours_per_s_best"] = hours / min(v)
    info["ratio_speed_over_plain_throughput"] = min(wall["plain_1w"]) / min(wall["speed_1w"])
    print({k: round(v, 4) for k, v in info.items()})
