"""The web page's routes on the node's HTTP port: server-rendered HTML (Jinja2), no JavaScript, no CDN.

``GET /``
    Recent studies (state, result, exports per destination), the queue, the destinations and
    the "analyse an earlier study" form; the login form when not signed in (401).
``GET /login``, ``POST /login``, ``POST /logout``
    The bearer token in a form sets (or clears) the session cookie (:mod:`node.web.auth`).
``GET /studies/{uid}``, ``GET /studies/{uid}/picture/{n}.png``
    One study's result and its result picture(s) (the Secondary Capture as PNG).
``POST /exports/{id}/retry``, ``POST /request``
    The two buttons: re-queue a failed export; retrieve studies from a ``[[pacs]]``
    (:func:`node.retrieve.request.request_studies`). Both need the form token (CSRF) or the bearer token.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any
from urllib.parse import parse_qs, urlencode

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from node.config import Config
from node.spool import Store
from node.web import views
from node.web.auth import COOKIE, SESSION_SECONDS, LoginThrottle, WebAuth
from node.web.results import picture_png

__all__ = ["WebPage", "web_routes"]

log = logging.getLogger("dxr.web")

MAX_FORM_BYTES = 16 * 1024
_ENV = jinja2.Environment(loader=jinja2.PackageLoader("node.web", "templates"), autoescape=True,
                          undefined=jinja2.StrictUndefined)
_ENV.filters["when"] = lambda t: time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t)) if t else "-"
_ENV.filters["num"] = lambda v, fmt="%.2f": "-" if v is None else fmt % v
_SECURITY_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer",
                     "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; "
                                                "form-action 'self'; frame-ancestors 'none'"}


async def _form(request: Request) -> dict[str, str]:
    """An ``application/x-www-form-urlencoded`` body (at most :data:`MAX_FORM_BYTES`) as single values."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}


def _client(request: Request) -> str:
    return request.client.host if request.client else "-"


def web_routes(config: Config, store: Store, token: str) -> list[Route]:
    """The page's routes for ``create_app``; ``token`` is the node's bearer token."""
    return WebPage(config, store, token).routes()


