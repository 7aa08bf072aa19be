"""`--group-by`: rows that belong together land in the same split, because the split hash is taken over the group.

Rules:
- `dir`: the folder of the audio file (Open STT keeps one source's clips in one directory);
- `speaker`: Kaldi's utt2spk, a Lhotse supervision's `speaker`, a NeMo row's `speaker`;
- `recording`: the audio file — every segment of one recording together;
- `text`: the normalised transcript — every recording of one sentence on the same side (synthetic and read-speech
  corpora say the same sentences many times);
- anything else is a regular expression searched in the source path (the audio path relative to the corpus root):
  its first group, or the whole match when it has none, names the group (`--group-by '^([^/]+)/'`: the top folder).
A row the rule says nothing about (no speaker, no match, a transcript that cannot be read) is a group of its own,
split on its key as without a rule, and their number is logged; a rule that names no group at all is a user error.
The split of a group depends only on (seed, group, fractions): adding rows never moves an old group.
"""

from __future__ import annotations

import logging
import posixpath
import re
from dataclasses import dataclass

from fastasr.corpus.rows import Row
from fastasr.corpus.split import SPLITS, assign_split
from fastasr.errors import UserError
from fastasr.text.normalization import TextConfig, TextRejected, normalize

log = logging.getLogger("fastasr.shard")

GROUP_RULES = ("dir", "speaker", "recording", "text")


@dataclass(frozen=True)
class GroupRule:
    spec: str
    pattern: re.Pattern | None = None  # set for a regular expression


def parse_group_by(spec: str | None) -> GroupRule | None:
    if spec is None:
        return None
    if spec in GROUP_RULES:
        return GroupRule(spec)
    try:
        return GroupRule(spec, re.compile(spec))
    except re.error as err:
        raise UserError(f"--group-by {spec!r} is neither one of {', '.join(GROUP_RULES)} nor a regular expression "
                        f"({err})") from None


def group_of(row: Row, rule: GroupRule, text: TextConfig) -> str | None:
    """The group `rule` puts `row` in, or None when it says nothing about the row."""
    if rule.spec == "dir":
        return posixpath.dirname(row.source)
    if rule.spec == "recording":
        return row.source
    if rule.spec == "speaker":
        return row.speaker
    if rule.spec == "text":
        from fastasr.corpus.checks import Reject, read_transcript

        raw = read_transcript(row)
        if isinstance(raw, Reject):
            return None
        try:
            return normalize(raw, text)
        except TextRejected:
            return None
    m = rule.pattern.search(row.source)
    if m is None:
        return None
    return m.group(1) if m.re.groups and m.group(1) is not None else m.group(0)


def split_rows(rows: list[Row], indices: list[int], seed: int, fractions: dict[str, float],
               rule: GroupRule | None = None, text: TextConfig = TextConfig()
               ) -> tuple[dict[str, list[tuple[str, int]]], dict[int, str], dict[str, int]]:
    """(split → [(key, row index)], row index → group, split → number of groups) for rows[indices].

    Without a rule every row is hashed on its key (its own group); with one, on its group."""
    groups = {}
    if rule is not None:
        for i in indices:
            g = group_of(rows[i], rule, text)
            if g is not None:
                groups[i] = g
        if indices and not groups:
            raise UserError(f"--group-by {rule.spec}: no row of SOURCE has a group ({_what(rule)})")
        if len(groups) < len(indices):
            log.warning("--group-by %s: %d of %d rows have no group (%s); each is split on its own key",
                        rule.spec, len(indices) - len(groups), len(indices), _what(rule))
    keys_by_split: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLITS}
    members: dict[str, set[str]] = {s: set() for s in SPLITS}
    for i in indices:
        key = rows[i].key
        group = groups.get(i)
        split = assign_split(key if group is None else group, seed, fractions)
        keys_by_split[split].append((key, i))
        members[split].add("\0" + key if group is None else group)
    return keys_by_split, groups, {s: len(members[s]) for s in SPLITS}


def _what(rule: GroupRule) -> str:
    if rule.spec == "speaker":
        return "speakers come from Kaldi utt2spk, Lhotse supervisions and NeMo's 'speaker' field"
    if rule.spec == "text":
        return "a readable transcript in the alphabet"
    if rule.pattern is not None:
        return f"the pattern matches no source path; or use one of {', '.join(GROUP_RULES)}"
    return "no audio path"
