"""Confidence tiers (FP-010..FP-012): pure mapping from a confidence score to discovery / exploring / guided."""

from __future__ import annotations

from typing import Final, Literal, TypeAlias

ConfidenceTier: TypeAlias = Literal["discovery", "exploring", "guided"]

GUIDED_AT: Final = 0.8
EXPLORING_AT: Final = 0.4
# A flow matched this strongly at start makes the session guided from its first step (FP-011).
FORCE_GUIDED_MATCH_SCORE: Final = 0.8


def clamp(confidence: float) -> float:
    """A score within 0..1; models sometimes answer 1.2 or -0.1, which is not worth a corrective retry."""
    return min(max(confidence, 0.0), 1.0)


def confidence_to_tier(confidence: float) -> ConfidenceTier:
    """≥0.8 guided, ≥0.4 exploring, else discovery (FP-010)."""
    if confidence >= GUIDED_AT:
        return "guided"
    if confidence >= EXPLORING_AT:
        return "exploring"
    return "discovery"


def initial_confidence(step_confidence: float, top_match_score: float | None) -> tuple[float, ConfidenceTier]:
    """Confidence and tier at session start (FP-011).

    A flow matched with a score above 0.8 forces the guided tier and lifts the confidence to at least 0.8.
    """
    confidence = clamp(step_confidence)
    if top_match_score is not None and top_match_score > FORCE_GUIDED_MATCH_SCORE:
        return max(confidence, GUIDED_AT), "guided"
    return confidence, confidence_to_tier(confidence)


def next_confidence(step_confidence: float | None, previous: float) -> tuple[float, ConfidenceTier]:
    """Confidence and tier after a later step (FP-012): the step's own confidence, or the previous one.

    No match floor applies after the start: a session that matched a flow can drop back to exploring.
    """
    confidence = previous if step_confidence is None else clamp(step_confidence)
    return confidence, confidence_to_tier(confidence)
