"""The node's HTTP app: routes for STOW-RS, health, readiness and metrics, and JSON errors.

An ASGI app (Starlette) served by uvicorn in a thread of ``dxr-node serve``
(:mod:`node.http.server`), beside the DIMSE listener, when the config has an ``[http]`` table:

``POST /dicomweb/studies``, ``POST /dicomweb/studies/{StudyInstanceUID}``
    Store Instances (:mod:`node.receive.stow`).
``GET /healthz``
    The process is up (200).
``GET /readyz``
    200 when the spool is writable, free disk is above the watermark and SQLite answers;
    503 otherwise, with the reasons. Also shows each destination's last export state.
``GET /metrics``
    Prometheus text format (see :mod:`node.http.metrics`).
``GET /`` and the web page's other routes
    The technologist's and admin's page (:mod:`node.web.routes`): login form or session
    cookie, or the same bearer token.

``/readyz`` and ``/metrics`` need the bearer token (they show paths, AE titles and queues)
unless ``[http] public_health = true``; ``/healthz`` is always open.
"""

from __future__ import annotations

import logging

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from node.config import Config, ConfigError
from node.disk import shared_watermark
from node.http import metrics
from node.http.errors import error_response
from node.http.health import readiness
from node.http.token import authorised, load_token
from node.receive.stow import StowHandler
from node.spool import Store
from node.web.routes import web_routes

__all__ = ["create_app"]

log = logging.getLogger("dxr.dicomweb")


def create_app(config: Config, store: Store) -> Starlette:
    """Build the ASGI app for ``config`` (which must have an ``[http]`` table).

    Raises
    ------
    ConfigError
        When ``[http]`` is missing or no token is configured.
    """
    if config.http is None:
        raise ConfigError(f"{config.path}: no [http] table: the HTTP server is not configured")
    disk = shared_watermark(config.data_dir, config.disk.min_free_bytes)
    registry = metrics.build_registry(config.db_path, [d.name for d in config.destinations], disk.check)
    token = load_token(config.http, config.path)
    stow_handler = StowHandler(config, store, token, disk)

    def refused(request: Request) -> Response | None:
        """/readyz and /metrics show paths, AE titles and queue sizes: the token, unless [http] public_health."""
        if config.http.public_health or authorised(request.headers.get("authorization", ""), token):
            return None
        log.warning("event=http_refused path=%s client=%s reason=unauthorised", request.url.path,
                    request.client.host if request.client else "-")
        return error_response(401, "missing or wrong bearer token (or set [http] public_health = true)")

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "ae_title": config.node.ae_title})

    async def readyz(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        ready, body = await run_in_threadpool(readiness, config, store, disk)
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        if (refusal := refused(request)) is not None:
            return refusal
        text = await run_in_threadpool(metrics.render, registry)
        return Response(text, media_type=metrics.CONTENT_TYPE)

    async def stow(request: Request) -> Response:  # a function endpoint: Starlette treats other callables as ASGI apps
        return await stow_handler(request)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        Route("/dicomweb/studies", stow, methods=["POST"]),
        Route("/dicomweb/studies/{study_uid}", stow, methods=["POST"]),
        *web_routes(config, store, token),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: _http_error, Exception: _internal_error})


async def _http_error(request: Request, exc: HTTPException) -> Response:
    return error_response(exc.status_code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("event=http_internal_error path=%s error=%r", request.url.path, exc, exc_info=exc)
    return error_response(500, "internal error; the node log has the details")
