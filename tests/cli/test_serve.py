"""`deskpilot serve`: one process, or several sharing the port (which need Redis and a shared database)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from deskpilot.cli.main import app
from tests.services import require_redis

runner = CliRunner()


@pytest.fixture
def workdir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("DESKPILOT_REDIS__URL", raising=False)
    monkeypatch.setenv("DESKPILOT_DATABASE__URL", f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}")
    monkeypatch.chdir(tmp_path)  # no stray .env is read
    return tmp_path


def test_several_workers_without_redis_are_refused(workdir: Path) -> None:
    result = runner.invoke(app, ["serve", "--workers", "2"])
    assert result.exit_code == 2
    assert "several server processes need DESKPILOT_REDIS__URL" in result.output


def test_several_workers_on_in_memory_sqlite_are_refused(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESKPILOT_REDIS__URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("DESKPILOT_DATABASE__URL", "sqlite+aiosqlite:///:memory:")
    result = runner.invoke(app, ["serve", "--workers", "2"])
    assert result.exit_code == 2
    assert "not in-memory SQLite" in result.output


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


HEALTH_CHECKS = 24
_HEALTHZ_COUNT = re.compile(r'^deskpilot_http_requests_total\{[^}]*route="/healthz"[^}]*status="200"[^}]*\} (\S+)$',
                            re.MULTILINE)


def _health_checks(exposition: str) -> int:
    return sum(int(float(count)) for count in _HEALTHZ_COUNT.findall(exposition))


def test_two_workers_serve_the_console_and_the_api(workdir: Path) -> None:
    """Two server processes behind one port answer requests, /metrics counts both, and both stop on SIGTERM."""
    env = {**os.environ, "DESKPILOT_REDIS__URL": require_redis()}  # noqa: TID251 - the child needs PATH and friends
    deskpilot = str(Path(sys.executable).with_name("deskpilot"))
    assert subprocess.run([deskpilot, "migrate"], env=env, capture_output=True, check=False).returncode == 0
    port = _free_port()
    server = subprocess.Popen([deskpilot, "serve", "--workers", "2", "--port", str(port)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read().decode() if server.stdout else ""
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.3)
        # uvicorn starts each worker as a multiprocessing child (spawn_main in its command line).
        workers = [pid for pid in _children(server.pid)
                   if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(workers) == 2
        login = httpx.get(f"http://127.0.0.1:{port}/login", timeout=5)
        assert login.status_code == 200
        assert "password" in login.text
        # Each request goes to whichever worker accepts it; every scrape counts all of them.
        for _ in range(HEALTH_CHECKS):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        for _ in range(4):
            scraped = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
            assert _health_checks(scraped) == HEALTH_CHECKS
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
    assert server.returncode == 0
