"""Branches of an investigation (FP-028, FP-029): branch map, per-branch history, cross-branch summary."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from sqlalchemy import ColumnElement, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from deskpilot.pilot.models import ForkPoint, PilotSession, SessionBranch, SessionMessage, SessionStep
from deskpilot.pilot.schemas import BranchNode, BranchStatus
from deskpilot.storage import utcnow

ROOT_LABEL: Final = "Main line"
# The other branches' summary in a branch's prompt is capped near 4K tokens (FP-029), estimated at 4 characters
# a token: no tokenizer is loaded for an estimate.
CONTEXT_TOKENS: Final = 4000
CHARS_PER_TOKEN: Final = 4
CONTEXT_CHARS: Final = CONTEXT_TOKENS * CHARS_PER_TOKEN
MAX_FINDINGS: Final = 30
FINDING_CHARS: Final = 300
OPEN_STATUSES: Final[frozenset[str]] = frozenset({"untried", "active", "revived"})
CLOSED_STATUSES: Final[frozenset[str]] = frozenset({"dead_end", "solved"})

_STATUS_WORDS: Final = {
    "untried": "untried",
    "active": "in progress",
    "revived": "reopened",
    "dead_end": "dead end",
    "solved": "solved",
}


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- pure -----------------------------------------------------------------------------------


def finding_line(step_text: str, response_text: str) -> str:
    """One finding of a branch: the step and what the engineer answered, on one short line."""
    return _clip(f"{step_text} → {response_text}", FINDING_CHARS)


def with_finding(findings: Sequence[str], line: str) -> list[str]:
    """The findings with `line` appended, keeping the latest MAX_FINDINGS."""
    return [*findings, line][-MAX_FINDINGS:]


def child_lineage(
    parent_lineage: Sequence[Sequence[str | int]], parent_id: uuid.UUID, last_seq: int
) -> list[list[str | int]]:
    """A child's lineage: its parent's, then the parent itself up to the fork's last message."""
    lineage: list[list[str | int]] = [[str(b), int(s)] for b, s in parent_lineage]
    lineage.append([str(parent_id), last_seq])
    return lineage


def ancestor_ids(lineage: Sequence[Sequence[str | int]]) -> set[uuid.UUID]:
    return {uuid.UUID(str(entry[0])) for entry in lineage}


@dataclass(frozen=True, slots=True)
class BranchDigest:
    """What a branch's siblings learn about it: name, state, hypothesis and findings."""

    label: str
    status: str
    description: str
    findings: Sequence[str]


def _digest_text(digest: BranchDigest, budget: int) -> str:
    head = f'- "{digest.label}" ({_STATUS_WORDS.get(digest.status, digest.status)})'
    if digest.description.strip():
        head += f": {_clip(digest.description, 300)}"
    if len(head) >= budget:
        return _clip(head, budget)
    lines = [head]
    used = len(head)
    # Latest findings first when the budget is short: they carry what the branch concluded.
    kept: list[str] = []
    for finding in reversed(digest.findings):
        line = f"    • {finding}"
        if used + len(line) + 1 > budget:
            break
        kept.append(line)
        used += len(line) + 1
    if len(kept) < len(digest.findings):
        omitted = len(digest.findings) - len(kept)
        note = f"    • … {omitted} earlier finding{'s' if omitted != 1 else ''} left out"
        if used + len(note) + 1 <= budget or not kept:
            lines.append(note)
    lines.extend(reversed(kept))
    return "\n".join(lines)


