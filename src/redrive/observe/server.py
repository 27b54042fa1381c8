"""``/metrics``, ``/livez`` and ``/readyz`` over HTTP: a server of their own (what
``redrive run --metrics-port`` starts), or a WSGI app to mount in yours.

```python
from redrive.observe import Metrics, Probes, serve, wsgi_app

metrics, probes = Metrics().attach(app), Probes().attach(app)
with serve(9464, metrics=metrics, probes=probes):   # a daemon thread; stopped on exit
    app.run()

# or, in an existing WSGI application (Flask, Django ...): mount wsgi_app(metrics, probes)
```

The probes answer ``200 ok: <detail>`` or ``503 failing: <detail>`` as plain text.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from types import TracebackType
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client.exposition import choose_encoder

from redrive.errors import ConfigError
from redrive.observe.metrics import Metrics
from redrive.observe.probes import Check, Probes

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


def wsgi_app(metrics: Metrics | None = None, probes: Probes | None = None) -> WsgiApp:
    """A WSGI app serving ``/metrics`` (when `metrics` is given), ``/livez`` and ``/readyz``
    (when `probes` is given); other paths answer 404."""

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path == "/metrics" and metrics is not None:
            encoder, content_type = choose_encoder(environ.get("HTTP_ACCEPT", ""))
            body = encoder(metrics.registry)
            start_response("200 OK", [("Content-Type", content_type)])
            return [body]
        if path in ("/livez", "/readyz") and probes is not None:
            check: Check = probes.live() if path == "/livez" else probes.ready()
            status = "200 OK" if check.ok else "503 Service Unavailable"
            text = f"{'ok' if check.ok else 'failing'}: {check.detail}\n".encode()
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [text]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /livez or /readyz\n"]

    return app


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # every scrape would be a line on stderr


class Server:
    """A running HTTP server of ``wsgi_app``; ``close()`` (or leaving ``with``) stops it."""

    def __init__(self, httpd: _Server) -> None:
        self._httpd = httpd
        self.port: int = httpd.server_address[1]
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2},
            name="redrive:metrics", daemon=True,
        )  # fmt: skip
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def __enter__(self) -> Server:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def serve(
    port: int,
    *,
    host: str = "0.0.0.0",
    metrics: Metrics | None = None,
    probes: Probes | None = None,
) -> Server:
    """Serve ``wsgi_app(metrics, probes)`` on `host`:`port` (0: a free port, see
    ``Server.port``) from a daemon thread. Raises ``ConfigError`` when the port is taken."""
    try:
        httpd = make_server(host, port, wsgi_app(metrics, probes), _Server, _QuietHandler)
    except OSError as exc:
        raise ConfigError("metrics port", f"cannot listen on {host}:{port}: {exc}") from None
    return Server(httpd)
