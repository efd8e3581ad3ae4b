"""Celery worker: the app, its job-dispatch task and the entry point behind `deskpilot worker`."""

from deskpilot.worker.celery_app import make_celery
from deskpilot.worker.main import run_worker

__all__ = ["make_celery", "run_worker"]
