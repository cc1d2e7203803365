"""The front door, one plain ASGI middleware around every route: Host names, bearer token,
the body limit while it streams, HEAD, metrics, access log, and a JSON 500 as last resort.

Plain ASGI rather than Starlette's BaseHTTPMiddleware, which costs about a third of a cached
answer's server time. The body limit counts bytes as they arrive, chunked or not: past the
limit the app's read fails, its answer is dropped and 413 goes out instead, so at most the
limit plus one buffer is read and nothing larger is spooled.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from featcache.service.config import LOOPBACK_HOSTS
from featcache.service.errors import INTERNAL, error_response
from featcache.service.metrics import UNMATCHED, Metrics

__all__ = ["OPEN_PATHS", "BodyTooLarge", "Guard"]

OPEN_PATHS = frozenset({"/healthz", "/docs", "/openapi.json", "/docs/oauth2-redirect"})
OPEN_PREFIX = "/docs/static/"

access = logging.getLogger("featcache.access")
log = logging.getLogger("featcache.service")


class BodyTooLarge(Exception):
    """Raised into the app's body read once the request body passes the limit."""


class _Exchange:
    """What the middleware learns about one request while it runs."""

    __slots__ = ("over", "read", "started", "status", "suppressed")

    def __init__(self) -> None:
        self.status = 500
        self.started = False
        self.suppressed = False
        self.over = False
        self.read = 0


class Guard:
    """Refuse foreign Host names (without a token), missing tokens and oversized bodies;
    count, time and log every request whatever its status."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        routes: Sequence[BaseRoute],
        token: str | None,
        allowed_hosts: Sequence[str],
        allowed_origins: Sequence[str] = (),
        max_body: int,
        metrics: Metrics,
        access_log: bool,
    ) -> None:
        self.app = app
        self.routes = routes
        self.expected = f"Bearer {token}".encode() if token is not None else None
        self.hosts = frozenset(h.lower() for h in (*LOOPBACK_HOSTS, *allowed_hosts))
        self.origins = frozenset(o.lower().rstrip("/") for o in allowed_origins)
        self.max_body = max_body
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        ex = _Exchange()
        path, root_path = scope["path"], scope.get("root_path", "")
        head = scope["method"] == "HEAD"
        if head:  # HEAD is GET without the body, wherever GET works
            scope = dict(scope, method="GET")

        async def limited_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                ex.read += len(message.get("body", b""))
                if ex.read > self.max_body:
                    ex.over = True
                    raise BodyTooLarge(f"request body over {self.max_body} bytes")
            return message

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                if ex.over:  # the app's answer to a failed read; 413 goes out instead
                    ex.suppressed = True
                    return
                ex.status = message["status"]
                ex.started = True
            elif ex.suppressed:
                return
            elif head:  # one empty body ends a HEAD answer (the headers keep the length)
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, tracked_send)
            else:
                await self.app(scope, limited_receive, tracked_send)
        except Exception:
            if not ex.over:
                log.exception("%s %s failed", scope["method"], scope["path"])
            if not ex.started and not ex.over:
                ex.status, ex.started = 500, True
                await error_response(500, "internal", INTERNAL)(scope, receive, send)
        finally:
            if ex.over and not ex.started:
                ex.status, ex.started = 413, True
                await _too_large(self.max_body, f"more than {self.max_body} bytes")(
                    scope, receive, send
                )
            route = self._route(scope, path, root_path)
            seconds = time.perf_counter() - started
            self.metrics.request(route, ex.status, seconds)
            if ex.read:
                self.metrics.body_bytes.inc(ex.read)
            if self.access_log:
                access.info(
                    "%s %s %d %.1fms",
                    "HEAD" if head else scope["method"],
                    route,
                    ex.status,
                    seconds * 1000,
                )

    def _refusal(self, scope: Scope) -> Any:
        host = authorization = length = b""
        origin: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"host":
                host = value
            elif name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
            elif name == b"origin":
                origin = value
        if origin is not None and not self._origin_allowed(origin.decode("latin-1")):
            # A page of another site (a cross-site form POST): it may not use this server.
            return error_response(
                403,
                "origin_not_allowed",
                "requests from a web page of another origin are refused; start the server "
                "with --allowed-origin ORIGIN to let that page use it",
            )
        if self.expected is None:
            if host and not self._host_allowed(host.decode("latin-1")):
                return error_response(
                    400,
                    "host_not_allowed",
                    "this server has no token and answers loopback Host names only; start it "
                    "with --allowed-host NAME (or a token) to serve others",
                )
        elif not self._open(scope["path"]) and not hmac.compare_digest(
            authorization,
            self.expected,  # constant time
        ):
            return error_response(
                401,
                "unauthorized",
                "send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": 'Bearer realm="featcache"'},
            )
        if length.isdigit() and int(length) > self.max_body:
            return _too_large(self.max_body, f"body of {int(length)} bytes")
        return None

    @staticmethod
    def _open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIX)

    def _host_allowed(self, host: str) -> bool:
        """A Host header naming exactly a loopback address (``localhost``, an IPv4 literal in
        127.0.0.0/8, ``::1``) or an allowed host; ``127.0.0.1.evil.example`` is not one."""
        if host.startswith("["):
            end = host.find("]")
            rest = host[end + 1 :]
            if end < 0 or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
                return False
            name = host[1:end]
        else:
            name, _, port = host.partition(":")
            if port and not port.isdigit():
                return False
        return _allowed_name(name.lower(), self.hosts)

    def _origin_allowed(self, origin: str) -> bool:
        if origin.lower().rstrip("/") in self.origins:
            return True
        try:
            parts = urlsplit(origin)
            name = parts.hostname
            parts.port  # noqa: B018 (a malformed port raises here)
        except ValueError:
            return False
        ok_scheme = parts.scheme in ("http", "https") and not parts.path.strip("/")
        return ok_scheme and name is not None and _allowed_name(name.lower(), self.hosts)

    def _route(self, scope: Scope, path: str, root_path: str) -> str:
        """The route template the request went to (or would have), else `UNMATCHED`."""
        route = scope.get("route")
        if route is None:  # refused before routing, or a mount (which rewrites the path)
            probe = {"type": "http", "path": path, "root_path": root_path}
            probe["method"] = str(scope["method"])
            for candidate in self.routes:
                match, _ = candidate.matches(probe)
                if match is not Match.NONE:
                    route = candidate
                    break
        template = getattr(route, "path", None)
        return template if isinstance(template, str) and template else UNMATCHED


def _allowed_name(name: str, hosts: frozenset[str]) -> bool:
    if name in hosts:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback  # 127.0.0.0/8 and ::1, as literals only


def _too_large(limit: int, what: str) -> Any:
    return error_response(
        413, "request_too_large", f"{what}: the request body limit is {limit} bytes"
    )
