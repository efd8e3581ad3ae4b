"""Linear-time parser of the chat reply's marker blocks ([FORK] … [FIX_OUTCOME]) into typed events and visible text."""

from __future__ import annotations

import gc
import json
import re
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final, NamedTuple, assert_never

from deskpilot.chat.events import (
    MARKERS,
    ChatEvent,
    MarkerName,
    PromotedFact,
    decode_fact,
    decode_payload,
    event_marker,
    merge_facts,
)

# A block body longer than this is dropped unread: no honest marker payload comes near it.
MAX_BLOCK_CHARS: Final = 64_000
# How far past an unclosed tag we look for the start of a JSON body.
_BODY_LOOKAHEAD: Final = 256
# UC-006: task-lane status markers the console writes into user messages, and what is stored instead.
USER_MESSAGE_REPLACEMENTS: Final[tuple[tuple[str, str], ...]] = (
    ("_(not yet completed)_", "(pending)"),
    ("_(skipped)_", "(skipped)"),
)

_LONGEST_TAG: Final = max(len(m) for m in MARKERS) + 1  # "/" + name
_FENCE_CHARS: Final = ("`", "~")
_DECODER: Final = json.JSONDecoder()
_WS: Final = " \t\r\n\f\v"


@dataclass(frozen=True, slots=True)
class MarkerProblem:
    """A marker block (or part of one) that was dropped; `position` is the offset of its tag in the raw reply."""

    marker: MarkerName
    position: int
    reason: str


@dataclass(frozen=True, slots=True)
class ParsedReply:
    """What a reply gave: the text shown and stored (UC-006), the events in spec order, and what was dropped."""

    visible: str
    events: tuple[ChatEvent, ...] = ()
    problems: tuple[MarkerProblem, ...] = ()

    def event(self, marker: MarkerName) -> ChatEvent | None:
        """The event `marker` produced this turn, if any."""
        return next((e for e in self.events if event_marker(e) == marker), None)

    def summary(self, raw_length: int) -> dict[str, int | bool]:
        """UC-014: the per-turn log line's fields (booleans, counts, raw vs visible length)."""
        found = {event_marker(e) for e in self.events}
        data: dict[str, int | bool] = {m.lower(): m in found for m in MARKERS}
        data.update(problems=len(self.problems), raw_length=raw_length, display_length=len(self.visible))
        return data


class _Block(NamedTuple):
    name: MarkerName
    pos: int
    body: str


@dataclass(slots=True)
class _Scan:
    segments: list[str] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)
    problems: list[MarkerProblem] = field(default_factory=list)


# Tokens are kept as parallel lists of ints (no object per tag or fence, which the garbage collector would walk).
# A tag's code: marker index << 2 | closing << 1 | literal (right after a backtick: inline code while shown).
_TAG_CODES: Final[dict[str, int]] = {
    **{f"[{m}]": k << 2 for k, m in enumerate(MARKERS)},
    **{f"[/{m}]": k << 2 | 2 for k, m in enumerate(MARKERS)},
}
_TAG_RE: Final = re.compile(r"\[/?(?:" + "|".join(MARKERS) + r")\]", re.IGNORECASE | re.ASCII)
_CLOSING: Final = 2
_LITERAL: Final = 1
# A fence's flags: whether its line may open / close a fence, ends with a newline (not cut by the stream), is `~`.
_OPENS: Final = 1
_CLOSES: Final = 2
_COMPLETE: Final = 4
_TILDE: Final = 8


def _tag_tokens(text: str) -> tuple[list[int], list[int], list[int]]:
    """Every `[NAME]` / `[/NAME]` (ASCII, any case): start offsets, end offsets and codes."""
    starts: list[int] = []
    ends: list[int] = []
    codes: list[int] = []
    codes_of = _TAG_CODES
    for match in _TAG_RE.finditer(text):
        start, end = match.span()
        starts.append(start)
        ends.append(end)
        code = codes_of[match.group().upper()]
        codes.append(code | _LITERAL if start and text[start - 1] == "`" else code)
    return starts, ends, codes


