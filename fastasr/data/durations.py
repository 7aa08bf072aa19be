"""Per-sample durations of a split, stored beside index.json (`durations-SPLIT.json`, named by the split's entry).

`{"format": "fastasr-durations/1", "split": NAME, "shards": {SHARD_PATH: [seconds or null, …]}}`: one entry per KEY
group in tar order, null for a sample that cannot be used (`fastasr index` names it in rejected.tsv). It lets the
loader plan batches without opening a shard — resuming deep into an epoch reads no consumed shard — and gives the
durations of shards other tools wrote, whose samples carry no `.json` duration. The values are the ones the
`.json` members hold (for fastasr's own shards), so a plan made from the table and one made from the tars agree.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from functools import lru_cache
from pathlib import Path

from fastasr import sources
from fastasr.shards.durations_bin import read_binary
from fastasr.shards.index import (Reach, read_durations_table,  # the format lives beside its writer (torch-free)
                                  write_durations_table)

log = logging.getLogger("fastasr.data")


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
    its binary twin is mapped, not parsed (fastasr.shards.durations_bin): every process on the node shares it; a
    remote one build_loader first copies to the node (node_copy), so readers map that copy."""
    if not sources.is_remote(url):
        shards = read_binary(Path(url[len("file://"):] if url.startswith("file://") else url))
        if shards is not None:
            return DurationsTable(shards)
    return DurationsTable(read_durations_table(url))


def node_copy(url: str, split: str, version: str) -> str:
    """A remote table fetched once per node: checked, written with its binary twin under the node's cache
    (`$FASTASR_CACHE_DIR`, default ~/.cache/fastasr, in durations/ under a name from `url` and `version`), and
    mapped from there by every reader of every rank on the node instead of each parsing the JSON. `version` names
    the index the table belongs to (its digest): an index written again gets a new copy. Ranks that fetch at the
    same time each write a private directory and rename it into place, the first one wins; when the cache cannot
    be written (a read-only home, a full disk) the warning says so and the readers parse the remote table as
    before. Returns the path to read the table from."""
    if not sources.is_remote(url):
        return url
    cache = Path(os.environ.get("FASTASR_CACHE_DIR") or Path.home() / ".cache" / "fastasr") / "durations"
    name = hashlib.sha256(f"{url}\n{version}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
    local = cache / name / "durations.json"
    if read_binary(local) is not None:
        return str(local)
    shards = read_durations_table(url)  # a bad table is a UserError here, before anything is written
    partial = cache / f"{name}.{os.getpid()}.partial"
    try:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        write_durations_table(partial / "durations.json", split, shards)
        try:
            os.rename(partial, cache / name)
        except OSError:  # another rank's copy is there already
            shutil.rmtree(partial, ignore_errors=True)
        if read_binary(local) is not None:
            return str(local)
    except OSError as err:
        shutil.rmtree(partial, ignore_errors=True)
        log.warning("%s: cannot keep a node copy of the durations table in %s (%s); every reader parses it",
                    sources.describe(url), cache, err)
    return url


def table_url(root: str, split_entry: dict, reach: Reach | None = None) -> str | None:
    """Where a split's durations table is (within `reach`, for an index read from a URL), or None for an index
    written before the tables existed."""
    name = split_entry.get("durations")
    return (reach or Reach()).resolve(root, name, f"{sources.join(root, 'index.json')}: durations") if name else None
