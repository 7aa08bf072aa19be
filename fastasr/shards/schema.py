"""What an index.json and a durations table must hold, checked when either is opened.

Readers index straight into these files (`s["samples"]`, `entry["shards"]`, a duration compared with a bucket edge);
a file that another tool, an old build or a stranger wrote can hold anything. So the fields readers use are checked
first, and a field of the wrong type, out of range or missing is a UserError naming the file and the field
(`…/index.json: splits.train.shards[3].samples must be an integer >= 0, got 'many'`), never a traceback from deep
inside the loader. Only the types and ranges are checked here; what the paths name is Reach's (index.py).
"""

from __future__ import annotations

import math

from fastasr.errors import UserError

_TEXT_FLAGS = ("fold_yo", "keep_digits", "keep_latin")
_NUMBERS = (int, float)  # exactly: a bool is no number of seconds


def check_index(index: dict, where: str) -> None:
    """index.json's fields (`where`: how the file is named in the message); its "format" is the caller's."""
    text = index.get("text")
    _need(isinstance(text, dict), where, "text", "must be an object with the alphabet and the text settings", text)
    _need(isinstance(text.get("alphabet"), str) and text["alphabet"], where, "text.alphabet",
          "must be a non-empty string", text.get("alphabet"))
    origin = index.get("origin")
    for flag in _TEXT_FLAGS:  # read by TextConfig.from_dict for shards other tools wrote (those with an origin)
        if flag in text or origin is not None:
            _need(isinstance(text.get(flag), bool), where, f"text.{flag}", "must be true or false", text.get(flag))
    if origin is not None:
        _need(isinstance(origin, dict), where, "origin", "must be an object", origin)
        _need(isinstance(origin.get("transcript", "txt"), str), where, "origin.transcript",
              "must be a string (txt or json:FIELD)", origin.get("transcript"))
        _need(isinstance(origin.get("normalized", False), bool), where, "origin.normalized", "must be true or false",
              origin.get("normalized"))
    splits = index.get("splits")
    _need(isinstance(splits, dict), where, "splits", "must be an object {split name: entry}", splits)
    for name, entry in splits.items():
        _check_split(entry, where, f"splits.{name}")
    for field in ("totals", "rejected"):
        if field in index:
            _need(isinstance(index[field], dict), where, field, "must be an object", index[field])
    for field, value in index.get("totals", {}).items():
        _need(_is_seconds(value), where, f"totals.{field}", "must be a number >= 0", value)
    _check_counts(index.get("rejected", {}), where, "rejected")
    group_by = index.get("group_by")
    _need(group_by is None or isinstance(group_by, str), where, "group_by", "must be a string or null", group_by)


def _check_split(entry, where: str, at: str) -> None:
    _need(isinstance(entry, dict), where, at, "must be an object with its shards", entry)
    shards = entry.get("shards")
    _need(isinstance(shards, list), where, f"{at}.shards", "must be a list of {path, samples, …}", shards)
    seen: dict[str, int] = {}
    for i, shard in enumerate(shards):
        here = f"{at}.shards[{i}]"
        _need(isinstance(shard, dict), where, here, "must be an object {path, samples, …}", shard)
        path = shard.get("path")
        _need(isinstance(path, str) and path, where, f"{here}.path", "must be a non-empty string", path)
        _need(path not in seen, where, f"{here}.path", f"names the same shard as {at}.shards[{seen.get(path)}]", path)
        seen[path] = i
        _need(_is_count(shard.get("samples")), where, f"{here}.samples", "must be an integer >= 0",
              shard.get("samples"))
        _optional(shard, "groups", _is_count, "must be an integer >= 0", where, here)
        _optional(shard, "seconds", _is_seconds, "must be a number >= 0", where, here)
    _optional(entry, "samples", _is_count, "must be an integer >= 0", where, at)
    _optional(entry, "groups", _is_count, "must be an integer >= 0", where, at)
    _optional(entry, "seconds", _is_seconds, "must be a number >= 0", where, at)
    durations = entry.get("durations")
    _need(durations is None or (isinstance(durations, str) and durations), where, f"{at}.durations",
          "must be the name of the split's durations table (a non-empty string) or null", durations)
    if "rejected" in entry:
        _need(isinstance(entry["rejected"], dict), where, f"{at}.rejected", "must be an object", entry["rejected"])
        _check_counts(entry["rejected"], where, f"{at}.rejected")


def check_durations(table: dict, where: str) -> None:
    """A durations table's "shards": {shard path: [seconds >= 0 or null, …]} (its "format" is the caller's)."""
    shards = table.get("shards")
    _need(isinstance(shards, dict), where, "shards", "must be an object {shard path: [seconds or null, …]}", shards)
    for path, values in shards.items():
        here = f"shards[{path!r}]"
        _need(isinstance(values, list), where, here, "must be a list of seconds (or null)", values)
        inf = math.inf
        if all(v is None or (type(v) in _NUMBERS and 0 <= v < inf) for v in values):  # inlined: tables are long
            continue
        i, bad = next((i, v) for i, v in enumerate(values) if not (v is None or _is_seconds(v)))
        _need(False, where, f"{here}[{i}]", "must be a number of seconds >= 0 or null", bad)


def _is_count(value) -> bool:
    return type(value) is int and value >= 0  # not bool: True is no count


def _is_seconds(value) -> bool:
    return type(value) in _NUMBERS and 0 <= value < math.inf  # nan fails the comparison


def _optional(entry: dict, field: str, ok, wants: str, where: str, at: str) -> None:
    if field in entry:
        _need(ok(entry[field]), where, f"{at}.{field}", wants, entry[field])


def _check_counts(counts: dict, where: str, at: str) -> None:
    for reason, n in counts.items():
        _need(_is_count(n), where, f"{at}.{reason}", "must be an integer >= 0", n)


def _need(ok, where: str, field: str, wants: str, got) -> None:
    if not ok:
        shown = "nothing" if got is None else repr(got)
        raise UserError(f"{where}: {field} {wants}, got {shown if len(shown) <= 80 else shown[:80] + '…'}")