def _fence_lines(text: str, char: str, fences: tuple[list[int], list[int], list[int], list[int]]) -> None:
    """Lines that start (after at most three spaces) with three or more `char`: candidate code fences."""
    starts, ends, runs, flags_of = fences
    needle = char * 3
    tilde = _TILDE if char == "~" else 0
    find = text.find
    size = len(text)
    i = find(needle)
    while i != -1:
        if i and text[i - 1] != "\n":
            start = i
            while start > 0 and text[start - 1] == " " and i - start < 3:
                start -= 1
            if start != 0 and text[start - 1] != "\n":
                i = find(needle, i + 3)
                continue
        line_end = find("\n", i)
        flags = tilde | _COMPLETE
        if line_end == -1:
            line_end = size
            flags = tilde
        line = text[i:line_end]
        rest = line.lstrip(char)
        if tilde or "`" not in rest:
            flags |= _OPENS
        if not rest.strip():
            flags |= _CLOSES
        starts.append(i)
        ends.append(line_end)
        runs.append(len(line) - len(rest))
        flags_of.append(flags)
        i = find(needle, line_end)


def _fence_tokens(text: str) -> tuple[list[int], list[int], list[int], list[int]]:
    """Both kinds of candidate fence, in text order: starts, line ends, run lengths and flags."""
    fences: tuple[list[int], list[int], list[int], list[int]] = ([], [], [], [])
    _fence_lines(text, "`", fences)
    backticks = len(fences[0])
    _fence_lines(text, "~", fences)
    if 0 < backticks < len(fences[0]):
        order = sorted(range(len(fences[0])), key=fences[0].__getitem__)
        starts, ends, runs, flags = fences
        return (
            [starts[k] for k in order],
            [ends[k] for k in order],
            [runs[k] for k in order],
            [flags[k] for k in order],
        )
    return fences


def _unclosed_body_end(text: str, start: int, limit: int) -> int | None:
    """Where a JSON body right after an unclosed tag ends (searching no further than `limit`).

    None when no body starts there (a lone tag), -1 when one starts but does not parse (cut off or broken).
    """
    stop = min(limit, start + _BODY_LOOKAHEAD)
    if start >= stop:
        return None
    window = text[start:stop]
    skipped = len(window) - len(window.lstrip(_WS))
    if skipped == len(window):
        return None
    pos = start + skipped
    fence = next((c for c in _FENCE_CHARS if text.startswith(c * 3, pos, limit)), None)
    if fence is not None:
        line_end = text.find("\n", pos, limit)
        if line_end == -1:
            return -1
        pos = line_end + 1
    elif text[pos] not in "{[":
        return None
    region = text[pos : min(limit, pos + MAX_BLOCK_CHARS)]
    try:
        _, used = _DECODER.raw_decode(region)
    except (ValueError, RecursionError):
        return -1
    end = pos + used
    if fence is not None:
        tail = text[end : min(limit, end + _BODY_LOOKAHEAD)]
        body = tail.lstrip(_WS)
        if body.startswith(fence * 3):
            end += len(tail) - len(body) + len(body) - len(body.lstrip(fence))
    return end


