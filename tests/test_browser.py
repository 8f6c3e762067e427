"""tests/browser.py's check_page on small pages written here, in headless Chromium."""

from __future__ import annotations

import struct
import time
import zlib

import pytest

from .browser import check_page, chromium_available
from .conftest import require

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def _chromium():
    require(chromium_available(), "chromium is not installed (run tests/install_browser.sh as root)")


def write_png(path, width=4, height=3):
    """A valid red RGB PNG, built with zlib."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    rows = b"".join(b"\0" + b"\xff\0\0" * width for _ in range(height))
    path.write_bytes(PNG_SIGNATURE + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def check(tmp_path, body):
    page = tmp_path / "index.html"
    page.write_text(f"<!doctype html><html><head><meta charset='utf-8'></head><body>{body}</body></html>")
    return check_page(page, tmp_path / "shot.png")


def test_good_page(tmp_path):
    write_png(tmp_path / "figure.png")
    result = check(tmp_path, "<h1>Report</h1><img src='figure.png' width='200'><canvas id='c' width='100' height='50'>"
                             "</canvas><script>const g = document.getElementById('c').getContext('2d');"
                             "g.fillStyle = 'blue'; g.fillRect(10, 10, 80, 30); console.log('drawn');</script>")
    assert result.console_errors == [] and result.broken_images == [] and result.ok
    assert result.screenshot == tmp_path / "shot.png"
    assert result.screenshot.read_bytes()[:8] == PNG_SIGNATURE and result.screenshot.stat().st_size > 1000


def test_missing_image_is_reported_by_src(tmp_path):
    write_png(tmp_path / "figure.png")
    result = check(tmp_path, "<img src='figure.png'><img src='missing.png'>")
    assert result.broken_images == ["missing.png"] and not result.ok


def test_image_added_by_a_script_after_load_is_checked(tmp_path):
    result = check(tmp_path, "<script>setTimeout(() => { const i = document.createElement('img');"
                             "i.src = 'late.png'; document.body.appendChild(i); }, 300);</script>")
    assert result.broken_images == ["late.png"]


@pytest.mark.parametrize("script, expected", [
    ("console.error('boom')", "console.error: boom"),
    ("throw new Error('kaboom')", "uncaught: Error: kaboom"),
    ("setTimeout(() => { throw new TypeError('later') }, 100)", "uncaught: TypeError: later"),
])
def test_console_errors_and_uncaught_exceptions_are_reported(tmp_path, script, expected):
    result = check(tmp_path, f"<p>text</p><script>console.log('fine'); console.warn('fine'); {script}</script>")
    assert len(result.console_errors) == 1 and result.console_errors[0].startswith(expected), result.console_errors
    assert result.broken_images == [] and not result.ok


def test_missing_script_is_a_console_error(tmp_path):
    result = check(tmp_path, "<script src='vega.js'></script>")
    assert len(result.console_errors) == 1 and "vega.js" in result.console_errors[0]


def test_a_page_that_never_loads_times_out(tmp_path):
    page = tmp_path / "index.html"
    page.write_text("<script>while (true) {}</script>")
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="within 3 s"):
        check_page(page, tmp_path / "shot.png", timeout=3)
    assert time.monotonic() - start < 15
