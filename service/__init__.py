"""HTTP API: FastAPI app factory, routes, auth, validation, metrics, health."""
