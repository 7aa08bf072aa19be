"""The compact listing and planner (issue 22, item 3) against the plain one they replace: a list of rows, a dict of
keys, sorted lists of (key, row) pairs — the same plan, rejects and group counts for any listing; and every row back
from the packed listing as it went in."""

from __future__ import annotations

import hashlib
from unittest import mock

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fastasr.corpus.checks import Reject
from fastasr.corpus.grouping import group_of, parse_group_by
from fastasr.corpus.listing import Listing
import fastasr.corpus.plan as plan_module
from fastasr.corpus.plan import plan_rows
from fastasr.corpus.rows import Row, make_key, outside_keys_relative
from fastasr.corpus.segments import overlapping
from fastasr.corpus.split import SPLITS, assign_split, parse_fractions, split_codes, split_digest
from fastasr.errors import UserError

names = st.sampled_from(["a", "b", "b.c", "d%e", "ё", "z", "Яблоко", "x\udcff", ".h", "n" * 40, "n" * 41])
# directories: ones no other is a prefix of (keys sort as (directory, name)), and as a draw may add, nested ones and
# the top (whole keys sorted)
folders = st.sampled_from(["s1/0", "s2/1", "s10", "s1/0/x", "s1", ""])


@st.composite
def rows(draw):
    out = []
    for _ in range(draw(st.integers(0, 40))):
        folder, name = draw(folders), draw(names)
        ext = draw(st.sampled_from([".opus", ".wav", ".txt", ".mp3", ""]))
        source = f"{folder}/{name}{ext}" if folder else f"{name}{ext}"
        audio = f"/data/corpus/{source}" if draw(st.booleans()) else f"/elsewhere/{source}"
        kind = draw(st.integers(0, 4))
        if kind == 0:  # a plain file with its transcript beside it
            out.append(Row(source, audio, audio.rsplit(".", 1)[0] + ".txt"))
        elif kind == 1:  # a manifest row with inline text and a speaker
            out.append(Row(source, audio, text=draw(st.sampled_from(["да", "нет"])),
                           speaker=draw(st.one_of(st.none(), st.sampled_from(["s1", "s2"])))))
        elif kind == 2:  # a segment, overlapping others of its file now and then
            offset = draw(st.sampled_from([0.0, 0.5, 1.0, 3.0]))
            out.append(Row(source, audio, text="да", offset=offset, length=draw(st.sampled_from([1.0, None])),
                           channel=draw(st.sampled_from([None, 0]))))
        elif kind == 3:  # rejected by the reader
            out.append(Row(f"m.jsonl:{len(out)}", None, reject="manifest_malformed", detail="bad JSON"))
        else:  # a transcript elsewhere, or none
            out.append(Row(source, audio, draw(st.sampled_from([None, "/t/other.txt"]))))
    return out


def reference_plan(rows, seed, fractions, shard_size, rule):
    """The planner as it was before the compact one: a dict of keys and sorted lists of (key, row) pairs."""
    seen, candidates, pre = {}, [], []
    for i, row in enumerate(rows):
        if row.reject:
            pre.append(Reject(row.label, row.reject, row.detail))
        elif row.key in seen:
            pre.append(Reject(row.label, "duplicate_key", f"key {row.key} already taken by {seen[row.key]}"))
        else:
            seen[row.key] = row.label
            candidates.append(i)
    overlaps = overlapping(rows, candidates)
    pre += [Reject(rows[i].label, "segment_overlap", overlaps[i]) for i in sorted(overlaps)]
    by_split, members = {s: [] for s in SPLITS}, {s: set() for s in SPLITS}
    groups = {i: group_of(rows[i], rule, None) if rule else None for i in candidates if i not in overlaps}
    if rule and groups and all(g is None for g in groups.values()):
        raise UserError("no row of SOURCE has a group")  # as the plain planner refused: a rule that groups nothing
    for i, group in groups.items():
        split = assign_split(rows[i].key if group is None else group, seed, fractions)
        by_split[split].append((rows[i].key, i))
        members[split].add("\0" + rows[i].key if group is None else group)
    shards = []
    for split in SPLITS:
        items = sorted(by_split[split])
        shards += [(split, n, [i for _, i in items[s : s + shard_size]])
                   for n, s in enumerate(range(0, len(items), shard_size))]
    return shards, pre, {s: len(members[s]) for s in SPLITS}


def label_hash(rows):
    return hashlib.sha256("\n".join(r.label for r in rows).encode("utf-8", "surrogatepass")).hexdigest()


@settings(max_examples=400, deadline=None)
@example(listing=[Row("a.opus", "/elsewhere/a.opus", "/elsewhere/a.txt")], seed=0, shard_size=1, rule=r"^(s\d)",
         parts="0.6,0.2,0.2", sort_bytes=1)  # a rule that groups no row: refused by both
