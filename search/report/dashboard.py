"""optuna-dashboard behind a guard: `budgetnas dashboard` serves only this.

optuna-dashboard never checks the HTTP Host header, so a web page the user merely visits can
point its own DNS name at 127.0.0.1 (DNS rebinding) and then call the local dashboard's API
from the browser as same-origin, e.g. `DELETE /api/studies/ID`. The guard answers 403, without
calling the dashboard, to any request whose Host is not a loopback name (or the address the user
bound to on purpose), and by default refuses every mutating call: read-only unless the user
asks for note editing only (`allow_notes`) or for everything (`writable`).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# optuna_dashboard/_app.py, create_app(): save_study_note and save_trial_note. Bottle's <...:int>
# filter is -?\d+; these match a subset of what it routes there, never another route.
NOTE_PATHS = (re.compile(r"/api/studies/-?[0-9]+/note"), re.compile(r"/api/studies/-?[0-9]+/-?[0-9]+/note"))
_PORT = re.compile(r"(:[0-9]*)?")


def host_name(header: str | None) -> str | None:
    """The host name of a Host header, lower case, port and IPv6 brackets stripped;
    None when absent or malformed (two headers joined by a comma, a non-numeric port)."""
    h = (header or "").strip().lower()
    if h.startswith("["):
        end = h.find("]")
        if end < 0:
            return None
        name, rest = h[1:end], h[end + 1:]
    elif h.count(":") > 1:  # a bare IPv6 address: not valid in a Host header, but unambiguous
        name, rest = h, ""
    else:
        name, sep, port = h.partition(":")
        rest = sep + port
    return name if name and _PORT.fullmatch(rest) else None


def is_loopback(name: str) -> bool:
    """localhost, ::1 or any 127.x.x.x."""
    name = name.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


WSGIApp = Callable[[dict, Callable], Iterable[bytes]]


class Guard:
    """WSGI middleware around optuna-dashboard: Host check, then read-only unless told otherwise."""

    def __init__(self, app: WSGIApp, bind_host: str = "127.0.0.1", *, writable: bool = False,
                 allow_notes: bool = False):
        self.app = app
        self.extra_host = None if is_loopback(bind_host) else bind_host.strip("[]").lower()
        self.writable = writable
        self.allow_notes = allow_notes

    def host_allowed(self, header: str | None) -> bool:
        name = host_name(header)
        return name is not None and (is_loopback(name) or name == self.extra_host)

    def refusal(self, environ: dict) -> str | None:
        """Why this request is refused; None to pass it to the dashboard."""
        if not self.host_allowed(environ.get("HTTP_HOST")):
            return "forbidden: Host header is not a loopback name (DNS rebinding guard)\n"
        method = environ.get("REQUEST_METHOD", "GET").upper()  # Bottle routes on the upper-cased method
        if method in SAFE_METHODS or self.writable:
            return None
        path = environ.get("PATH_INFO") or "/"
        if self.allow_notes and method == "PUT" and any(p.fullmatch(path) for p in NOTE_PATHS):
            return None
        if self.allow_notes:
            return "forbidden: only notes are editable (--allow-notes); --writable allows changes\n"
        return "forbidden: the dashboard is read-only; --allow-notes or --writable allows changes\n"

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        reason = self.refusal(environ)
        if reason is None:
            return self.app(environ, start_response)
        body = reason.encode()
        start_response("403 Forbidden", [("Content-Type", "text/plain; charset=utf-8"),
                                         ("Content-Length", str(len(body)))])
        return [body]


def build_app(storage, bind_host: str = "127.0.0.1", artifact_store=None, *, writable: bool = False,
              allow_notes: bool = False) -> Guard:
    """optuna-dashboard's WSGI app on `storage`, guarded."""
    from optuna_dashboard import wsgi

    return Guard(wsgi(storage, artifact_store=artifact_store), bind_host, writable=writable,
                 allow_notes=allow_notes)


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class _Handler(WSGIRequestHandler):
    def address_string(self) -> str:  # log the client's address; no reverse DNS lookup per request
        return self.client_address[0]


class _WSGIServer6(WSGIServer):
    address_family = socket.AF_INET6


def bind(app: WSGIApp, host: str, port: int):
    """A wsgiref server for `app` (as optuna_dashboard.run_server makes one, via Bottle), bound to
    host:port and not serving yet: a bad host or a taken port is an OSError before anything is
    written. `serve_forever()` serves until Ctrl-C, which propagates as KeyboardInterrupt."""
    server_cls = _WSGIServer6 if ":" in host else WSGIServer
    return make_server(host, port, app, server_cls, _Handler)
