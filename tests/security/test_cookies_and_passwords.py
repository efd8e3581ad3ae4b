"""Console session cookies, CSRF tokens, password hashes and API token format."""

from __future__ import annotations

import uuid

from deskpilot.security.cookies import SessionSigner
from deskpilot.security.passwords import hash_password, verify_password
from deskpilot.security.tokens import generate_token, hash_token, looks_like_token


def test_cookie_round_trip_and_tamper() -> None:
    signer = SessionSigner("k" * 32, max_age_s=60)
    user, account = uuid.uuid4(), uuid.uuid4()
    cookie = signer.issue(user, account)
    session = signer.read(cookie)
    assert session is not None
    assert (session.user_id, session.account_id) == (user, account)
    assert signer.read(cookie[:-2] + "xx") is None
    assert SessionSigner("other" * 8, max_age_s=60).read(cookie) is None


def test_cookie_carries_the_session_epoch_and_older_cookies_read_as_epoch_0() -> None:
    signer = SessionSigner("k" * 32, max_age_s=60)
    user, account = uuid.uuid4(), uuid.uuid4()
    issued = signer.read(signer.issue(user, account, epoch=3))
    assert issued is not None
    assert issued.epoch == 3
    # A cookie from before epochs existed (no "e"): still valid for a user who never signed out since.
    legacy = signer._serializer.dumps({"u": str(user), "a": str(account), "n": "nonce"})
    read = signer.read(legacy)
    assert read is not None
    assert read.epoch == 0


def test_csrf_token_is_bound_to_the_session() -> None:
    signer = SessionSigner("k" * 32, max_age_s=60)
    first = signer.read(signer.issue(uuid.uuid4(), uuid.uuid4()))
    second = signer.read(signer.issue(uuid.uuid4(), uuid.uuid4()))
    assert first is not None
    assert second is not None
    assert signer.check_csrf(first, signer.csrf_token(first))
    assert not signer.check_csrf(first, signer.csrf_token(second))
    assert not signer.check_csrf(first, None)


def test_password_hash_is_argon2() -> None:
    hashed = hash_password("correct-horse-battery")
    assert hashed.startswith("$argon2id$")
    assert verify_password(hashed, "correct-horse-battery")
    assert not verify_password(hashed, "wrong")
    assert not verify_password("not-a-hash", "x")


def test_api_tokens_store_only_a_hash() -> None:
    token = generate_token()
    assert looks_like_token(token.secret)
    assert token.token_hash == hash_token(token.secret) != token.secret
    assert token.secret.startswith(token.prefix)
    assert not looks_like_token("Bearer nonsense")
