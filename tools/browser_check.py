"""Open every page of the built book in headless Chromium and check what a reader sees.

    python tools/browser_check.py [_build/html]        # `make browser-test`

For every page listed in _toc.yml: no console errors, every image loaded (natural width > 0),
no raw \\( \\[ or $...$ left where MathJax should have typeset, no printed output wider than
its column (folded cells opened first; the widths are printed), every figure in a cell's output
described by its alt text (tools/set_alt_text.py writes it; without it Sphinx puts the image's
hashed file name there), and on a notebook page the launch button's Colab URL names this page's
.ipynb under _config.yml's repository URL. Also: no page was written that _toc.yml does not
list. Uses Debian's chromium and chromedriver (.ci/run installs them) through Selenium, with a
throwaway profile that is removed afterwards; the book is served over HTTP from a local port.

KNOWN_OVERWIDE lists the pages whose stored outputs are known to be wider than the column: their
widths are printed as notes, not failures, until the page is re-run and stored with outputs that
fit (then take it off the list). A wide output on any other page fails.
"""
import argparse
import contextlib
import functools
import http.server
import re
import shutil
import sys
import tempfile
import threading
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900"]
SPHINX_PAGES = {"genindex.html", "search.html", "py-modindex.html"}   # generated, not sources
NOTE = "note: "          # a line of a page's report that does not fail it

# Pages whose stored text outputs are wider than the book's column (a horizontal scrollbar hides
# their right side). They were stored before this check existed and cannot be re-run here; each
# leaves the list when it is re-stored with outputs that fit (tables as HTML through pandas, or
# lines within 76 characters). Measured in a 676 px column, the book built on 2026-12-03;
# chapters 0-4 and the data-parallel appendix left it when re-stored the same day.
KNOWN_OVERWIDE = {
}

# Text the reader sees outside code: MathJax removes the delimiters of what it typesets.
VISIBLE_TEXT_JS = """
const body = document.querySelector('main') || document.body;
const copy = body.cloneNode(true);
copy.querySelectorAll('pre, code, script, style, .MathJax, mjx-container').forEach(e => e.remove());
return copy.textContent;
"""
# Inline TeX that MathJax left as typed: $x$, $O(1/k^2)$ (not a lone dollar sign in prose).
RAW_DOLLAR_MATH = re.compile(r"\$(?:[^\s$]|[^\s$][^$\n]{0,120}?[^\s$])\$")
# Printed outputs (text, and HTML tables) wider than the box they sit in, with folded cells
# (solutions, hidden outputs) opened first so that what a reader unfolds is measured too.
WIDE_OUTPUTS_JS = """
document.querySelectorAll('details').forEach(d => { d.open = true; });
const outputs = document.querySelectorAll('.cell_output pre, .cell_output .output.text_html');
return [...outputs].filter(e => e.scrollWidth > e.clientWidth + 1).map(e => ({
    width: e.scrollWidth, column: e.clientWidth,
    start: e.textContent.trim().split('\\n')[0].slice(0, 60)}));
"""
BROKEN_IMAGES_JS = """
return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
                            .map(i => i.getAttribute('src'));
"""
# The figures that cells output, with their alt text as the page has it.
OUTPUT_IMAGES_JS = """
return [...document.querySelectorAll('.cell_output img')].map(i => ({
    src: i.getAttribute('src'), alt: i.getAttribute('alt') || ''}));
"""
# An alt text that names a file (`_images/<sha256>.png`, what Sphinx writes when a cell gives
# none) or a bare hash describes nothing.
FILE_NAME_ALT = re.compile(r"\.(png|jpe?g|gif|svg|pdf)$|^\S*[0-9a-f]{32,}\S*$", re.IGNORECASE)
WAIT_FOR_MATHJAX_JS = """
const done = arguments[arguments.length - 1];
const images = [...document.images].map(i => i.complete ? null :
    new Promise(r => { i.onload = i.onerror = r; })).filter(Boolean);
const typeset = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
Promise.all([typeset, ...images]).then(() => done(true), () => done(false));
"""


def toc_pages(book):
    """The source paths (no suffix) that _toc.yml lists, root first."""
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))
    for part in toc.get("parts", [toc]):
        walk(part.get("chapters"))
    return [str(Path(p).with_suffix("")) for p in pages]


def pages_outside_toc(html, listed):
    written = {str(p.relative_to(html).with_suffix("")) for p in html.rglob("*.html")
               if not p.relative_to(html).parts[0].startswith("_") and p.name not in SPHINX_PAGES}
    return sorted(written - set(listed))


