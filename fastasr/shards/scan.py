"""Reading one foreign WebDataset shard (written by NeMo, webdataset's TarWriter, …) for `fastasr index`.

A shard is streamed once, through `fastasr.sources.open_input` (pipes are not seekable), and cut into KEY groups by
WebDataset's rule (the extension starts at the first dot of the last path component; a KEY's members are adjacent).
Each group gets a duration from its audio header, or a reason why it cannot be used; nothing is decoded.
`raw_transcript` is the one definition of "the transcript of a group" under a `--transcript` rule, for the loader too.
"""

from __future__ import annotations

import io
import json
import math
import tarfile
from dataclasses import dataclass, field

from fastasr import sources
from fastasr.errors import UserError
from fastasr.text.normalization import TextConfig, TextRejected, normalize

AUDIO_EXTENSIONS = ("opus", "flac", "wav", "mp3", "ogg")  # what libsndfile 1.2 reads (mp3 since 1.1)
TEXT_EXTENSIONS = ("txt", "json")
JSON_DURATION_TOLERANCE_S = 0.010  # a json `duration` further than this from the header is counted as a warning
# What a tar member may claim (its header's size) before a byte of it is read, here, in the loader and in
# `fastasr stats`. An audio member: 64 MiB, room for far more than an utterance (30 s, the longest `fastasr shard`
# keeps by default, is 11.5 MB even as 48 kHz stereo float32 WAV, the largest form a corpus stores). A txt / json
# member: 1 MiB (a transcript and its metadata take a few hundred bytes). Members of other extensions are never
# read, whatever their size; sparse members (GNU or PAX sparse: a few stored bytes that expand to any size) never.
MAX_AUDIO_MEMBER_BYTES = 64 * 2**20
MAX_TEXT_MEMBER_BYTES = 2**20


class Unusable(ValueError):
    """A KEY group that cannot be a training sample; `reason` is the tag counted in index.json / rejected.tsv."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def member_limit(ext: str) -> int | None:
    """The most bytes a member with this extension may hold; None: a member nothing reads."""
    if ext in AUDIO_EXTENSIONS:
        return MAX_AUDIO_MEMBER_BYTES
    return MAX_TEXT_MEMBER_BYTES if ext in TEXT_EXTENSIONS else None


def refuse_member(info: tarfile.TarInfo, ext: str) -> tuple[str, str] | None:
    """(reason, detail) when the member's header says it must not be read (sparse, or over its size limit), from
    the header alone; None when it may be read, or is never read."""
    limit = member_limit(ext)
    if limit is None:
        return None
    if info.issparse():
        return "sparse_member", f"{info.name} is a sparse member ({info.size} bytes once expanded)"
    if info.size > limit:
        return "member_too_large", f"{info.name} holds {info.size} bytes (a .{ext} member may hold {limit})"
    return None


def parse_transcript_rule(spec: str) -> str:
    """`txt` or `json:FIELD`, checked (UserError naming --transcript otherwise)."""
    if spec == "txt":
        return spec
    kind, sep, name = spec.partition(":")
    if kind == "json" and sep and name.strip() == name and name:
        return spec
    raise UserError(f"--transcript wants txt or json:FIELD (e.g. json:text, NeMo's field), got {spec!r}")


def raw_transcript(members: dict[str, bytes], rule: str) -> str:
    """The transcript of a group as stored (not normalised): KEY.txt as UTF-8, or a string field of KEY.json."""
    if rule == "txt":
        if "txt" not in members:
            raise Unusable("no_txt", f"members {sorted(members)}")
        try:
            return members["txt"].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Unusable("bad_text", f"txt is not UTF-8 ({exc})") from None
    name = rule.partition(":")[2]
    if "json" not in members:
        raise Unusable("no_text_field", f"no json member (members {sorted(members)})")
    info = _json(members["json"])
    if not isinstance(info, dict) or name not in info:
        raise Unusable("no_text_field", f"json has no field {name!r}")
    if not isinstance(info[name], str):
        raise Unusable("bad_text", f"json field {name!r} is {type(info[name]).__name__}, not a string")
    return info[name]


def audio_member(members: dict[str, bytes]) -> str:
    """The extension of the group's one audio member."""
    found = [ext for ext in AUDIO_EXTENSIONS if ext in members]
    if len(found) != 1:
        raise Unusable("no_audio" if not found else "many_audio", f"members {sorted(members)}")
    return found[0]


def header_duration(data: bytes) -> float:
    """frames / samplerate from the audio header (libsndfile; nothing decoded)."""
    import soundfile as sf

    try:
        info = sf.info(io.BytesIO(data))
    except Exception as exc:  # libsndfile's errors carry no useful type
        # error_string: the message without the object's address (rejected.tsv is the same from run to run)
        raise Unusable("bad_audio", getattr(exc, "error_string", None) or str(exc)) from None
    if not (info.frames > 0 and info.samplerate > 0):
        raise Unusable("bad_audio", f"{info.frames} frames at {info.samplerate} Hz")
    return info.frames / info.samplerate


