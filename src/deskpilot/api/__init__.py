"""HTTP API: the FastAPI application, its dependencies and routers."""
