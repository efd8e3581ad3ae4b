"""Flow match scoring: pure functions from search hits and flow statistics to a 0..1 score."""

from __future__ import annotations

import bisect
import functools
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from deskpilot.knowledge.models import ProblemDomain

W_TEXT = 0.70
W_DOMAIN = 0.15
W_SUCCESS = 0.10
W_RECENCY = 0.05
RANK_FLOOR = 0.75
PREFIX_FACTOR = 0.5
KEY_TERM_WEIGHT = 1.0
BODY_TERM_WEIGHT = 0.5
COVERAGE_FLOOR = 2
COVERAGE_CAP = 6
# A query word that none of the candidate flows mentions tells no flow from another ("every hour", "from home"):
# it weighs this much in the share of the query a flow must cover.
UNKNOWN_TERM_WEIGHT = 0.5
RECENCY_HALF_LIFE_DAYS = 30.0
PREFIX_MIN = 4
MAX_QUERY_TERMS = 32

RELATED_DOMAINS = frozenset(
    frozenset(pair)
    for pair in (
        (ProblemDomain.M365, ProblemDomain.EMAIL),
        (ProblemDomain.M365, ProblemDomain.CLOUD),
        (ProblemDomain.ACTIVE_DIRECTORY, ProblemDomain.CLOUD),
        (ProblemDomain.ACTIVE_DIRECTORY, ProblemDomain.SECURITY),
        (ProblemDomain.ENDPOINT, ProblemDomain.HARDWARE),
        (ProblemDomain.ENDPOINT, ProblemDomain.SECURITY),
        (ProblemDomain.NETWORKING, ProblemDomain.CLOUD),
    )
)

_STOPWORDS_TEXT = """a about after again all also am an and any are as at be been before being but by can cannot could
    did do does doing don each even ever every for from get gets getting got had has have having he her
    here him his how i if in into is it its just keep keeps kept know let like me more most my need needs no
    not now of off on once only or other our out over please same she should since so some still such than
    that the their them then there these they this those through to too try tried trying under until up us
    very was we were what when where which while who why will with won would yes you your today yesterday
    morning afternoon user users customer client says said seems issue issues problem problems help hi hello
    thanks thank anyone someone something anything cant wont dont doesnt didnt isnt arent wasnt werent
    couldnt shouldnt wouldnt im ive think guess maybe probably"""
STOPWORDS = frozenset(_STOPWORDS_TEXT.split())

# Flows' search texts (name+keywords, body) of a few hundred runbooks fit; each entry is one small frozenset.
STEMS_CACHE_TEXTS = 2048
_WORD = re.compile(r"[^\W_]+")


@functools.lru_cache(maxsize=STEMS_CACHE_TEXTS * 8)
def stem(word: str) -> str:
    """A light English suffix stripper; enough to fold plurals and -ing/-ed/-ion forms together (cached: the
    same query words are stemmed once per candidate flow)."""
    w = word
    if len(w) > 4 and w.endswith("ies"):
        w = w[:-3] + "y"
    elif len(w) > 3 and w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ion", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            if len(w) > 3 and w[-1] == w[-2] and w[-1] not in "aeiousl":
                w = w[:-1]
            break
    return w


def query_words(text: str) -> list[str]:
    """Distinct lower-case words of a query worth searching for, in order, at most MAX_QUERY_TERMS."""
    words: dict[str, None] = {}
    for w in _WORD.findall(text.lower()):
        if len(w) >= 2 and w not in STOPWORDS and (not w.isdigit() or len(w) >= 3):
            words.setdefault(w)
            if len(words) >= MAX_QUERY_TERMS:
                break
    return list(words)


@functools.lru_cache(maxsize=STEMS_CACHE_TEXTS)
def stems(text: str) -> frozenset[str]:
    """The stemmed vocabulary of a text. Cached: a flow's search text is scored against every query that finds
    it, and re-stemming it each time was most of a match's CPU (bench/bench_chat.py)."""
    return frozenset(stem(w) for w in _WORD.findall(text.lower()) if len(w) >= 2)


@dataclass(frozen=True, slots=True)
class Vocabulary:
    """A text's stems, also sorted, so that a prefix match costs a binary search rather than a walk of them all."""

    stems: frozenset[str]
    ordered: tuple[str, ...]

    def found(self, term: str) -> float:
        """1 for an exact term, PREFIX_FACTOR when it only matches as a prefix either way, else 0.

        The same answer as checking `v.startswith(term) or (len(v) >= PREFIX_MIN and term.startswith(v))` for
        every stem `v`: the stems that start with `term` sort right at its insertion point, and a stem that
        `term` starts with is one of its prefixes of PREFIX_MIN letters or more (not all of it: that is exact).
        """
        if term in self.stems:
            return 1.0
        if len(term) < PREFIX_MIN:
            return 0.0
        ordered = self.ordered
        at = bisect.bisect_left(ordered, term)
        if at < len(ordered) and ordered[at].startswith(term):
            return PREFIX_FACTOR
        if any(term[:k] in self.stems for k in range(PREFIX_MIN, len(term))):
            return PREFIX_FACTOR
        return 0.0