class WebPage:
    """The page's handlers, bound to the node's config, store and token (one per HTTP app)."""

    def __init__(self, config: Config, store: Store, token: str) -> None:
        self.config, self.store = config, store
        self.auth = WebAuth(token, secure=config.tls is not None)
        self.throttle = LoginThrottle()

    def routes(self) -> list[Route]:
        return [
            Route("/", self.index, methods=["GET"]),
            Route("/login", self.login_form, methods=["GET"]),
            Route("/login", self.login, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/studies/{uid}", self.study, methods=["GET"]),
            Route("/studies/{uid}/picture/{n:int}.png", self.picture, methods=["GET"]),
            Route("/exports/{export_id:int}/retry", self.retry, methods=["POST"]),
            Route("/request", self.retrieve, methods=["POST"]),
        ]

    def page(self, request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
        html = _ENV.get_template(template).render(ae_title=self.config.node.ae_title,
                                                  form_token=self.auth.form_token(request), **context)
        return HTMLResponse(html, status_code=status, headers=_SECURITY_HEADERS)

    def login_page(self, request: Request, error: str = "", status: int = 401) -> HTMLResponse:
        return self.page(request, "login.html", status, error=error)

    @staticmethod
    def back(**message: str) -> RedirectResponse:
        return RedirectResponse("/?" + urlencode(message) if message else "/", status_code=303)

    async def index(self, request: Request) -> Response:
        if not self.auth.signed_in(request):
            return self.login_page(request)
        studies = await run_in_threadpool(views.recent_studies, self.store)
        queue = await run_in_threadpool(views.queue_view, self.store)
        destinations = await run_in_threadpool(views.destinations_view, self.config, self.store)
        return self.page(request, "index.html", studies=studies, queue=queue, destinations=destinations,
                         pacs=[p.name for p in self.config.pacs], notice=request.query_params.get("notice", ""),
                         error=request.query_params.get("error", ""))

    async def login_form(self, request: Request) -> Response:
        return self.login_page(request, status=200)

    async def login(self, request: Request) -> Response:
        client = _client(request)
        wait = self.throttle.wait_seconds(client)
        if wait > 0:
            log.warning("event=web_login_throttled client=%s retry_after_seconds=%d", client, math.ceil(wait))
            response = self.login_page(request, f"Too many wrong tokens from this address: try again in "
                                                f"{math.ceil(wait / 60)} min.", 429)
            response.headers["Retry-After"] = str(math.ceil(wait))
            return response
        form = await _form(request)
        if not self.auth.token_matches(form.get("token", "")):
            self.throttle.failed(client)
            log.warning("event=web_login_refused client=%s", client)
            return self.login_page(request, "That is not the node's token.")
        self.throttle.succeeded(client)
        log.info("event=web_login client=%s", client)
        response = self.back()
        response.set_cookie(COOKIE, self.auth.new_session(), max_age=SESSION_SECONDS, httponly=True,
                            samesite="strict", secure=self.auth.secure, path="/")
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE, path="/")
        return response

    async def study(self, request: Request) -> Response:
        if not self.auth.signed_in(request):
            return self.login_page(request)
        uid = request.path_params["uid"]
        row = await run_in_threadpool(views.study_row, self.store, uid)
        return self.page(request, "study.html", 200 if row else 404, row=row, uid=uid)

    async def picture(self, request: Request) -> Response:
        if not self.auth.signed_in(request):
            return self.login_page(request)
        png = await run_in_threadpool(_picture, self.store, request.path_params["uid"], request.path_params["n"])
        if png is None:
            return Response("no such picture", status_code=404, media_type="text/plain")
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})

    async def retry(self, request: Request) -> Response:
        form = await _form(request)
        if not self.auth.may_post(request, form):
            return self.login_page(request, "Sign in again: the form had expired.", 403)
        export_id = request.path_params["export_id"]
        e = await run_in_threadpool(self.store.retry_export, export_id)
        if e is None:
            return self.back(error=f"No export E{export_id}.")
        log.info("event=web_retry export=E%d destination=%s state=%s client=%s", export_id, e.destination, e.state,
                 _client(request))
        if e.state != "queued":
            return self.back(error=f"Export E{export_id} to {e.destination} is {e.state}: nothing to retry.")
        return self.back(notice=f"Export E{export_id} to {e.destination} queued again.")

    async def retrieve(self, request: Request) -> Response:
        form = await _form(request)
        if not self.auth.may_post(request, form):
            return self.login_page(request, "Sign in again: the form had expired.", 403)
        ok, text = await run_in_threadpool(_request, self.config, self.store, form)
        log.info("event=web_request ok=%d client=%s", ok, _client(request))
        return self.back(notice=text) if ok else self.back(error=text)


def _picture(store: Store, study_uid: str, n: int) -> bytes | None:
    """PNG of the ``n``-th result picture of the study's latest analysis."""
    job = views.latest_job(store, study_uid)
    if job is None or job["state"] != "done":
        return None
    pictures = [o for o in views.study_outputs(store, job["id"]) if o["kind"] == "SC"]
    return picture_png(store.data_dir / pictures[n]["path"]) if 0 <= n < len(pictures) else None


def _request(config: Config, store: Store, form: dict[str, str]) -> tuple[bool, str]:
    """Run the "analyse an earlier study" form: (ok, the message for the page)."""
    from node.config import ConfigError
    from node.retrieve.query import RetrieveError, StudyQuery, dicom_date
    from node.retrieve.request import request_studies

    kind, value = form.get("by", ""), form.get("value", "").strip()
    if kind not in ("accession", "study_uid", "patient_id") or not value:
        return False, "Give an accession number, a study UID or a patient ID."
    try:
        since = form.get("since", "").strip()
        query = StudyQuery(**{kind: value}, since=dicom_date(since) if since and kind == "patient_id" else None)
        pacs = config.pacs_named(form.get("pacs") or None)
        done = request_studies(config, pacs, query, store=store)
    except (ValueError, ConfigError, RetrieveError) as exc:
        return False, str(exc)
    return True, "; ".join(item.line() for item in done) + f". Analysed after the quiet period " \
                                                            f"({config.study.quiet_period_seconds:g} s)."

