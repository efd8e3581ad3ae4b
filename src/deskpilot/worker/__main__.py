"""`python -m deskpilot.worker`: a Celery worker for deskpilot jobs, configured from the environment."""

from __future__ import annotations

import argparse

from deskpilot.jobs.celery_backend import DEFAULT_QUEUE
from deskpilot.settings import Settings
from deskpilot.worker.main import run_worker


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deskpilot.worker", description=__doc__)
    parser.add_argument("--concurrency", type=int, default=None)
    parser.add_argument("--loglevel", default="INFO")
    parser.add_argument("--queue", default=DEFAULT_QUEUE)
    parser.add_argument("--pool", default="prefork", choices=["prefork", "threads", "solo"])
    parser.add_argument("--import", dest="imports", action="append", default=[], help="module registering handlers")
    parser.add_argument("--no-discover", dest="discover", action="store_false", help="skip deskpilot.*.jobs")
    args = parser.parse_args(argv)
    run_worker(
        Settings(),
        concurrency=args.concurrency,
        loglevel=args.loglevel,
        queue=args.queue,
        pool=args.pool,
        imports=args.imports,
        discover=args.discover,
    )


if __name__ == "__main__":
    main()
