"""Secret encryption at rest, with key rotation."""

from __future__ import annotations

import pytest

from deskpilot.security.crypto import SecretBox, SecretDecryptionError, generate_key, redact


def test_round_trip_and_ciphertext_hides_plaintext() -> None:
    box = SecretBox([generate_key()])
    token = box.encrypt("xoxb-very-secret")
    assert "xoxb" not in token
    assert box.decrypt(token) == "xoxb-very-secret"
    assert box.decrypt_json(box.encrypt_json({"public": "a", "private": "b"})) == {"public": "a", "private": "b"}


def test_rotation_keeps_old_ciphertexts_readable() -> None:
    old_key, new_key = generate_key(), generate_key()
    old_box = SecretBox([old_key])
    stored = old_box.encrypt("psa-private-key")
    rotated_box = SecretBox([new_key, old_key])
    assert rotated_box.decrypt(stored) == "psa-private-key"
    re_encrypted = rotated_box.rotate(stored)
    assert SecretBox([new_key]).decrypt(re_encrypted) == "psa-private-key"
    with pytest.raises(SecretDecryptionError):
        old_box.decrypt(re_encrypted)


def test_wrong_key_is_a_typed_error() -> None:
    stored = SecretBox([generate_key()]).encrypt("x")
    with pytest.raises(SecretDecryptionError, match="cannot be decrypted"):
        SecretBox([generate_key()]).decrypt(stored)


def test_redact() -> None:
    assert redact("abcdefghijklmnop") == "…mnop"
    assert redact("short") == "****"
    assert redact(None) == ""