def _scan(text: str, *, streaming: bool) -> tuple[_Scan, int]:
    """One left-to-right pass: kept text segments and complete blocks; returns the scan and where it stopped.

    In streaming mode the pass stops (without consuming) at the first unclosed open tag and at a fence line the
    stream has not finished, since either may still turn into something else.
    """
    scan = _Scan()
    segments = scan.segments
    problems = scan.problems
    tag_pos, tag_end, tag_code = _tag_tokens(text)
    fence_pos, fence_end, fence_run, fence_flags = _fence_tokens(text)
    del fence_end  # a fenced region's text is kept whole: only where its closing fence starts matters
    # Per marker, the indexes of its (non-literal) open and close tags, walked with forward-only cursors.
    opens: list[list[int]] = [[] for _ in MARKERS]
    closes: list[list[int]] = [[] for _ in MARKERS]
    for index, code in enumerate(tag_code):
        if not code & _LITERAL:
            (closes if code & _CLOSING else opens)[code >> 2].append(index)
    open_cursor = [0] * len(MARKERS)
    close_cursor = [0] * len(MARKERS)

    size = len(text)
    past = size + 1
    tags = len(tag_pos)
    fences = len(fence_pos)
    cursor = 0  # start of the text not yet copied or dropped
    t = 0  # next tag
    f = 0  # next fence
    while True:
        tp = tag_pos[t] if t < tags else past
        fp = fence_pos[f] if f < fences else past
        if fp < tp:
            if fp < cursor:
                f = bisect_left(fence_pos, cursor, f + 1)
                continue
            flags = fence_flags[f]
            if streaming and not flags & _COMPLETE:
                segments.append(text[cursor:fp])
                return scan, fp
            if not flags & _OPENS:
                f += 1
                continue
            # Fenced code: everything up to the closing fence is shown as is, markers included.
            want = (flags & _TILDE) | _CLOSES
            run = fence_run[f]
            j = f + 1
            while j < fences and (fence_flags[j] & (_TILDE | _CLOSES) != want or fence_run[j] < run):
                j += 1
            if j == fences:
                break
            closing = fence_pos[j]
            if streaming and not fence_flags[j] & _COMPLETE:
                segments.append(text[cursor:closing])
                return scan, closing
            f = j + 1
            t = bisect_left(tag_pos, closing, t)
            continue
        if t == tags:
            break
        if tp < cursor:
            t = bisect_left(tag_pos, cursor, t + 1)
            continue
        code = tag_code[t]
        if code & _LITERAL and tp > cursor:
            t += 1
            continue
        marker = code >> 2
        name = MARKERS[marker]
        if code & _CLOSING:
            segments.append(text[cursor:tp])
            cursor = tag_end[t]
            problems.append(MarkerProblem(name, tp, f"stray [/{name}] without an opening tag removed"))
            t += 1
            continue
        indexes = closes[marker]
        k = close_cursor[marker] = bisect_right(indexes, t, close_cursor[marker])
        close = indexes[k] if k < len(indexes) else None
        indexes = opens[marker]
        k = open_cursor[marker] = bisect_right(indexes, t, open_cursor[marker])
        again = indexes[k] if k < len(indexes) else None
        segments.append(text[cursor:tp])
        if close is not None and (again is None or close < again):
            scan.blocks.append(_Block(name, tp, text[tag_end[t] : tag_pos[close]]))
            cursor = tag_end[close]
            t = close + 1
            f = bisect_left(fence_pos, cursor, f)
            continue
        if streaming:
            return scan, tp
        # Unclosed: drop the tag and, when a JSON body follows it, that body (to the next tag if it is cut off).
        following = t + 1
        while following < tags and tag_code[following] & _CLOSING:
            following += 1
        limit = tag_pos[following] if following < tags else size
        body_end = _unclosed_body_end(text, tag_end[t], limit)
        if body_end is None:
            cursor = tag_end[t]
            reason = f"unclosed [{name}] tag removed"
        elif body_end == -1:
            cursor = limit
            reason = f"unclosed [{name}] block with a cut-off or broken body dropped"
        else:
            cursor = body_end
            reason = f"unclosed [{name}] block dropped"
        problems.append(MarkerProblem(name, tp, reason))
        t += 1
    segments.append(text[cursor:])
    return scan, size


def _separator(breaks: int, right: str, right_had_newline: bool) -> str:
    """What replaces removed blocks: a line break (a blank line if one touched them), else one space."""
    if breaks:
        newlines = "\n\n" if breaks >= 2 else "\n"
        # A ``` that followed the block was not at a line start; escaped, it does not become a fence now.
        return newlines + "\\" if right.startswith(("```", "~~~")) and not right_had_newline else newlines
    # Never glue the pieces: a space keeps `[FO` + `RK]` from forming a tag.
    return " "


def _blank_lines(text: str) -> int:
    """Length of the whitespace-only lines that open `text` (the first non-blank line keeps its indentation)."""
    body = text.lstrip(_WS)
    return text.rfind("\n", 0, len(text) - len(body)) + 1


def _join(segments: list[str]) -> str:
    """Kept segments joined where blocks were removed: whitespace at each seam collapsed to one separator."""
    if len(segments) == 1:
        text = segments[0].rstrip(_WS)
        return text[_blank_lines(text) :]
    parts: list[str] = []
    breaks = 0  # the most line breaks in one whitespace run at the current seam
    last = len(segments) - 1
    for k, segment in enumerate(segments):
        if not segment:
            continue  # nothing between two removed blocks: the seam goes on
        core = segment
        lead = ""
        if k > 0:
            # On the seam's own line the text is pulled up to the separator; on a later line it keeps its indent.
            cut = _blank_lines(segment)
            if cut == 0 or not segment[cut:].strip(_WS):
                cut = len(segment) - len(segment.lstrip(_WS))
            lead, core = segment[:cut], segment[cut:]
        trail = ""
        if k < last:
            stripped = core.rstrip(_WS)
            trail = core[len(stripped) :]
            core = stripped
        breaks = max(breaks, lead.count("\n"))
        if core:
            if parts:
                parts.append(_separator(breaks, core, "\n" in lead))
            parts.append(core)
            breaks = 0
        breaks = max(breaks, trail.count("\n"))
    text = "".join(parts).rstrip(_WS)
    return text[_blank_lines(text) :]


def _payload(body: str) -> str:
    """The JSON inside a block body, without a Markdown fence around it."""
    body = body.strip(_WS)
    for char in _FENCE_CHARS:
        if body.startswith(char * 3):
            newline = body.find("\n")
            body = "" if newline == -1 else body[newline + 1 :].rstrip(_WS)
            if body.endswith(char * 3):
                body = body.rstrip(char)
            break
    return body


