"""The per-key failure window behind the sign-in form's per-address limit."""

from __future__ import annotations

import pytest

from deskpilot.security.throttle import FailureWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_key_is_refused_at_the_limit_until_its_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    window = FailureWindow(3, 60.0, clock=clock)
    for _ in range(2):
        window.fail("10.0.0.1")
        clock.now += 10
    assert window.refused_for("10.0.0.1") is None
    window.fail("10.0.0.1")  # failures at 1000, 1010, 1020
    assert window.refused_for("10.0.0.1") == pytest.approx(40.0)
    assert window.refused_for("10.0.0.2") is None
    clock.now = 1060.0  # the first failure has left the window
    assert window.refused_for("10.0.0.1") is None
    window.fail("10.0.0.1")  # 1010, 1020, 1060
    assert window.refused_for("10.0.0.1") == pytest.approx(10.0)
    clock.now = 2000.0
    assert window.refused_for("10.0.0.1") is None


def test_it_remembers_at_most_max_keys_forgetting_the_least_recent() -> None:
    clock = Clock()
    window = FailureWindow(1, 60.0, max_keys=2, clock=clock)
    for key in ("a", "b", "c"):
        window.fail(key)
    assert window.refused_for("a") is None
    assert window.refused_for("b") is not None
    assert window.refused_for("c") is not None


def test_a_window_needs_a_limit_and_a_length() -> None:
    with pytest.raises(ValueError, match="limit of at least 1"):
        FailureWindow(0, 60.0)
    with pytest.raises(ValueError, match="positive length"):
        FailureWindow(3, 0)
