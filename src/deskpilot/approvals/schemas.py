"""API shapes of the approvals domain: a request as shown, a decision, a resume batch item, the interrupt payload."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from deskpilot.approvals.models import (
    MAX_REASON,
    MAX_TOOL_CALL_ID,
    ApprovalRequest,
    ApprovalStatus,
    Decision,
    SourceKind,
)

Reason = Annotated[str, StringConstraints(strip_whitespace=True, max_length=MAX_REASON)]


class ApprovalOut(BaseModel):
    """One approval request. `status` is effective: a pending request past `expires_at` reads `expired`."""

    id: uuid.UUID
    source_kind: SourceKind
    source_id: uuid.UUID
    session_id: uuid.UUID | None
    requested_by_id: uuid.UUID | None
    tool_name: str
    tool_call_id: str
    arguments: dict[str, Any]
    edited_arguments: dict[str, Any] | None
    arguments_sha256: str
    summary: str
    status: ApprovalStatus
    decision: Decision | None
    decided_by_id: uuid.UUID | None
    decided_at: datetime | None
    reason: str | None
    expires_at: datetime
    executed_at: datetime | None
    result: str | None
    created_at: datetime

    @classmethod
    def of(cls, request: ApprovalRequest, now: datetime) -> ApprovalOut:
        status = request.status
        if status is ApprovalStatus.PENDING and request.expires_at <= now:
            status = ApprovalStatus.EXPIRED
        return cls(
            id=request.id,
            source_kind=request.source_kind,
            source_id=request.source_id,
            session_id=request.session_id,
            requested_by_id=request.requested_by_id,
            tool_name=request.tool_name,
            tool_call_id=request.tool_call_id,
            arguments=request.arguments,
            edited_arguments=request.edited_arguments,
            arguments_sha256=request.arguments_sha256,
            summary=request.summary,
            status=status,
            decision=request.decision,
            decided_by_id=request.decided_by_id,
            decided_at=request.decided_at,
            reason=request.reason,
            expires_at=request.expires_at,
            executed_at=request.executed_at,
            result=request.result,
            created_at=request.created_at,
        )


class ApprovalPage(BaseModel):
    """A page of approval requests, newest first; `total` counts every match, not only this page."""

    items: list[ApprovalOut]
    total: int
    limit: int
    offset: int


class DecisionIn(BaseModel):
    """A decision on one request: `edited_arguments` only (and always) with `edit`; `reason` is optional."""

    model_config = ConfigDict(extra="forbid")

    decision: Decision
    edited_arguments: dict[str, Any] | None = None
    reason: Reason | None = None


class ResumeDecision(DecisionIn):
    """One decision of a resume request (SS-042), routed to its paused call by `request_id` or `tool_call_id`."""

    request_id: uuid.UUID | None = None
    tool_call_id: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TOOL_CALL_ID)] | None = None

    @model_validator(mode="after")
    def _names_one_call(self) -> ResumeDecision:
        if self.request_id is None and self.tool_call_id is None:
            raise ValueError("name the paused call with request_id or tool_call_id")
        return self


class ActionRequest(BaseModel):
    name: str
    args: dict[str, Any]
    approval_id: uuid.UUID
    tool_call_id: str
    summary: str
    expires_at: datetime


class ReviewConfig(BaseModel):
    action_name: str
    allowed_decisions: list[Decision]


class InterruptRequest(BaseModel):
    """The `data-interrupt-request` payload (SS-041): the paused calls and the decisions each one allows."""

    action_requests: list[ActionRequest]
    review_configs: list[ReviewConfig]
    interrupt_type: Literal["approval"] = "approval"
    context: dict[str, Any] = Field(default_factory=dict)
    message: str | None = None

    @classmethod
    def of(cls, requests: Sequence[ApprovalRequest], *, message: str | None = None) -> InterruptRequest:
        """Normalise pending requests into one interrupt; `approve_always` is offered only inside a session."""
        configs: dict[str, ReviewConfig] = {}
        for r in requests:
            allowed = [Decision.APPROVE, Decision.EDIT, Decision.REJECT]
            if r.session_id is not None:
                allowed.append(Decision.APPROVE_ALWAYS)
            configs.setdefault(r.tool_name, ReviewConfig(action_name=r.tool_name, allowed_decisions=allowed))
        source = requests[0] if requests else None
        return cls(
            action_requests=[
                ActionRequest(
                    name=r.tool_name,
                    args=r.arguments,
                    approval_id=r.id,
                    tool_call_id=r.tool_call_id,
                    summary=r.summary,
                    expires_at=r.expires_at,
                )
                for r in requests
            ],
            review_configs=list(configs.values()),
            context={"source_kind": source.source_kind.value, "source_id": str(source.source_id)} if source else {},
            message=message,
        )
