"""Who may ask the app anything, in one place (as Jupyter Server does it, for a server that runs code on the
user's machine and is reached with the user's browser):

- the Host check (``CheckHost``, every request, every bind): a request must name this machine (its loopback
  and own names, the bound address, ``--allow-host``). A page elsewhere that re-points its own DNS name at us
  (DNS rebinding) still sends its own name, and is refused;
- the token (``RequireToken``, every request but /healthz, when the settings have one: always on a
  non-loopback bind): ``?token=``, ``Authorization: Bearer``/``token``, or the cookie the printed URL sets
  when the page is opened through it (then the page's own fetches and links carry it);
- the own-page check (``check_own_page``, every state-changing request, as a dependency in app.py): a
  browser's request must come from the app's own page, by its ``Origin``/``Sec-Fetch-Site`` and by the
  ``X-Requested-With: cnnlab`` header the page's script sends; a cross-site form or beacon can send neither.

Every refusal is a JSON ``{"error": ...}`` naming what to do.
"""

from __future__ import annotations

import functools
import hmac
import ipaddress
import json
import re
import socket
from http.cookies import SimpleCookie
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import HTTPException, Request

from .settings import LOOPBACK_NAMES, ServeSettings

PAGE_HEADER = ("x-requested-with", "cnnlab")  # what the page's fetches send; a form or a beacon cannot
OPEN_PATHS = ("/healthz",)  # answered without the token (a liveness probe learns nothing)
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^:\[\]]+)(?::\d{1,5})?$")  # name or [IPv6], then an optional port