@functools.lru_cache(maxsize=STEMS_CACHE_TEXTS)
def vocabulary(text: str) -> Vocabulary:
    """`stems(text)` ready for `Vocabulary.found` (cached like `stems`)."""
    found = stems(text)
    return Vocabulary(found, tuple(sorted(found)))


def _found(term: str, vocabulary: frozenset[str]) -> float:
    """1 for an exact term, PREFIX_FACTOR when it only matches as a prefix either way, else 0 (the plain walk
    that `Vocabulary.found` answers faster; kept as its reference)."""
    if term in vocabulary:
        return 1.0
    if len(term) >= PREFIX_MIN and any(
        v.startswith(term) or (len(v) >= PREFIX_MIN and term.startswith(v)) for v in vocabulary
    ):
        return PREFIX_FACTOR
    return 0.0


@dataclass(frozen=True, slots=True)
class Coverage:
    value: float
    key_hits: tuple[str, ...]
    body_hits: tuple[str, ...]


def coverage(
    words: Sequence[str], key_text: str, body_text: str, weights: Sequence[float] | None = None
) -> Coverage:
    """How much of the query the flow speaks about, 0..1 (see `score_candidate`); `weights` per word, 1 each
    by default (`term_weights`)."""
    if not words:
        return Coverage(0.0, (), ())
    weights = weights or [1.0] * len(words)
    key_vocab, body_vocab = vocabulary(key_text), vocabulary(body_text)
    key_hits: list[str] = []
    body_hits: list[str] = []
    weight = 0.0
    for word, word_weight in zip(words, weights, strict=True):
        term = stem(word)
        key, body = KEY_TERM_WEIGHT * key_vocab.found(term), BODY_TERM_WEIGHT * body_vocab.found(term)
        if key == body == 0:
            continue
        (key_hits if key >= body else body_hits).append(word)
        weight += word_weight * max(key, body)
    denominator = max(float(COVERAGE_FLOOR), sum(sorted(weights, reverse=True)[:COVERAGE_CAP]))
    return Coverage(min(1.0, weight / denominator), tuple(key_hits), tuple(body_hits))


def term_weights(words: Sequence[str], candidates: Sequence[Candidate]) -> list[float]:
    """1 for a query word some candidate flow mentions (name, tags, symptoms or steps), UNKNOWN_TERM_WEIGHT for
    one none of them does."""
    vocabularies = [(vocabulary(c.key_text), vocabulary(c.body_text)) for c in candidates]
    weights = []
    for word in words:
        term = stem(word)
        known = any(key.found(term) or body.found(term) for key, body in vocabularies)
        weights.append(1.0 if known else UNKNOWN_TERM_WEIGHT)
    return weights


def rank_share(rank: float, best: float) -> float:
    if best <= 0:
        return 1.0
    return max(0.0, min(1.0, rank / best))


def domain_agreement(requested: ProblemDomain | None, flow_domain: ProblemDomain) -> float:
    if requested is None or requested is ProblemDomain.OTHER or flow_domain is ProblemDomain.OTHER:
        return 0.5
    if requested is flow_domain:
        return 1.0
    return 0.5 if frozenset((requested, flow_domain)) in RELATED_DOMAINS else 0.0


def success_prior(resolved: int, matched: int) -> float:
    resolved = max(0, min(resolved, matched))
    return (resolved + 1) / (max(matched, 0) + 2)


def success_rate(resolved: int, matched: int) -> float | None:
    """The stored statistic: resolved share of matched sessions, 3 places; None before any match."""
    if matched <= 0:
        return None
    return round(max(0, min(resolved, matched)) / matched, 3)


def recency(last_matched_at: datetime | None, now: datetime) -> float:
    if last_matched_at is None:
        return 0.0
    days = max(0.0, (now - last_matched_at).total_seconds() / 86400)
    return float(0.5 ** (days / RECENCY_HALF_LIFE_DAYS))


@dataclass(frozen=True, slots=True)
class Candidate:
    """A flow the full-text search returned, with what scoring needs to know about it."""

    flow_id: uuid.UUID
    name: str
    problem_domain: ProblemDomain
    key_text: str
    body_text: str
    rank: float
    matched_count: int = 0
    resolved_count: int = 0
    last_matched_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Scored:
    flow_id: uuid.UUID
    name: str
    score: float
    reasons: list[str] = field(default_factory=list)


def _join(words: Iterable[str]) -> str:
    return ", ".join(repr(w) for w in words)


