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
The split of a group depends only on (seed, group, fractions): adding rows never moves an old group (the
planner, corpus.plan, hashes it).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass

from fastasr.corpus.rows import Row
from fastasr.errors import UserError
from fastasr.text.normalization import TextConfig, TextRejected, normalize

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


def what_groups(rule: GroupRule) -> str:
    if rule.spec == "speaker":
        return "speakers come from Kaldi utt2spk, Lhotse supervisions and NeMo's 'speaker' field"
    if rule.spec == "text":
        return "a readable transcript in the alphabet"
    if rule.pattern is not None:
        return f"the pattern matches no source path; or use one of {', '.join(GROUP_RULES)}"
    return "no audio path"
