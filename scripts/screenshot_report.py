#!/usr/bin/env python3
r"""Render an HTML report in headless chromium: take a screenshot and collect console errors.

Usage::

    python scripts/screenshot_report.py report.html shot.png [--width 1280] [--height 3000]

Runs ``chromium --headless --no-sandbox --disable-gpu --screenshot=shot.png --window-size=W,H
--enable-logging=stderr --v=0 file:///abs/report.html`` (Debian's ``chromium`` package; ``chromium-browser``
or ``google-chrome`` are used when ``chromium`` is not on PATH) and prints one JSON object:
``{"browser": ..., "returncode": ..., "screenshot": ..., "console_errors": [...], "images": n,
"broken_images": k}`` (the image counts come from :func:`count_rendered_images`). A console error is
a stderr line with ``ERROR:CONSOLE`` or ``Uncaught``. Exit code 0 when chromium wrote the
screenshot, logged no console error and every image decoded, 1 otherwise, 2 when no browser is installed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CONSOLE_MARKERS = ("ERROR:CONSOLE", "Uncaught")


def find_browser() -> str | None:
    """The first headless-capable browser on PATH, or None."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def screenshot(html_path: Path, png_path: Path, width: int = 1280, height: int = 3000,
               timeout_s: float = 120.0) -> dict[str, object]:
    """Render ``html_path`` into ``png_path``; return what happened (see the module docstring)."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(f"no headless browser on PATH (tried {', '.join(BROWSERS)}); "
                                "install Debian's chromium: apt-get install -y chromium")
    html_path = html_path.resolve()
    png_path = png_path.resolve()
    if png_path.exists():
        png_path.unlink()
    with tempfile.TemporaryDirectory(prefix="ddspec-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--screenshot={png_path}", f"--window-size={width},{height}",
               "--enable-logging=stderr", "--v=0", html_path.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, "HOME": profile})
    lines = (proc.stderr or "").splitlines()
    errors = [line for line in lines if any(m in line for m in CONSOLE_MARKERS)]
    return {"browser": browser, "returncode": proc.returncode, "screenshot": str(png_path),
            "written": png_path.is_file() and png_path.stat().st_size > 0, "console_errors": errors}


_PROBE = (
    "<script>window.addEventListener('load',function(){var n=0,bad=0;"
    "for(var i=0;i<document.images.length;i++){n++;var im=document.images[i];"
    "if(!(im.complete&&im.naturalWidth>0)){bad++;}}"
    "document.title='ddspec-images:'+n+':broken:'+bad;});</script>"
)


def count_rendered_images(html_path: Path, timeout_s: float = 120.0) -> tuple[int, int]:
    r"""``(images, broken)`` as chromium sees them after the page's load event.

    A copy of the page with a small probe script (the report itself has none) is loaded with
    ``--dump-dom``; the probe counts ``document.images`` and those that did not decode
    (``complete && naturalWidth > 0`` false) into the title.
    """
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError(f"no headless browser on PATH (tried {', '.join(BROWSERS)})")
    text = html_path.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>", 1)
    with tempfile.TemporaryDirectory(prefix="ddspec-chromium-") as profile:
        probe = Path(profile) / "probe.html"
        probe.write_text(text, encoding="utf-8")
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
               "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              env={**os.environ, "HOME": profile})
    marker = "ddspec-images:"
    start = proc.stdout.find(marker)
    if start < 0:
        raise RuntimeError(f"the probe did not run (chromium exit {proc.returncode}): {proc.stderr[-500:]}")
    _, n, _, bad = proc.stdout[start:].split("<", 1)[0].split(":")[:4]
    return int(n), int(bad)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("html", type=Path)
    parser.add_argument("png", type=Path)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args(argv)
    if not args.html.is_file():
        print(f"screenshot_report: html={str(args.html)!r}: no such file", file=sys.stderr)
        return 2
    try:
        result = screenshot(args.html, args.png, args.width, args.height)
    except FileNotFoundError as exc:
        print(f"screenshot_report: {exc}", file=sys.stderr)
        return 2
    images, broken = count_rendered_images(args.html)
    result["images"], result["broken_images"] = images, broken
    print(json.dumps(result, indent=2))
    return 0 if result["written"] and not result["console_errors"] and not broken else 1


if __name__ == "__main__":
    sys.exit(main())