def score_candidate(
    candidate: Candidate,
    words: Sequence[str],
    requested: ProblemDomain | None,
    best_rank: float,
    now: datetime,
    weights: Sequence[float] | None = None,
) -> Scored:
    """Score one flow for a query, 0..1, with the reasons a person can read:

        score = 0.70 · text + 0.15 · domain + 0.10 · success + 0.05 · recency     (rounded to 3 places)

        text     = coverage · (0.75 + 0.25 · rank_share)
          coverage   = Σ weight(term) · found(term) / max(2, Σ of the 6 largest weights), capped at 1.
                       found: 1.0 for a query term in the flow's name, tags or symptoms, 0.5 for one only
                       in its description or node texts; a term that only matches as a prefix of a longer
                       word or the other way round ("lock" ~ "lockout", at least 4 letters) counts half.
                       weight: 1, or 0.5 for a term no candidate flow mentions at all (it cannot tell
                       flows apart: "every hour", "from home"). Terms are lower-cased words (numbers of
                       3+ digits included, e.g. error codes) without stop words, lightly stemmed. The
                       floor of 2 keeps a one-word query from looking certain; the cap of 6 keeps a long,
                       chatty ticket from diluting a good match.
          rank_share = the database's relevance (SQLite FTS5 bm25 negated, PostgreSQL ts_rank)
                       divided by the best candidate's. Engines score on different scales, so this
                       only orders candidates that cover the query equally well; it never lifts a
                       weak match.
        domain   = 1 same problem domain, 0.5 related domains (m365/email…) or no domain / "other" on
                   either side, 0 different domains
        success  = (resolved + 1) / (matched + 2): Laplace-smoothed, so an untried flow counts as 0.5
        recency  = 0.5 ** (days since last matched / 30); 0 when never matched

    A flow that hits every query term in its name/tags/symptoms, in the requested domain, scores 0.9 before
    any history, above the Pilot's 0.8 "guided" threshold; a flow that only shares a word or two of its
    body text stays under the 0.5 "show it to the LLM" threshold.
    """
    cov = coverage(words, candidate.key_text, candidate.body_text, weights)
    share = rank_share(candidate.rank, best_rank)
    text = cov.value * (RANK_FLOOR + (1 - RANK_FLOOR) * share)
    domain = domain_agreement(requested, candidate.problem_domain)
    success = success_prior(candidate.resolved_count, candidate.matched_count)
    fresh = recency(candidate.last_matched_at, now)
    score = W_TEXT * text + W_DOMAIN * domain + W_SUCCESS * success + W_RECENCY * fresh
    reasons = [f"text relevance {text:.2f}"]
    if cov.key_hits:
        reasons.append(f"name/tags/symptoms mention {_join(cov.key_hits)}")
    if cov.body_hits:
        reasons.append(f"steps mention {_join(cov.body_hits)}")
    if requested is None or requested is ProblemDomain.OTHER:
        reasons.append("no specific problem domain given")
    elif candidate.problem_domain is ProblemDomain.OTHER:
        reasons.append("flow is not tied to a problem domain")
    elif domain == 1.0:
        reasons.append(f"same problem domain ({candidate.problem_domain.value})")
    elif domain == 0.5:
        reasons.append(f"related problem domain ({candidate.problem_domain.value} for {requested.value})")
    else:
        reasons.append(f"different problem domain ({candidate.problem_domain.value}, not {requested.value})")
    if candidate.matched_count:
        reasons.append(f"resolved {min(candidate.resolved_count, candidate.matched_count)} of "
                       f"{candidate.matched_count} matched sessions")
    else:
        reasons.append("no outcomes recorded yet")
    if candidate.last_matched_at is not None:
        reasons.append(f"last matched {max(0, (now - candidate.last_matched_at).days)} days ago")
    return Scored(candidate.flow_id, candidate.name, round(max(0.0, min(1.0, score)), 3), reasons)


def score_candidates(
    candidates: Sequence[Candidate], text: str, requested: ProblemDomain | None, now: datetime, limit: int
) -> list[Scored]:
    """Score every candidate and return the best `limit`, highest first (name breaks ties)."""
    words = query_words(text)
    best = max((c.rank for c in candidates), default=0.0)
    weights = term_weights(words, candidates)
    scored = [score_candidate(c, words, requested, best, now, weights) for c in candidates]
    scored.sort(key=lambda s: (-s.score, s.name))
    return scored[:limit]


def search_texts(
    name: str, description: str, tags: Sequence[str], symptoms: Sequence[str], node_texts: Iterable[str]
) -> tuple[str, str]:
    """(keywords, body) stored on a flow for the full-text index: tags and symptoms; description and steps."""
    keywords = "\n".join([*tags, *symptoms])
    body = "\n".join([description, *node_texts]).strip()
    return keywords, body