@given(listing=rows(), seed=st.integers(0, 99), shard_size=st.integers(1, 5),
       rule=st.sampled_from([None, "dir", "recording", r"^(s\d)"]),
       parts=st.sampled_from(["0.6,0.2,0.2", "1,0,0", "0.2,0.3,0.5"]), sort_bytes=st.sampled_from([1, 512 << 20]))
def test_the_plan_is_the_plain_planners(listing, seed, shard_size, rule, parts, sort_bytes):
    """sort_bytes 1: every name cut to 8 bytes in the sort (as 16.5 M rows with long names are), ties ordered by the
    full name."""
    fractions, rule = parse_fractions(parts), parse_group_by(rule)
    packed = Listing(listing)
    try:
        shards, pre, counts = reference_plan(listing, seed, fractions, shard_size, rule)
    except UserError:
        shards = None
    with mock.patch.object(plan_module, "_SORT_BYTES", sort_bytes):
        if shards is None:
            with pytest.raises(UserError, match="no row of SOURCE has a group"):
                plan_rows(packed, seed, fractions, shard_size, rule)
            return
        plan = plan_rows(packed, seed, fractions, shard_size, rule)
    assert [(p.split, p.number, [int(i) for i in p.rows]) for p in plan.shards] == shards
    assert plan.pre_rejects == pre
    assert plan.group_counts == counts


@settings(max_examples=300, deadline=None)
@given(listing=rows())
def test_the_listing_gives_back_every_row(listing):
    packed = Listing(listing)
    assert len(packed) == len(listing)
    assert list(packed) == listing
    assert [packed[i] for i in range(len(listing))] == listing
    if listing:
        assert packed[-1] == listing[-1]
    assert outside_keys_relative(packed) is packed or list(outside_keys_relative(packed)) == \
        outside_keys_relative(listing)


def test_the_usual_row_is_packed_small():
    """Open STT's row (a clip with its transcript beside it, under the root): a kind, a head number (root and
    directory), the file name."""
    source = "public_youtube1120/0/03/0562dfedc1ac.opus"
    row = Row(source, f"/data/open_stt/{source}", f"/data/open_stt/{source[:-5]}.txt")
    packed = Listing([row] * 1000)
    assert packed[999] == row
    assert packed.nbytes() == 1000 * (4 + len("0562dfedc1ac.opus") + 8)


@settings(max_examples=500, deadline=None)
@given(parts=st.lists(st.sampled_from(["a", "b.opus", ".", "..", "", "ё", "x y"]), min_size=1, max_size=5),
       lead=st.sampled_from(["", "/", "./"]), root=st.sampled_from(["/data/c", ".", "/", "rel/root", "/data/c/"]))
def test_string_paths_equal_pathlibs(parts, lead, root):
    """The listing's string fast path against pathlib, which it replaces for the plain relative path."""
    import os
    from pathlib import Path

    from fastasr.corpus.rows import relative, resolve_str

    p, root = lead + "/".join(parts), Path(root)
    assert resolve_str(p, root) == str(Path(p) if Path(p).is_absolute() else root / p)
    path = Path(os.path.abspath(Path(p) if Path(p).is_absolute() else root / p))
    try:
        expected = path.relative_to(os.path.abspath(root)).as_posix()
    except ValueError:
        expected = Path(*path.parts[1:]).as_posix()
    assert relative(p, root) == expected


@settings(max_examples=1000, deadline=None)
@given(path=st.text(st.sampled_from("ab.%/ёX"), max_size=12),
       ext=st.sampled_from(["", ".opus", ".OPUS", ".wav", ".txt", ".mp3", ".x", "."]))
def test_fast_string_paths_equal_os_paths(path, ext):
    """make_key's and the listing's shortcuts against the os.path code they skip."""
    import os

    from fastasr.corpus.listing import _txt_beside
    from fastasr.corpus.rows import AUDIO_EXTENSIONS, DECODED_EXTENSIONS

    source = path + ext
    stem, e = os.path.splitext(source)
    if e.lower() not in AUDIO_EXTENSIONS + DECODED_EXTENSIONS + (".txt",):
        stem = source
    head, _, base = stem.rpartition("/")
    base = base.replace("%", "%25").replace(".", "%2E")
    assert make_key(source) == (f"{head}/{base}" if head else base)
    assert _txt_beside(source) == os.path.splitext(source)[0] + ".txt"


@settings(max_examples=300, deadline=None)
@given(keys=st.lists(st.text(max_size=6), max_size=30), seed=st.integers(0, 2**40),
       parts=st.sampled_from(["0.6,0.2,0.2", "1,0,0", "0,0,1", "0.2,0.3,0.5", "1,1,1"]))
def test_split_codes_are_assign_splits(keys, seed, parts):
    fractions = parse_fractions(parts)
    codes = split_codes(b"".join(split_digest(k, seed) for k in keys), fractions)
    assert [SPLITS[c] for c in codes] == [assign_split(k, seed, fractions) for k in keys]
