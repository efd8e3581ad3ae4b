"""Match scoring maths: terms, coverage, domain, success prior, recency and the Pilot thresholds."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deskpilot.knowledge import matching
from deskpilot.knowledge.matching import Candidate
from deskpilot.knowledge.models import ProblemDomain

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
OUTLOOK = Candidate(
    flow_id=uuid.uuid4(), name="Outlook keeps asking for credentials", problem_domain=ProblemDomain.M365,
    key_text="Outlook keeps asking for credentials\noutlook\npassword prompt\nOutlook keeps asking for the password",
    body_text="Remove cached credentials in Credential Manager. Create a new profile.", rank=8.0,
)
PRINTER = Candidate(
    flow_id=uuid.uuid4(), name="Printing fails", problem_domain=ProblemDomain.PRINTING,
    key_text="Printing fails\nprinter\nspooler\njobs stuck in queue",
    body_text="Restart the spooler. Ask whether Outlook attachments print.", rank=1.0,
)


def test_stem_and_query_words() -> None:
    assert matching.stem("prompts") == matching.stem("prompt") == "prompt"
    assert matching.stem("policies") == "policy"
    assert matching.stem("connection") == matching.stem("connecting") == matching.stem("connected") == "connect"
    assert matching.stem("running") == "run"
    assert matching.stem("access") == "access"
    words = matching.query_words("The user's Outlook keeps asking for a password!! Error 0x80070005, code 12 / 550")
    assert words == ["outlook", "asking", "password", "error", "0x80070005", "code", "550"]
    assert len(matching.query_words(" ".join(f"word{i}" for i in range(100)))) == matching.MAX_QUERY_TERMS


def test_coverage_weights_key_body_and_prefix_hits() -> None:
    full = matching.coverage(["outlook", "password"], OUTLOOK.key_text, OUTLOOK.body_text)
    assert full.value == 1.0
    assert full.key_hits == ("outlook", "password")
    body_only = matching.coverage(["cached", "profile"], OUTLOOK.key_text, OUTLOOK.body_text)
    assert body_only.value == pytest.approx(0.5)
    assert body_only.body_hits == ("cached", "profile")
    # "cred" is a prefix of "credentials": half weight; a single word is judged against a floor of 2.
    assert matching.coverage(["cred"], OUTLOOK.key_text, "").value == pytest.approx(0.25)
    assert matching.coverage([], OUTLOOK.key_text, "").value == 0
    chatty = [f"noise{i}" for i in range(20)] + ["outlook", "password", "asking"]
    assert matching.coverage(chatty, OUTLOOK.key_text, "").value == pytest.approx(3 / matching.COVERAGE_CAP)


def test_domain_agreement() -> None:
    assert matching.domain_agreement(ProblemDomain.M365, ProblemDomain.M365) == 1
    assert matching.domain_agreement(ProblemDomain.EMAIL, ProblemDomain.M365) == 0.5
    assert matching.domain_agreement(None, ProblemDomain.M365) == 0.5
    assert matching.domain_agreement(ProblemDomain.OTHER, ProblemDomain.PRINTING) == 0.5
    assert matching.domain_agreement(ProblemDomain.PRINTING, ProblemDomain.OTHER) == 0.5
    assert matching.domain_agreement(ProblemDomain.PRINTING, ProblemDomain.M365) == 0


def test_success_rate_and_prior() -> None:
    assert matching.success_rate(0, 0) is None
    assert matching.success_rate(2, 3) == 0.667
    assert matching.success_rate(1, 7) == 0.143
    assert matching.success_rate(5, 3) == 1.0
    assert matching.success_prior(0, 0) == 0.5
    assert matching.success_prior(9, 10) == pytest.approx(10 / 12)
    assert matching.success_prior(0, 10) == pytest.approx(1 / 12)


def test_recency_halves_every_thirty_days() -> None:
    assert matching.recency(None, NOW) == 0
    assert matching.recency(NOW, NOW) == 1
    assert matching.recency(NOW - timedelta(days=30), NOW) == pytest.approx(0.5)
    assert matching.recency(NOW + timedelta(days=1), NOW) == 1


def test_specific_match_clears_the_guided_threshold_and_noise_stays_below_half() -> None:
    strong, weak = matching.score_candidates([OUTLOOK, PRINTER], "Outlook keeps asking for my password",
                                             ProblemDomain.M365, NOW, limit=5)
    assert strong.flow_id == OUTLOOK.flow_id
    assert strong.score == 0.9  # 0.70 text + 0.15 domain + 0.10 * 0.5 untried + 0 never matched
    assert strong.score > 0.8
    assert weak.score < 0.5
    assert "same problem domain (m365)" in strong.reasons
    assert any("different problem domain" in r for r in weak.reasons)
    (unrelated,) = matching.score_candidates([PRINTER], "outlook attachments", ProblemDomain.M365, NOW, 5)
    assert unrelated.score < 0.5


def test_history_moves_the_score() -> None:
    proven = replace(OUTLOOK, matched_count=20, resolved_count=19, last_matched_at=NOW - timedelta(days=1))
    failing = replace(OUTLOOK, matched_count=20, resolved_count=1)
    good = matching.score_candidate(proven, ["outlook", "password"], ProblemDomain.M365, 8.0, NOW)
    bad = matching.score_candidate(failing, ["outlook", "password"], ProblemDomain.M365, 8.0, NOW)
    assert good.score > 0.9 > bad.score
    assert "resolved 19 of 20 matched sessions" in good.reasons
    assert "last matched 1 days ago" in good.reasons


def test_limit_and_tie_break() -> None:
    twin = replace(OUTLOOK, flow_id=uuid.uuid4(), name="Another Outlook flow")
    ranked = matching.score_candidates([OUTLOOK, twin, PRINTER], "outlook password", None, NOW, limit=2)
    assert [s.name for s in ranked] == ["Another Outlook flow", "Outlook keeps asking for credentials"]


def test_search_texts() -> None:
    keywords, body = matching.search_texts("N", "Desc", ["t1"], ["s1"], ["node a", "node b"])
    assert keywords == "t1\ns1"
    assert body == "Desc\nnode a\nnode b"


@settings(max_examples=150, deadline=None)
@given(
    text=st.text(max_size=200),
    rank=st.floats(min_value=0, max_value=1e6),
    best=st.floats(min_value=0, max_value=1e6),
    matched=st.integers(min_value=0, max_value=10_000),
    resolved=st.integers(min_value=0, max_value=10_000),
    days=st.one_of(st.none(), st.integers(min_value=-5, max_value=5000)),
    domain=st.one_of(st.none(), st.sampled_from(ProblemDomain)),
)
def test_scores_stay_between_zero_and_one(
    text: str, rank: float, best: float, matched: int, resolved: int, days: int | None, domain: ProblemDomain | None
) -> None:
    candidate = Candidate(
        flow_id=uuid.uuid4(), name="x", problem_domain=ProblemDomain.NETWORKING, key_text=text, body_text=text,
        rank=rank, matched_count=matched, resolved_count=resolved,
        last_matched_at=None if days is None else NOW - timedelta(days=days),
    )
    scored = matching.score_candidate(candidate, matching.query_words(text), domain, max(rank, best), NOW)
    assert 0 <= scored.score <= 1


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.text(alphabet="abcdeilnorst", min_size=2, max_size=9), max_size=30),
    st.lists(st.text(alphabet="abcdeilnorst", min_size=1, max_size=11), min_size=1, max_size=10),
)
def test_vocabulary_finds_what_the_plain_walk_finds(words: list[str], terms: list[str]) -> None:
    text = " ".join(words)
    vocabulary = matching.vocabulary(text)
    assert vocabulary.stems == matching.stems(text)
    for term in [*terms, *(w[: len(w) - 1] for w in words), *(w + "ing" for w in words)]:
        assert vocabulary.found(term) == matching._found(term, matching.stems(text))
