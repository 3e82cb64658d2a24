"""
Check every internal link and anchor of the built docs site: `python docs/check_links.py docs/_build/html`.

Each `href` and `src` of each HTML page that points inside the site (a relative path, with or without
`#anchor`, or `#anchor` alone) must name a file that exists and, with an anchor, an element of that page whose
`id` (or `<a name>`) is the anchor. External links (`http:`, `https:`, `mailto:`...) are not fetched: the build
runs without internet. Prints each broken link with the page it is on and exits 1 if there is any.
"""

from __future__ import annotations

import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if values.get("id"):
            self.ids.add(values["id"])
        if tag == "a" and values.get("name"):
            self.ids.add(values["name"])
        for attribute in ("href", "src"):
            if values.get(attribute):
                self.links.append(values[attribute])


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def broken_links(site: Path) -> list[str]:
    """Every broken internal link of the site under ``site``, as ``page: link (why)``."""
    pages = {path.resolve(): _parse(path) for path in sorted(site.rglob("*.html"))}
    root = site.resolve()
    broken = []
    for path, page in pages.items():
        for link in page.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith("//"):
                continue  # external: not fetched
            target = (path.parent / unquote(parts.path)).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            shown = f"{path.relative_to(root)}: {link}"
            if not target.is_file():
                broken.append(f"{shown} (no such file)")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{shown} (no anchor #{parts.fragment})")
    return broken


def main(argv: list[str]) -> int:
    site = Path(argv[1] if len(argv) > 1 else "docs/_build/html")
    if not (site / "index.html").is_file():
        print(f"check_links: no site at {site} (build it with `make docs`)", file=sys.stderr)
        return 1
    broken = broken_links(site)
    for line in broken:
        print(f"broken link: {line}", file=sys.stderr)
    pages = len(list(site.rglob("*.html")))
    print(f"check_links: {pages} pages, {len(broken)} broken internal links or anchors")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
