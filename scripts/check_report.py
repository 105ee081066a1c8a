#!/usr/bin/env python3
"""Check a report.html in headless Chromium: every image loads, every in-page anchor has its target, every linked
file exists, and the page fits the given width (tables may scroll inside their boxes); save a screenshot.

    python scripts/check_report.py runs/fashion_mnist/report/report.html [--screenshot shot.png] [--width 900]
        [--height 1400] [--full-page]

Exit status 0 when the report passes, 1 with one line per problem otherwise, 2 when Chromium is missing (Debian:
`apt-get install chromium`) or the file is not there. The page itself is not modified: a copy with a small
checking script added is loaded from the same folder (so relative links resolve) and removed afterwards.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "chrome")
MARKER = "nst-report-check"
PROBE = """<script>
window.addEventListener("load", () => {
  const result = {broken_images: [], broken_anchors: [], width: document.documentElement.scrollWidth,
                  viewport: window.innerWidth, height: document.documentElement.scrollHeight,
                  images: document.images.length};
  for (const image of document.images) {
    if (!(image.complete && image.naturalWidth > 0)) result.broken_images.push(image.alt || image.src.slice(0, 80));
  }
  for (const link of document.querySelectorAll('a[href^="#"]')) {
    const id = decodeURIComponent(link.getAttribute("href").slice(1));
    if (id && !document.getElementById(id)) result.broken_anchors.push(id);
  }
  const out = document.createElement("pre");
  out.id = "%s";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script>""" % MARKER


@dataclass
class CheckResult:
    """What the browser saw: problems (empty when the report passes), page size in CSS pixels, image count."""

    problems: list[str] = field(default_factory=list)
    width: int = 0
    height: int = 0
    images: int = 0
    screenshot: Path | None = None


def find_browser() -> str | None:
    """Path of a Chromium-family browser on PATH, or None."""
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


class _Links(HTMLParser):
    """Collects ids, in-page anchors and relative file links (href/src) of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.anchors: list[str] = []
        self.files: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        for key in ("href", "src"):
            link = values.get(key)
            if not link or link.startswith("data:"):
                continue
            parsed = urlparse(link)
            if link.startswith("#"):
                self.anchors.append(unquote(link[1:]))
            elif not parsed.scheme and not parsed.netloc:
                self.files.append(unquote(parsed.path))
            elif parsed.scheme in ("http", "https", "file") or parsed.netloc:
                self.files.append(f"external:{link}")


def static_problems(html_path: Path) -> list[str]:
    """Anchors without a target and relative links to missing files, read from the HTML source."""
    parser = _Links()
    parser.feed(html_path.read_text(encoding="utf-8"))
    problems = [f"broken anchor: #{a} has no element with that id" for a in parser.anchors if a not in parser.ids]
    for link in parser.files:
        if link.startswith("external:"):
            problems.append(f"external resource (the report must be self-contained): {link[9:]}")
        elif not (html_path.parent / link).is_file():
            problems.append(f"missing file: {link} (linked from {html_path.name})")
    return problems


def _run(browser: str, arguments: list[str], timeout: float) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="nst-chromium-") as profile:
        command = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                   "--no-first-run", "--hide-scrollbars", "--allow-file-access-from-files",
                   f"--user-data-dir={profile}", *arguments]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "HOME": profile})


def check_report(html_path: str | Path, screenshot: str | Path | None = None, width: int = 900,
                 height: int = 1400, full_page: bool = False, browser: str | None = None,
                 timeout: float = 120) -> CheckResult:
    """Load `html_path` in headless Chromium at `width` x `height` CSS pixels and report what is broken.

    Raises FileNotFoundError when the page or the browser is missing; subprocess.TimeoutExpired after `timeout` s.
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"no report at {html_path}")
    browser = browser or find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found (Debian: apt-get install chromium)")
    result = CheckResult(problems=static_problems(html_path))
    text = html_path.read_text(encoding="utf-8")
    probe_text = text.replace("</body>", PROBE + "</body>", 1) if "</body>" in text else text + PROBE
    fd, probe_name = tempfile.mkstemp(prefix=".check-", suffix=".html", dir=html_path.parent)
    probe = Path(probe_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(probe_text)
        done = _run(browser, [f"--window-size={width},{height}", "--virtual-time-budget=15000", "--dump-dom",
                              probe.as_uri()], timeout)
    finally:
        probe.unlink(missing_ok=True)
    found = re.search(rf'<pre id="{MARKER}">(.*?)</pre>', done.stdout, re.DOTALL)
    if not found:
        result.problems.append(f"the page did not finish loading in Chromium (exit {done.returncode}): "
                               f"{done.stderr.strip()[-300:]}")
        return result
    seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                      .replace("&gt;", ">"))
    result.width, result.height, result.images = seen["width"], seen["height"], seen["images"]
    result.problems += [f"image did not load: {alt}" for alt in seen["broken_images"]]
    result.problems += [f"broken anchor in the browser: #{a}" for a in seen["broken_anchors"]
                        if f"broken anchor: #{a} has no element with that id" not in result.problems]
    if seen["width"] > seen["viewport"]:
        result.problems.append(f"page is {seen['width']} px wide in a {seen['viewport']} px window (horizontal "
                               "scrolling of the whole page)")
    if screenshot is not None:
        shot = Path(screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot_height = max(height, seen["height"]) if full_page else height
        done = _run(browser, [f"--window-size={width},{shot_height}", "--virtual-time-budget=15000",
                              f"--screenshot={shot}", html_path.as_uri()], timeout)
        if not shot.is_file() or shot.stat().st_size == 0:
            result.problems.append(f"no screenshot written (exit {done.returncode}): {done.stderr.strip()[-300:]}")
        else:
            result.screenshot = shot
    return result


def main(argv: list[str] | None = None) -> int:
    """Command line: check one report, print the problems, exit 0 / 1 / 2."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="report.html written by nst-report")
    parser.add_argument("--screenshot", help="PNG to write (the first screen, or the whole page with --full-page)")
    parser.add_argument("--width", type=int, default=900, help="window width in CSS pixels (default 900)")
    parser.add_argument("--height", type=int, default=1400, help="window height in CSS pixels (default 1400)")
    parser.add_argument("--full-page", action="store_true", help="screenshot the whole page, not the first screen")
    args = parser.parse_args(argv)
    try:
        result = check_report(args.report, args.screenshot, args.width, args.height, args.full_page)
    except FileNotFoundError as error:
        print(f"check_report: error: {error}", file=sys.stderr)
        return 2
    except subprocess.TimeoutExpired as error:
        print(f"check_report: error: Chromium did not finish in {error.timeout:.0f} s", file=sys.stderr)
        return 1
    for problem in result.problems:
        print(f"check_report: {problem}", file=sys.stderr)
    print(f"{args.report}: {result.images} images, page {result.width} x {result.height} px at width "
          f"{args.width}; {len(result.problems)} problem(s)" +
          (f"; screenshot {result.screenshot}" if result.screenshot else ""))
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
