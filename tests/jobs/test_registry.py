"""Registry, retry policy, discovery of domain job modules, and the shared run-once logic."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from deskpilot.errors import NotFound, ValidationFailed
from deskpilot.events.pubsub import InProcessPubSub, JsonObject
from deskpilot.jobs import Job, JobContext, JobRegistry, RetryPolicy, UnknownJob, discover_job_modules, execute
from deskpilot.jobs.base import encode_payload
from deskpilot.settings import Settings
from deskpilot.storage import Database


async def noop(ctx: JobContext, payload: JsonObject) -> None:
    return None


async def other(ctx: JobContext, payload: JsonObject) -> None:
    return None


def test_register_and_look_up() -> None:
    jobs = JobRegistry()
    decorated = jobs.job("a.noop", retry=RetryPolicy(max_retries=7))(noop)
    assert decorated is noop
    spec = jobs.get("a.noop")
    assert spec.handler is noop
    assert spec.retry.max_retries == 7
    assert "a.noop" in jobs
    assert jobs.names() == ["a.noop"]
    with pytest.raises(UnknownJob):
        jobs.get("a.missing")


def test_a_name_cannot_point_at_two_handlers_but_re_registering_the_same_is_fine() -> None:
    jobs = JobRegistry()
    jobs.register("a", noop)
    jobs.register("a", noop)
    with pytest.raises(ValueError, match="already registered"):
        jobs.register("a", other)


def test_backoff_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(backoff_s=2, max_backoff_s=10, jitter=False)
    assert [policy.delay_for(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


def test_jitter_stays_between_half_and_full_delay() -> None:
    policy = RetryPolicy(backoff_s=1, jitter=True)
    delays = [policy.delay_for(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays)
    assert len(set(delays)) > 1


def test_payloads_are_json_round_tripped() -> None:
    assert encode_payload("x", {"a": (1, 2)}) == {"a": [1, 2]}  # type: ignore[dict-item]
    assert encode_payload("x", None) == {}
    with pytest.raises(ValidationFailed, match="'x'"):
        encode_payload("x", {"a": {1, 2}})  # type: ignore[dict-item]


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    root = tmp_path / "fakedesk"
    for folder, files in {
        "": {},
        "alpha": {"jobs.py": "IMPORTED = True\n"},
        "beta": {"service.py": ""},
        "api": {"jobs.py": "raise RuntimeError('interface packages are skipped')\n"},
    }.items():
        package = root / folder
        package.mkdir(parents=True, exist_ok=True)
        (package / "__init__.py").write_text("")
        for name, text in files.items():
            (package / name).write_text(text)
    (root / "lonely.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "fakedesk"
    for name in [m for m in sys.modules if m == "fakedesk" or m.startswith("fakedesk.")]:
        del sys.modules[name]


def test_discovery_imports_each_domains_jobs_module(fake_package: str) -> None:
    assert discover_job_modules(fake_package) == ["fakedesk.alpha.jobs"]
    assert sys.modules["fakedesk.alpha.jobs"].IMPORTED is True


@pytest.fixture
async def context() -> AsyncIterator[JobContext]:
    # Never connected: these handlers do not touch the database.
    ctx = JobContext(
        settings=Settings.model_validate({}), database=Database("sqlite+aiosqlite://"), pubsub=InProcessPubSub()
    )
    yield ctx
    await ctx.pubsub.close()
    await ctx.database.dispose()


async def test_execute_turns_errors_into_outcomes(context: JobContext) -> None:
    jobs = JobRegistry()
    policy = RetryPolicy(max_retries=1, backoff_s=3, jitter=False)

    @jobs.job("fails", retry=policy)
    async def fails(ctx: JobContext, payload: JsonObject) -> None:
        raise RuntimeError("down")

    @jobs.job("gone", retry=policy)
    async def gone(ctx: JobContext, payload: JsonObject) -> None:
        raise NotFound("row deleted")

    jobs.register("fine", noop)
    first = await execute(jobs, context, Job(id="1", name="fails", attempt=1))
    assert (first.status, first.retry_in_s) == ("retry", 3)
    assert (await execute(jobs, context, Job(id="1", name="fails", attempt=2))).status == "failed"
    assert (await execute(jobs, context, Job(id="2", name="gone"))).status == "failed"
    assert (await execute(jobs, context, Job(id="3", name="unknown"))).status == "failed"
    assert (await execute(jobs, context, Job(id="4", name="fine"))).status == "done"
