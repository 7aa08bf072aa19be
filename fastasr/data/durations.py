"""Per-sample durations of a split, stored beside index.json (`durations-SPLIT.json`, named by the split's entry).

`{"format": "fastasr-durations/1", "split": NAME, "shards": {SHARD_PATH: [seconds or null, …]}}`: one entry per KEY
group in tar order, null for a sample that cannot be used (`fastasr index` names it in rejected.tsv). It lets the
loader plan batches without opening a shard — resuming deep into an epoch reads no consumed shard — and gives the
durations of shards other tools wrote, whose samples carry no `.json` duration. The values are the ones the
`.json` members hold (for fastasr's own shards), so a plan made from the table and one made from the tars agree.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastasr import sources
from fastasr.shards.durations_bin import read_binary
from fastasr.shards.index import Reach, read_durations_table  # the format lives beside its writer (torch-free)


class DurationsTable:
    def __init__(self, shards: dict[str, list]):
        self.shards = shards

    def get(self, shard: str, ordinal: int) -> float | None:
        if hasattr(self.shards, "value"):  # a mapped table: one number, not the shard's list
            return self.shards.value(shard, ordinal)
        values = self.shards.get(shard)
        if values is None or not 0 <= ordinal < len(values):
            return None
        return values[ordinal]


@lru_cache(maxsize=4)
def durations_table(url: str) -> DurationsTable:
    """The table at `url`, read once per process (build_loader reads it first, so a table that cannot be read or
    holds malformed fields is a UserError before the loader starts; forked workers inherit it). A local table with
    its binary twin is mapped, not parsed (fastasr.shards.durations_bin): every process on the node shares it."""
    if not sources.is_remote(url):
        shards = read_binary(Path(url[len("file://"):] if url.startswith("file://") else url))
        if shards is not None:
            return DurationsTable(shards)
    return DurationsTable(read_durations_table(url))


def table_url(root: str, split_entry: dict, reach: Reach | None = None) -> str | None:
    """Where a split's durations table is (within `reach`, for an index read from a URL), or None for an index
    written before the tables existed."""
    name = split_entry.get("durations")
    return (reach or Reach()).resolve(root, name, f"{sources.join(root, 'index.json')}: durations") if name else None
