"""The cross-tenant check every endpoint of every issue runs: account A's resource is invisible to B."""

from __future__ import annotations

import httpx


async def assert_invisible_to_other_account(
    client: httpx.AsyncClient,
    url: str,
    *,
    owner_headers: dict[str, str],
    other_headers: dict[str, str],
    methods: tuple[str, ...] = ("GET",),
    json: object | None = None,
) -> None:
    """The owner can read `url`; a user of another account gets 404 for every method, and nothing changes."""
    before = await client.get(url, headers=owner_headers)
    assert before.status_code == 200, f"owner cannot read {url}: {before.status_code} {before.text}"
    for method in methods:
        kwargs: dict[str, object] = {"headers": other_headers}
        if method in ("POST", "PUT", "PATCH") and json is not None:
            kwargs["json"] = json
        response = await client.request(method, url, **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 404, f"{method} {url} by another account gave {response.status_code}"
        assert response.headers["content-type"].startswith("application/problem+json")
        assert "code" in response.json()
    after = await client.get(url, headers=owner_headers)
    assert after.json() == before.json(), f"{url} changed after another account's requests"
