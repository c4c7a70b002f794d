"""The node's HTTP side: the Starlette app, health and readiness, metrics, the bearer token, the server thread."""