def _load(block: _Block) -> tuple[object, str | None]:
    if len(block.body) > MAX_BLOCK_CHARS:
        return None, f"[{block.name}] block over {MAX_BLOCK_CHARS} characters dropped"
    try:
        return json.loads(_payload(block.body)), None
    except (ValueError, RecursionError):
        return None, f"[{block.name}] block is not valid JSON"


def _honoured(name: MarkerName, blocks: list[_Block], problems: list[MarkerProblem]) -> list[_Block]:
    """Which blocks of one marker count (UC-008…UC-013); the others are reported as ignored."""
    match name:
        case "FORK" | "ACTIONS" | "QUESTIONS":
            kept, ignored, why = blocks[:1], blocks[1:], f"only the first [{name}] block counts"
        case "SUGGEST_FIX" | "FIX_OUTCOME":
            kept, ignored, why = blocks[-1:], blocks[:-1], f"only the last [{name}] block counts"
        case "PROMOTE":
            kept, ignored, why = blocks, [], ""
        case _:
            assert_never(name)
    problems.extend(MarkerProblem(name, b.pos, why) for b in ignored)
    return kept


def _decode(name: MarkerName, blocks: list[_Block], problems: list[MarkerProblem]) -> ChatEvent | None:
    """The event of one marker's honoured blocks; every block or item dropped on the way becomes a problem."""
    if name == "PROMOTE":
        facts: list[PromotedFact] = []
        for block in blocks:
            payload, error = _load(block)
            fact = error or decode_fact(payload)
            if isinstance(fact, str):
                problems.append(MarkerProblem(name, block.pos, fact))
            else:
                facts.append(fact)
        decoded = merge_facts(facts)
    else:
        payload, error = _load(blocks[0])
        if error is not None:
            problems.append(MarkerProblem(name, blocks[0].pos, error))
            return None
        decoded = decode_payload(name, payload)
    problems.extend(MarkerProblem(name, blocks[0].pos, note) for note in decoded.notes)
    return decoded.event


def parse_reply(text: str) -> ParsedReply:
    """Split a model reply into what is shown (markers stripped, whitespace tidied) and its typed events.

    Never raises: a malformed block is removed from the visible text and reported in `problems`. Blocks inside
    fenced code (or a tag written right after a backtick) are shown as written, not parsed.
    """
    # A tag storm makes tens of thousands of problems and blocks; the cyclic collector would walk them again and
    # again while they pile up (none of them can form a cycle), so it waits until the reply is parsed.
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        return _parse_reply(text)
    finally:
        if collecting:
            gc.enable()


def _parse_reply(text: str) -> ParsedReply:
    scan, _ = _scan(text, streaming=False)
    by_name: dict[MarkerName, list[_Block]] = defaultdict(list)
    for block in scan.blocks:
        by_name[block.name].append(block)
    events: list[ChatEvent] = []
    for name in MARKERS:
        blocks = by_name.get(name)
        if not blocks:
            continue
        event = _decode(name, _honoured(name, blocks, scan.problems), scan.problems)
        if event is not None:
            events.append(event)
    problems = sorted(scan.problems, key=lambda p: p.position)
    return ParsedReply(_join(scan.segments), tuple(events), tuple(problems))


def _held_tail(text: str) -> int:
    """Start of a trailing `[`, `[/`, `[ACT`… that may still become a tag once more text arrives."""
    start = max(0, len(text) - _LONGEST_TAG - 1)
    i = text.find("[", start)
    while i != -1:
        candidate = text[i + 1 :].upper()
        name = candidate[1:] if candidate.startswith("/") else candidate
        if candidate.isascii() and "]" not in candidate and any(m.startswith(name) for m in MARKERS):
            return i
        i = text.find("[", i + 1)
    return len(text)


def visible_prefix(partial: str) -> str:
    """The part of a reply still streaming that can be shown now: a prefix of what `parse_reply` will show.

    Complete blocks are removed; from an unclosed tag (or a tag still being written) on, text is held back.
    """
    held = _held_tail(partial)
    scan, _ = _scan(partial[:held], streaming=True)
    return _join(scan.segments).rstrip(_WS)


def clean_user_message(text: str) -> str:
    """UC-006: the user message as stored, with task-lane status markers neutralised (the AI re-adds them)."""
    for old, new in USER_MESSAGE_REPLACEMENTS:
        text = text.replace(old, new)
    return text
