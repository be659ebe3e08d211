"""Open every page of the built book in headless Chromium and check what a reader sees.

    python tools/browser_check.py [_build/html]        # `make browser-test`

For every page listed in _toc.yml: no console errors, every image loaded (natural width > 0),
no raw \\( or \\[ left where MathJax should have typeset, and on a notebook page the launch
button's Colab URL names this page's .ipynb under _config.yml's repository URL. Also: no page
was written that _toc.yml does not list. Uses Debian's chromium and chromedriver (.ci/run
installs them) through Selenium; the book is served over HTTP from a local port.
"""
import argparse
import functools
import http.server
import sys
import threading
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1280,900"]
SPHINX_PAGES = {"genindex.html", "search.html", "py-modindex.html"}   # generated, not sources

# Text the reader sees outside code: MathJax removes the delimiters of what it typesets.
VISIBLE_TEXT_JS = """
const body = document.querySelector('main') || document.body;
const copy = body.cloneNode(true);
copy.querySelectorAll('pre, code, script, style, .MathJax, mjx-container').forEach(e => e.remove());
return copy.textContent;
"""
BROKEN_IMAGES_JS = """
return [...document.images].filter(i => !(i.complete && i.naturalWidth > 0))
                            .map(i => i.getAttribute('src'));
"""
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


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    import tempfile
    options.add_argument(f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    return driver


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
    text = driver.execute_script(VISIBLE_TEXT_JS)
    for delimiter in ("\\(", "\\["):
        if delimiter in text:
            at = text.index(delimiter)
            problems.append(f"raw TeX left untypeset: ...{text[max(0, at - 30):at + 40]!r}...")
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
    driver = browser()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for page in listed:
            if not (html / f"{page}.html").exists():
                report[page] = [f"listed in _toc.yml but not built: {page}.html"]
                continue
            report[page] = check_page(driver, base, book, page)
    finally:
        driver.quit()
        server.shutdown()
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", default=str(ROOT / "_build" / "html"))
    parser.add_argument("--book", default=str(ROOT), help="the folder with _toc.yml and _config.yml")
    args = parser.parse_args(argv)
    report = check_book(args.html, args.book)
    failed = 0
    for page, problems in report.items():
        print(f"{'FAIL' if problems else 'ok  '} {page}")
        for problem in problems:
            print(f"       {problem}")
        failed += bool(problems)
    print(f"{len(report) - failed} of {len(report)} pages as a reader should see them")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
