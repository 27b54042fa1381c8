"""Seeing a running App, all from its event bus: logs (``logs``), Prometheus metrics
(``Metrics``), health probes (``Probes``), OpenTelemetry traces (``Tracing``), and an HTTP
server for them (``serve``, or ``wsgi_app`` to mount in your own).

```python
from redrive.observe import Metrics, Probes, Tracing, serve

metrics, probes = Metrics().attach(app), Probes().attach(app)
Tracing().attach(app)                          # needs: pip install 'redrive[otel]'
with serve(9464, metrics=metrics, probes=probes):
    app.run()
```
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redrive.observe.metrics import Metrics
    from redrive.observe.probes import Check, Probes
    from redrive.observe.server import Server, serve, wsgi_app
    from redrive.observe.tracing import Tracing

__all__ = ["ALERT_RULES", "Check", "Metrics", "Probes", "Server", "Tracing", "serve", "wsgi_app"]

ALERT_RULES = Path(__file__).with_name("alerts.yml")
"""Prometheus alert rules for redrive's metrics, shipped with the package."""

_WHERE = {
    "Metrics": "metrics",
    "Check": "probes",
    "Probes": "probes",
    "Server": "server",
    "serve": "server",
    "wsgi_app": "server",
    "Tracing": "tracing",
}


def __getattr__(name: str) -> Any:
    # Imported when asked for: an App that serves no metrics never imports prometheus_client.
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'redrive.observe' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"redrive.observe.{module}"), name)
