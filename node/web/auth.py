"""Who may see the page and press its buttons: the STOW-RS bearer token, or a session cookie got with it.

No user database: the node has one secret, ``[http] token``. The login form takes it and sets
a session cookie ``<issued>.<HMAC-SHA256(token, issued)>`` (HttpOnly, SameSite=Strict, Secure
over TLS) valid for :data:`SESSION_SECONDS`; a changed token ends every session. A request with
``Authorization: Bearer <token>`` needs no cookie.

The two POST buttons (retry, request) need a form token besides the cookie: HMAC of the cookie,
so a page of another site can neither read nor forge it (CSRF; SameSite=Strict is the second fence).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections import OrderedDict

from starlette.requests import Request

from node.http.token import authorised

__all__ = ["COOKIE", "SESSION_SECONDS", "LoginThrottle", "WebAuth"]

COOKIE = "dxr_session"
SESSION_SECONDS = 12 * 3600
"""A session lasts a working day; then the login form again."""
MAX_FAILED_LOGINS = 10
"""Wrong tokens one address may try per LOGIN_WINDOW_SECONDS before the form answers 429."""
LOGIN_WINDOW_SECONDS = 600.0
MAX_TRACKED_CLIENTS = 10_000
"""Addresses remembered at once (the oldest forgotten first): memory stays bounded under a flood."""


class LoginThrottle:
    """Wrong tokens per client address: after MAX_FAILED_LOGINS within LOGIN_WINDOW_SECONDS the
    login form refuses that address until the oldest of them is out of the window. A right token
    clears the address. Guessing the token through the form is then limited to 10 tries per
    10 minutes per address (a token of 20 random characters was out of reach anyway; a weak one
    chosen by hand is not)."""

    def __init__(self) -> None:
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def _recent(self, client: str, now: float) -> list[float]:
        times = [t for t in self._failures.get(client, []) if now - t < LOGIN_WINDOW_SECONDS]
        if times:
            self._failures[client] = times
        else:
            self._failures.pop(client, None)
        return times

    def wait_seconds(self, client: str, now: float | None = None) -> float:
        """Seconds until ``client`` may try again (0: it may now)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(client, now)
            if len(times) < MAX_FAILED_LOGINS:
                return 0.0
            return max(0.0, LOGIN_WINDOW_SECONDS - (now - times[-MAX_FAILED_LOGINS]))

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            times = self._recent(client, now)
            self._failures[client] = (times + [now])[-MAX_FAILED_LOGINS:]
            self._failures.move_to_end(client)
            while len(self._failures) > MAX_TRACKED_CLIENTS:
                self._failures.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._failures.pop(client, None)


class WebAuth:
    """Session cookies and form tokens derived from the node's bearer token."""

    def __init__(self, token: str, secure: bool) -> None:
        self._key = hashlib.sha256(b"dxr-web-session:" + token.encode()).digest()
        self._token = token
        self.secure = secure

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def token_matches(self, given: str) -> bool:
        """The login form's token, compared in constant time."""
        return hmac.compare_digest(given.strip().encode(), self._token.encode())

    def new_session(self, now: float | None = None) -> str:
        issued = str(int(time.time() if now is None else now))
        return f"{issued}.{self._sign('session:' + issued)}"

    def session_valid(self, value: str, now: float | None = None) -> bool:
        issued, _, signature = value.partition(".")
        if not issued.isdigit() or not hmac.compare_digest(signature, self._sign("session:" + issued)):
            return False
        age = (time.time() if now is None else now) - int(issued)
        return 0 <= age <= SESSION_SECONDS

    def bearer(self, request: Request) -> bool:
        return authorised(request.headers.get("authorization", ""), self._token)

    def signed_in(self, request: Request) -> bool:
        """A valid bearer token or session cookie."""
        return self.bearer(request) or self.session_valid(request.cookies.get(COOKIE, ""))

    def form_token(self, request: Request) -> str:
        """The token the page's forms carry (tied to this session; empty for bearer-only clients)."""
        session = request.cookies.get(COOKIE, "")
        return self._sign("form:" + session) if session else ""

    def may_post(self, request: Request, form: dict[str, str]) -> bool:
        """A button press: the bearer token, or a valid session cookie with its form token."""
        if self.bearer(request):
            return True
        session = request.cookies.get(COOKIE, "")
        given = form.get("form_token", "")
        return self.session_valid(session) and bool(given) and hmac.compare_digest(given, self._sign("form:" + session))
