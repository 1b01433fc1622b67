"""Render an HTML e-mail in headless Chromium (Playwright, the system's /usr/bin/chromium) to a PNG."""

from __future__ import annotations

from pathlib import Path


def screenshot_html(html: str, out: Path, *, width: int = 860, height: int = 1500, full_page: bool = False) -> str:
    """Writes `out`; returns the text the browser shows (so a caller can check the page really rendered)."""
    from playwright.sync_api import sync_playwright

    out.parent.mkdir(parents=True, exist_ok=True)
    page_file = out.with_suffix(".html")
    page_file.write_text(html, encoding="utf-8")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(page_file.as_uri())
            page.screenshot(path=str(out), full_page=full_page)
            texts = page.inner_text("body")
        finally:
            browser.close()
    page_file.unlink()
    return texts