def colab_url(book, page):
    config = yaml.safe_load((book / "_config.yml").read_text())
    repo = config["repository"]
    owner_name = repo["url"].rstrip("/").removeprefix("https://github.com/")
    path = "/".join(p for p in (repo.get("path_to_book", "").strip("/"), page + ".ipynb") if p)
    base = config["launch_buttons"]["colab_url"].rstrip("/")
    return f"{base}/github/{owner_name}/blob/{repo.get('branch', 'main')}/{path}"


def serve(directory):
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@contextlib.contextmanager
def browser():
    """Headless Chromium with a throwaway profile, removed when the browser quits."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    profile = tempfile.mkdtemp(prefix="chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
        try:
            driver.set_script_timeout(60)
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def raw_tex(text):
    """Where the visible text still holds TeX delimiters, as report lines."""
    found = []
    for delimiter in ("\\(", "\\["):
        if delimiter in text:
            at = text.index(delimiter)
            found.append(f"raw TeX left untypeset: ...{text[max(0, at - 30):at + 40]!r}...")
    if match := RAW_DOLLAR_MATH.search(text):
        found.append(f"raw $...$ left untypeset: {match.group()!r}")
    return found


def undescribed(alt):
    """True if an image's alt text is empty or only a file name or hash."""
    return not alt.strip() or bool(FILE_NAME_ALT.search(alt.strip()))


def undescribed_figures(driver):
    return [f"figure without a description (alt {image['alt']!r}): {image['src']}"
            for image in driver.execute_script(OUTPUT_IMAGES_JS) if undescribed(image["alt"])]


def wide_outputs(driver, page):
    """Outputs wider than their column, with their widths: failures, or notes on a known page."""
    prefix = NOTE + "known over-wide: " if page in KNOWN_OVERWIDE else ""
    return [f"{prefix}output {o['width']} px wide in a {o['column']} px column: {o['start']!r}"
            for o in driver.execute_script(WIDE_OUTPUTS_JS)]


def check_page(driver, base_url, book, page):
    """The problems a reader would meet on one page, as lines of text."""
    problems = []
    driver.get(f"{base_url}/{page}.html")
    driver.execute_async_script(WAIT_FOR_MATHJAX_JS)
    for entry in driver.get_log("browser"):
        if entry["level"] == "SEVERE":
            problems.append(f"console error: {entry['message']}")
    for src in driver.execute_script(BROKEN_IMAGES_JS):
        problems.append(f"image not loaded: {src}")
    problems += raw_tex(driver.execute_script(VISIBLE_TEXT_JS))
    problems += wide_outputs(driver, page)
    problems += undescribed_figures(driver)
    if (book / f"{page}.ipynb").exists():
        links = driver.execute_script(
            "return [...document.querySelectorAll('a[href*=\"colab\"]')].map(a => a.href);")
        expected = colab_url(book, page)
        if expected not in links:
            problems.append(f"Colab launch URL is {links or 'missing'}, expected {expected}")
    return problems


def check_book(html, book=ROOT):
    html, book = Path(html).resolve(), Path(book).resolve()
    listed = toc_pages(book)
    report = {page: [f"page not listed in _toc.yml: {page}.html"] for page in pages_outside_toc(html, listed)}
    server = serve(html)
    try:
        with browser() as driver:
            base = f"http://127.0.0.1:{server.server_address[1]}"
            for page in listed:
                if not (html / f"{page}.html").exists():
                    report[page] = [f"listed in _toc.yml but not built: {page}.html"]
                    continue
                report[page] = check_page(driver, base, book, page)
    finally:
        server.shutdown()
    return report


def failures(lines):
    return [line for line in lines if not line.startswith(NOTE)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--book", default=str(ROOT), help="the folder with _toc.yml and _config.yml")
    args = parser.parse_args(argv)
    report = check_book(args.html, args.book)
    failed = 0
    for page, lines in report.items():
        print(f"{'FAIL' if failures(lines) else 'ok  '} {page}")
        for line in lines:
            print(f"       {line}")
        failed += bool(failures(lines))
    for page in sorted(set(KNOWN_OVERWIDE) - {p for p, lines in report.items() if any(
            line.startswith(NOTE + "known over-wide") for line in lines)}):
        print(f"note: {page} is in KNOWN_OVERWIDE but every output fits now: take it off the list")
    print(f"{len(report) - failed} of {len(report)} pages as a reader should see them")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
