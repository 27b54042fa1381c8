"""`redrive lab`: run the failure scenarios against a real broker and draw what happened.

Exit status 0 when every verdict matches the contract, 1 when one does not, 2 for a usage
error (an unknown scenario).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import webbrowser
from pathlib import Path

from redrive.broker import kafka_for_run
from redrive.lab import report, scenarios, terminal
from redrive.lab.scenarios import run, select


def run_lab(args: argparse.Namespace) -> int:
    if getattr(args, "list", False):
        for n, s in enumerate(scenarios.SCENARIOS.values(), 1):
            print(f"{n:2}. {s.name:18} {s.title} ({s.contract})")
        return 0
    try:
        chosen = select(args.scenarios)
    except ValueError as exc:
        print(f"redrive lab: {exc}", file=sys.stderr)
        return 2
    # The scenarios fail on purpose; the timeline says what happened, so keep logs quiet
    # (for the run only: the level is put back, also when the lab is run in-process).
    quiet = logging.getLogger("redrive")
    level = quiet.level
    if not getattr(args, "verbose", False):
        quiet.setLevel(logging.CRITICAL)
    try:
        return _run(args, chosen)
    finally:
        quiet.setLevel(level)


def _run(args: argparse.Namespace, chosen: list[scenarios.Scenario]) -> int:
    out = sys.stderr if args.json else sys.stdout
    started = time.monotonic()
    results = []
    print("redrive lab: starting Kafka ...", file=out, flush=True)
    with kafka_for_run() as servers:
        print(
            f"redrive lab: {len(chosen)} scenario(s) against Kafka at {servers} "
            f"(ready after {time.monotonic() - started:.1f} s)",
            file=out,
            flush=True,
        )
        for spec in chosen:
            print("\n" + terminal.starting(spec, len(scenarios.SCENARIOS)), file=out, flush=True)
            result = run(spec, servers)
            results.append(result)
            print(terminal.render(result, report.trace_of(result)), file=out, flush=True)
    total = time.monotonic() - started
    passed = sum(r.passed for r in results)
    print("\n" + "\n".join(terminal.finished(r) for r in results), file=out)
    path = Path(args.report)
    path.write_text(report.html(results, servers=servers, total=total), encoding="utf-8")
    if args.json:
        print(json.dumps(report.as_json(results), indent=1))
    print(f"\n{passed}/{len(results)} scenarios match the contract ({total:.1f} s)", file=out)
    print(f"report: {path.resolve()}", file=out)
    if getattr(args, "open", False):
        print(open_report(path), file=out)
    return 0 if passed == len(results) else 1


def open_report(path: Path) -> str:
    """Open the report in a web browser; what happened, as a line to print.

    Never raises: without a graphical browser (a server, a container, an SSH session) the
    line says where the file is instead. A console browser (lynx, w3m) is not used unless
    ``BROWSER`` names it: it would take over the terminal and cannot draw the diagrams.
    """
    url = path.resolve().as_uri()
    try:
        browser = webbrowser.get()
        console = type(browser) is webbrowser.GenericBrowser and not os.environ.get("BROWSER")
        if not console and browser.open(url):
            return f"opened {url} in {browser.name or 'your browser'}"
    except Exception:  # webbrowser.Error (none found), or a browser that failed to start
        pass
    return f"no web browser to open here: open {path.resolve()} in one"