def check_group(members: dict[str, bytes], rule: str, text: TextConfig) -> float:
    """The duration of a usable group, or Unusable: one audio member, a json member (if any) that parses — the
    loader refuses the sample otherwise, whatever the transcript rule —, a transcript that normalises, a header."""
    ext = audio_member(members)
    if "json" in members:
        _json(members["json"])
    try:
        normalize(raw_transcript(members, rule), text)
    except TextRejected as exc:
        raise Unusable(exc.reason, exc.detail) from None
    return header_duration(members[ext])


@dataclass
class ShardScan:
    """What one shard holds: per KEY group in tar order its duration (None: unusable), and the unusable ones."""

    url: str
    path: str  # as written to the index (see foreign.index_path)
    durations: list[float | None] = field(default_factory=list)
    rejects: list[tuple[str, str, str]] = field(default_factory=list)  # (PATH#KEY, reason, detail)
    json_mismatch: int = 0  # groups whose json `duration` disagrees with the header by > 10 ms
    mismatch_example: str = ""
    error: str | None = None  # the shard could not be read (to its end): it is left out of the index

    @property
    def samples(self) -> int:
        return sum(d is not None for d in self.durations)

    @property
    def seconds(self) -> float:
        return math.fsum(d for d in self.durations if d is not None)


def scan_shard(url: str, path: str, rule: str, text: TextConfig) -> ShardScan:
    """Stream the shard at `url` once; a shard that fails to read is returned with `error` set (never raised)."""
    scan = ShardScan(url, path)
    f = None
    try:
        f = sources.open_input(url)
        _scan_tar(f, scan, rule, text)
        f, opened = None, f
        opened.close()  # a pipe's exit status is checked here
    except (OSError, tarfile.TarError, EOFError) as exc:  # UserError (e.g. no s3fs for s3://) is raised
        groups = len(scan.durations)
        scan.error = f"{type(exc).__name__}: {exc}" + (f" (after {groups} groups)" if groups else "")
        if f is not None:
            try:
                f.close()
            except OSError as late:  # a pipe's exit status says why its stream was short or empty
                scan.error += f"; {late}"
        scan.durations, scan.rejects = [], []
    return scan


def _scan_tar(f, scan: ShardScan, rule: str, text: TextConfig) -> None:
    key, members, dupes, seen, refused = None, {}, [], set(), None
    with tarfile.open(fileobj=f, mode="r|") as tar:
        for info in tar:
            if not info.isfile():
                continue
            k, ext = split_name(info.name)
            if k != key:
                if key is not None:
                    _finish(scan, key, members, dupes, seen, rule, text, refused)
                key, members, dupes, refused = k, {}, [], None
            if ext in members:
                dupes.append(ext)
            refused = refused or refuse_member(info, ext)
            members[ext] = b"" if refused or member_limit(ext) is None else tar.extractfile(info).read()
        if key is not None:
            _finish(scan, key, members, dupes, seen, rule, text, refused)
        _check_end(tar)


def _finish(scan: ShardScan, key: str, members: dict[str, bytes], dupes: list[str], seen: set[str], rule: str,
            text: TextConfig, refused: tuple[str, str] | None = None) -> None:
    try:
        if key in seen:  # the loader groups adjacent members only: a KEY met again would be a second sample
            raise Unusable("duplicate_key", "the KEY appears again further on in the shard")
        if refused:
            raise Unusable(*refused)
        if dupes:
            raise Unusable("duplicate_member", f"members {sorted(dupes)} appear twice")
        duration = check_group(members, rule, text)
    except Unusable as exc:
        scan.durations.append(None)
        scan.rejects.append((f"{scan.path}#{key}", exc.reason, exc.detail))
    else:
        scan.durations.append(duration)
        claimed = _json_duration(members.get("json"))
        if claimed is not None and abs(claimed - duration) > JSON_DURATION_TOLERANCE_S:
            scan.json_mismatch += 1
            scan.mismatch_example = scan.mismatch_example or f"{key}: json {claimed:g} s, header {duration:.3f} s"
    seen.add(key)


def _check_end(tar: tarfile.TarFile) -> None:
    """tarfile ends quietly at a damaged or missing header in mid-file. A whole tar ends with a zero block (which
    tarfile has just read) and zero padding; anything else is a damaged or truncated shard. Reading to the end
    also lets a pipe's command finish."""
    where = tar.offset
    if tar.fileobj.tell() - where < tarfile.BLOCKSIZE:
        raise tarfile.ReadError(f"the archive stops at byte {where} without its end-of-archive blocks (truncated?)")
    while chunk := tar.fileobj.read(1 << 20):
        if chunk.strip(b"\0"):
            raise tarfile.ReadError(f"data after the end of the archive at byte {where} (a damaged member header?)")


def _json(data: bytes):
    try:
        return json.loads(data)
    except ValueError as exc:
        raise Unusable("bad_json", str(exc)) from None


def _json_duration(data: bytes | None) -> float | None:
    if data is None:
        return None
    try:
        value = json.loads(data).get("duration")
        return float(value) if value is not None and math.isfinite(float(value)) else None
    except (ValueError, TypeError, AttributeError):  # not a number: nothing to compare with
        return None


def split_name(name: str) -> tuple[str, str]:
    """WebDataset's rule: KEY / extension split at the first dot of the last path component (the loader's, stats'
    and `fastasr index`'s; here because this module is torch-free)."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return name, ""
    return name[:dot], name[dot + 1 :]