def sibling_summary(digests: Sequence[BranchDigest], cap_chars: int = CONTEXT_CHARS) -> str:
    """A compact summary of the other branches for a branch's prompt, at most `cap_chars` characters.

    Each branch gets an equal share of the budget, so one long branch cannot crowd out the others.
    """
    if not digests or cap_chars <= 0:
        return ""
    share = max(cap_chars // len(digests) - 1, 1)
    text = "\n".join(_digest_text(d, share) for d in digests)
    return text if len(text) <= cap_chars else text[: cap_chars - 1] + "…"


def build_tree(branches: Sequence[SessionBranch], active_id: uuid.UUID | None) -> list[BranchNode]:
    """The branch map as a forest of nodes (normally one root), children in the order they were offered."""
    nodes = {
        b.id: BranchNode(
            id=b.id, parent_branch_id=b.parent_branch_id, fork_point_id=b.fork_point_id, label=b.label,
            description=b.description, status=_status(b.status), is_active=b.id == active_id,
            findings=list(b.findings),
        )
        for b in sorted(branches, key=lambda b: (b.created_at, b.position))
    }
    roots: list[BranchNode] = []
    for node in nodes.values():
        parent = nodes.get(node.parent_branch_id) if node.parent_branch_id is not None else None
        if parent is None:
            roots.append(node)
        else:
            parent.children.append(node)
    return roots


def _status(value: str) -> BranchStatus:
    match value:
        case "untried" | "active" | "dead_end" | "solved" | "revived":
            return value
        case _:
            return "active"


def siblings_for(branch: SessionBranch, branches: Iterable[SessionBranch]) -> list[BranchDigest]:
    """Digests of every branch that is neither `branch` nor one of its ancestors (whose history it already has)."""
    skip = ancestor_ids(branch.lineage) | {branch.id}
    return [
        BranchDigest(b.label, b.status, b.description, list(b.findings))
        for b in sorted(branches, key=lambda b: (b.created_at, b.position))
        if b.id not in skip
    ]


def branch_after_closing(target: SessionBranch, branches: Iterable[SessionBranch]) -> SessionBranch | None:
    """Where work goes on when the active branch is marked closed: its first open sibling, else its parent."""
    rows = list(branches)
    siblings = sorted(
        (b for b in rows if b.parent_branch_id == target.parent_branch_id and b.id != target.id),
        key=lambda b: b.position,
    )
    following = next((b for b in siblings if b.status in OPEN_STATUSES), None)
    return following or next((b for b in rows if b.id == target.parent_branch_id), None)


def history_filter(session_id: uuid.UUID, branch: SessionBranch | None) -> ColumnElement[bool]:
    """The WHERE clause selecting a branch's messages: ancestors' up to their fork, then its own.

    A guided session's steps and answers are entries too (`step_history_filter`); a chat has only messages.
    """
    if branch is None:
        return and_(SessionMessage.session_id == session_id, SessionMessage.branch_id.is_(None))
    parts: list[ColumnElement[bool]] = [SessionMessage.branch_id == branch.id]
    for branch_id, last_seq in branch.lineage:
        parts.append(and_(SessionMessage.branch_id == uuid.UUID(str(branch_id)), SessionMessage.seq <= int(last_seq)))
    return and_(SessionMessage.session_id == session_id, or_(*parts))


def step_history_filter(branch: SessionBranch) -> ColumnElement[bool]:
    """`history_filter`'s branch part for the steps, whose entries are the step (`seq`) and its answer
    (`response_seq`): a row of an ancestor is read when either entry precedes the fork; `lineage_limits` then cuts
    the entries one by one."""
    parts: list[ColumnElement[bool]] = [SessionStep.branch_id == branch.id]
    for branch_id, last_seq in branch.lineage:
        limit = int(last_seq)
        parts.append(and_(
            SessionStep.branch_id == uuid.UUID(str(branch_id)),
            or_(SessionStep.seq <= limit, SessionStep.response_seq <= limit),
        ))
    return or_(*parts)


def lineage_limits(branch: SessionBranch) -> dict[uuid.UUID | None, int]:
    """The last seq each ancestor contributes to `branch`'s history (the branch itself has no limit)."""
    return {uuid.UUID(str(branch_id)): int(last_seq) for branch_id, last_seq in branch.lineage}


# --- rows -----------------------------------------------------------------------------------


async def load_branches(db: AsyncSession, session_id: uuid.UUID) -> list[SessionBranch]:
    return list((await db.scalars(select(SessionBranch).where(SessionBranch.session_id == session_id))).all())


async def create_root(db: AsyncSession, session: PilotSession) -> SessionBranch:
    """Start branching: a root branch takes over every step and message written so far (FP-028)."""
    root = SessionBranch(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, label=ROOT_LABEL,
        description=session.problem_summary or "", status="active", position=0, lineage=[], findings=[],
        created_at=utcnow(),
    )
    db.add(root)
    for table in (SessionStep, SessionMessage):
        await db.execute(
            update(table)
            .where(table.session_id == session.id, table.branch_id.is_(None))
            .values(branch_id=root.id)
            .execution_options(synchronize_session=False)
        )
    session.is_branching = True
    session.active_branch_id = root.id
    return root


@dataclass(frozen=True, slots=True)
class Fork:
    point: ForkPoint
    branches: list[SessionBranch]


class ForkChoice(Protocol):
    """One hypothesis of a fork, whichever step or chat event offered it."""

    @property
    def label(self) -> str: ...

    @property
    def description(self) -> str: ...

    def model_dump(self) -> dict[str, Any]: ...


def create_fork(
    db: AsyncSession,
    session: PilotSession,
    parent: SessionBranch,
    trigger_id: uuid.UUID,
    reason: str,
    options: Sequence[ForkChoice],
    last_seq: int,
) -> Fork:
    """Add a fork point and one untried branch per option; ids are made here so one flush writes them all.

    `trigger_id` is what forked: a guided session's fork step, or a chat's assistant message.
    """
    point = ForkPoint(
        id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, parent_branch_id=parent.id,
        trigger_step_id=trigger_id, fork_reason=reason,
        options=[o.model_dump() for o in options], created_at=utcnow(),
    )
    lineage = child_lineage(parent.lineage, parent.id, last_seq)
    now = utcnow()
    children = [
        SessionBranch(
            id=uuid.uuid4(), account_id=session.account_id, session_id=session.id, parent_branch_id=parent.id,
            fork_point_id=point.id, label=option.label, description=option.description, status="untried",
            position=i, lineage=lineage, findings=[], created_at=now,
        )
        for i, option in enumerate(options)
    ]
    db.add(point)
    db.add_all(children)
    return Fork(point, children)
