"""Linear-time parser of the chat reply's marker blocks ([FORK] … [FIX_OUTCOME]) into typed events and visible text."""

from __future__ import annotations

import heapq
import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Final, assert_never

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

_NAMES: Final[dict[str, MarkerName]] = {m: m for m in MARKERS}
_LONGEST_TAG: Final = max(len(m) for m in MARKERS) + 1  # "/" + name
_FENCE_CHARS: Final = ("`", "~")
_WS: Final = " \t\r\n\f\v"

# Token kinds.
_OPEN: Final = 0
_CLOSE: Final = 1
_FENCE: Final = 2


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


@dataclass(frozen=True, slots=True)
class _Token:
    pos: int
    end: int
    kind: int
    name: MarkerName | None = None
    # Fences only: the fence character, its run length, and whether the line may open / close a fence.
    char: str = ""
    run: int = 0
    opens: bool = False
    closes: bool = False
    complete: bool = True  # the fence line ends with a newline (not cut by the stream)
    literal: bool = False  # a tag right after a backtick: inline code, while that backtick is shown


@dataclass(slots=True)
class _Block:
    name: MarkerName
    pos: int
    body: str


@dataclass(slots=True)
class _Scan:
    segments: list[str] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)
    problems: list[MarkerProblem] = field(default_factory=list)


def _tag_tokens(text: str) -> list[_Token]:
    """Every `[NAME]` / `[/NAME]` (ASCII, any case); those right after a backtick are marked literal."""
    tokens: list[_Token] = []
    find = text.find
    i = find("[")
    while i != -1:
        j = find("]", i + 1, i + 2 + _LONGEST_TAG)
        if j == -1:
            i = find("[", i + 1)
            continue
        inner = text[i + 1 : j]
        closing = inner.startswith("/")
        name = _NAMES.get((inner[1:] if closing else inner).upper()) if inner.isascii() else None
        if name is None:
            i = find("[", i + 1)
            continue
        tokens.append(_Token(i, j + 1, _CLOSE if closing else _OPEN, name, literal=i > 0 and text[i - 1] == "`"))
        i = find("[", j + 1)
    return tokens


def _fence_tokens(text: str, char: str) -> list[_Token]:
    """Lines that start (after at most three spaces) with three or more `char`: candidate code fences."""
    tokens: list[_Token] = []
    needle = char * 3
    find = text.find
    i = find(needle)
    while i != -1:
        start = i
        while start > 0 and text[start - 1] == " " and i - start < 3:
            start -= 1
        if start != 0 and text[start - 1] != "\n":
            i = find(needle, i + 3)
            continue
        line_end = find("\n", i)
        complete = line_end != -1
        if not complete:
            line_end = len(text)
        line = text[i:line_end]
        run = len(line) - len(line.lstrip(char))
        rest = line[run:]
        tokens.append(
            _Token(
                i,
                line_end,
                _FENCE,
                char=char,
                run=run,
                opens=char == "~" or "`" not in rest,
                closes=not rest.strip(),
                complete=complete,
            )
        )
        i = find(needle, line_end)
    return tokens


def _tokens(text: str) -> list[_Token]:
    fences = heapq.merge(_fence_tokens(text, "`"), _fence_tokens(text, "~"), key=lambda t: t.pos)
    return list(heapq.merge(_tag_tokens(text), fences, key=lambda t: t.pos))


def _unclosed_body_end(text: str, start: int, limit: int) -> int | None:
    """Where a JSON body right after an unclosed tag ends (searching no further than `limit`).

    None when no body starts there (a lone tag), -1 when one starts but does not parse (cut off or broken).
    """
    window = text[start : min(limit, start + _BODY_LOOKAHEAD)]
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
        _, used = json.JSONDecoder().raw_decode(region)
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
    tokens = _tokens(text)
    # Per marker, the indexes of its open and close tokens, walked with forward-only cursors.
    opens: dict[MarkerName, list[int]] = defaultdict(list)
    closes: dict[MarkerName, list[int]] = defaultdict(list)
    for index, token in enumerate(tokens):
        if token.name is not None and not token.literal:
            (opens if token.kind == _OPEN else closes)[token.name].append(index)
    open_cursor: dict[MarkerName, int] = defaultdict(int)
    close_cursor: dict[MarkerName, int] = defaultdict(int)

    def next_of(indexes: list[int], cursors: dict[MarkerName, int], name: MarkerName, after: int) -> int | None:
        k = cursors[name]
        while k < len(indexes) and indexes[k] <= after:
            k += 1
        cursors[name] = k
        return indexes[k] if k < len(indexes) else None

    cursor = 0  # start of the text not yet copied or dropped
    i = 0
    n = len(tokens)
    while i < n:
        token = tokens[i]
        if token.pos < cursor:
            i += 1
            continue
        if token.kind == _FENCE:
            if streaming and not token.complete:
                scan.segments.append(text[cursor : token.pos])
                return scan, token.pos
            if not token.opens:
                i += 1
                continue
            # Fenced code: everything up to the closing fence is shown as is, markers included.
            j = i + 1
            while j < n:
                other = tokens[j]
                if other.kind == _FENCE and other.char == token.char and other.run >= token.run and other.closes:
                    break
                j += 1
            if j == n:
                break
            if streaming and not tokens[j].complete:
                scan.segments.append(text[cursor : tokens[j].pos])
                return scan, tokens[j].pos
            i = j + 1
            continue
        name = token.name
        assert name is not None
        if token.literal and token.pos > cursor:
            i += 1
            continue
        if token.kind == _CLOSE:
            scan.segments.append(text[cursor : token.pos])
            cursor = token.end
            scan.problems.append(MarkerProblem(name, token.pos, f"stray [/{name}] without an opening tag removed"))
            i += 1
            continue
        close = next_of(closes[name], close_cursor, name, i)
        again = next_of(opens[name], open_cursor, name, i)
        if close is not None and (again is None or close < again):
            end = tokens[close]
            scan.segments.append(text[cursor : token.pos])
            scan.blocks.append(_Block(name, token.pos, text[token.end : end.pos]))
            cursor = end.end
            i = close + 1
            continue
        if streaming:
            scan.segments.append(text[cursor : token.pos])
            return scan, token.pos
        # Unclosed: drop the tag and, when a JSON body follows it, that body (to the next tag if it is cut off).
        scan.segments.append(text[cursor : token.pos])
        following = next((k for k in range(i + 1, n) if tokens[k].kind == _OPEN), None)
        limit = tokens[following].pos if following is not None else len(text)
        body_end = _unclosed_body_end(text, token.end, limit)
        if body_end is None:
            cursor = token.end
            reason = f"unclosed [{name}] tag removed"
        elif body_end == -1:
            cursor = limit
            reason = f"unclosed [{name}] block with a cut-off or broken body dropped"
        else:
            cursor = body_end
            reason = f"unclosed [{name}] block dropped"
        scan.problems.append(MarkerProblem(name, token.pos, reason))
        i += 1
    scan.segments.append(text[cursor:])
    return scan, len(text)


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
