"""`redrive lab --open`: the report opens in a browser when there is one, and the command
never fails because there is none."""

from __future__ import annotations

import webbrowser
from pathlib import Path

import pytest

from redrive.cli import build_parser
from redrive.lab.cli import open_report


class Browser(webbrowser.BaseBrowser):
    def __init__(self, works: bool) -> None:
        super().__init__("firefox")
        self.works = works
        self.opened: list[str] = []

    def open(self, url: str, new: int = 0, autoraise: bool = True) -> bool:
        self.opened.append(url)
        return self.works


@pytest.fixture
def report(tmp_path: Path) -> Path:
    path = tmp_path / "redrive-report.html"
    path.write_text("<html></html>")
    return path


def test_open_is_a_lab_option() -> None:
    assert build_parser().parse_args(["lab", "--open"]).open is True
    assert build_parser().parse_args(["lab"]).open is False


def test_the_report_opens_in_the_browser(report, monkeypatch) -> None:
    browser = Browser(works=True)
    monkeypatch.setattr(webbrowser, "get", lambda: browser)
    assert open_report(report) == f"opened {report.as_uri()} in firefox"
    assert browser.opened == [report.as_uri()]


def _none() -> webbrowser.BaseBrowser:
    raise webbrowser.Error("could not locate runnable browser")


@pytest.mark.parametrize("get", [_none, lambda: Browser(works=False)], ids=["none", "fails"])
def test_without_a_browser_it_says_where_the_file_is(report, monkeypatch, get) -> None:
    monkeypatch.setattr(webbrowser, "get", get)
    assert open_report(report) == f"no web browser to open here: open {report} in one"


def test_a_console_browser_is_not_started_unless_browser_names_it(report, monkeypatch) -> None:
    monkeypatch.delenv("BROWSER", raising=False)
    monkeypatch.setattr(webbrowser, "get", lambda: webbrowser.GenericBrowser("lynx"))
    assert open_report(report).startswith("no web browser to open here")