@functools.cache
def _machine_names() -> frozenset[str]:
    """This machine's host names and the addresses they resolve to (best effort: a machine without DNS
    still has its loopback names)."""
    names = {socket.gethostname(), socket.getfqdn()}
    for name in list(names):
        try:
            names |= {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    return frozenset(n.lower() for n in names if n)


def allowed_host_names(settings: ServeSettings) -> frozenset[str] | None:
    """The Host names answered (lower case, no port, IPv6 without brackets); None answers any."""
    if settings.allowed_hosts is not None:
        listed = {h.lower().strip("[]") for h in settings.allowed_hosts}
        return None if "*" in listed or not listed else frozenset(listed)
    bound = settings.host.lower().strip("[]")
    return frozenset({*LOOPBACK_NAMES, *_machine_names(), *settings.extra_hosts, bound} - {"", "0.0.0.0", "::"})


def host_name(header: str) -> str | None:
    """The Host header's name without its port (``[::1]:8000`` -> ``::1``), or None when malformed."""
    match = _HOST.match(header.strip())
    return match.group(1).strip("[]").lower() if match else None


def host_allowed(name: str | None, allowed: frozenset[str] | None, any_ip: bool) -> bool:
    """`any_ip`: on a wildcard bind (0.0.0.0, ::) any IP literal is one of ours or a port forward to us, and
    DNS rebinding always sends a name, so an IP literal cannot be an attack on the Host check."""
    if name is None:
        return False
    if allowed is None or name in allowed:
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return address.is_loopback or any_ip


async def send_json(send, status: int, message: str, headers: list[tuple[bytes, bytes]] = ()) -> None:
    """A JSON ``{"error": message}`` answer from an ASGI middleware (outside FastAPI's error handlers)."""
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def _headers(scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers") or []}


class CheckHost:
    """ASGI middleware: 400 JSON for a Host this server is not reached by (see allowed_host_names)."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.allowed = app, allowed_host_names(settings)
        self.any_ip = settings.host in ("0.0.0.0", "::", "")

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            header = _headers(scope).get("host", "")
            if not host_allowed(host_name(header), self.allowed, self.any_ip):
                shown = header[:80] or "(none)"
                return await send_json(send, 400, f"Host {shown!r} is not a name of this server; open it by its "
                                                  f"address, or start it with --allow-host NAME")
        return await self.app(scope, receive, send)


def cookie_name(settings: ServeSettings) -> str:
    """One cookie per port: cookies are not kept apart by port, two servers on one machine would clash."""
    return f"cnnlab-token-{settings.port}"


def presented_token(headers: dict[str, str], query: str, cookie: str) -> tuple[str | None, str]:
    """(the token the request carries, where: "header", "query", "cookie" or "")."""
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip(), "header"
    for key, value in parse_qsl(query):
        if key == "token":
            return value, "query"
    jar = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is no token, not a 500  # noqa: BLE001
        return None, ""
    return (jar[cookie].value, "cookie") if cookie in jar else (None, "")


class RequireToken:
    """ASGI middleware: every request but /healthz carries the token (401 without one, 403 with a wrong one).
    Opening the page with ``?token=`` sets an HttpOnly, SameSite=Strict cookie and redirects to the address
    without it, so the page's own requests, its progress streams and its report links carry it."""

    def __init__(self, app, settings: ServeSettings):
        self.app, self.token, self.cookie = app, settings.token or "", cookie_name(settings)

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket") or not self.token or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        query = scope.get("query_string", b"").decode("latin-1")
        token, where = presented_token(_headers(scope), query, self.cookie)
        if token is None:
            return await send_json(send, 401, "this server needs its token: open the URL `cnnlab serve` printed "
                                              "(…/?token=…), or send Authorization: Bearer TOKEN",
                                   [(b"www-authenticate", b"Bearer")])
        if not hmac.compare_digest(token.encode(), self.token.encode()):
            return await send_json(send, 403, "wrong token: use the one `cnnlab serve` printed at start")
        scope.setdefault("state", {})["token_via"] = where
        if where == "query" and scope["method"] == "GET" and scope["path"] == "/":
            rest = urlencode([(k, v) for k, v in parse_qsl(query) if k != "token"])
            cookie = f"{self.cookie}={self.token}; HttpOnly; SameSite=Strict; Path=/"
            await send({"type": "http.response.start", "status": 303,
                        "headers": [(b"location", ("/" + (f"?{rest}" if rest else "")).encode()),
                                    (b"set-cookie", cookie.encode()), (b"content-length", b"0")]})
            return await send({"type": "http.response.body", "body": b""})
        return await self.app(scope, receive, send)


_BROWSER_MARKERS = ("origin", "sec-fetch-site", "sec-fetch-mode", "referer", "cookie")


def check_own_page(request: Request) -> None:
    """403 unless a state-changing request comes from the app's own page (see the module docstring).

    A browser always marks its requests (a ``Mozilla/`` User-Agent, an Origin on every cross-origin POST,
    Sec-Fetch-* in current browsers), and a page cannot remove those marks without a CORS preflight this
    server never grants. So a request with such marks must carry the page's header, and its Origin and
    Sec-Fetch-Site must say same-origin; a program (curl, a script: no marks) or a request with the token in
    its Authorization header needs no page header. A foreign Origin is refused in every case."""
    headers = request.headers
    origin = headers.get("origin")
    own = headers.get("host", "").lower()
    if origin is not None and (origin == "null" or urlsplit(origin.lower()).netloc != own):
        raise HTTPException(403, f"cross-origin request refused: {origin[:80]} is not this server's page; use "
                                 f"the page itself, or a program without an Origin header")
    site = headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HTTPException(403, f"cross-site request refused (Sec-Fetch-Site: {site[:40]}); use the page itself")
    if request.scope.get("state", {}).get("token_via") == "header":
        return  # a program that holds the token
    browser = any(h in headers for h in _BROWSER_MARKERS) or headers.get("user-agent", "").startswith("Mozilla/")
    if browser and headers.get(PAGE_HEADER[0], "").lower() != PAGE_HEADER[1]:
        raise HTTPException(403, f"request refused: a browser's request must come from the cnnlab page (header "
                                 f"X-Requested-With: cnnlab); reload the page")
