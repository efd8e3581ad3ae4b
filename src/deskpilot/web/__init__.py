"""Web console: server-rendered pages with htmx, served by the API application."""

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the console's routes and static files on `app`."""
