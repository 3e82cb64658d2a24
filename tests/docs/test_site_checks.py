"""
The docs site's own checks: the how-to pages take their code from tested example DAGs, and the link checker
that `make docs` runs over the built site finds what it must.
"""

from __future__ import annotations

import importlib.util
import re

from conftest import ROOT

DOCS = ROOT / "docs"
EXAMPLE_DAGS = ROOT / "airflow_provider_m2m" / "example_dags"
_INCLUDE = re.compile(r"^```\{literalinclude\} (\S+)\n((?::.*\n)*)", re.M)


def _includes(page):
    for target, options in _INCLUDE.findall(page.read_text(encoding="utf-8")):
        marker = re.search(r':start-after: "\[START (\S+)\]"', options)
        yield (page.parent / target).resolve(), marker.group(1) if marker else None


def test_every_howto_page_shows_code_from_an_example_dag():
    """Each how-to page includes code, only from example DAGs (tested in tests/dags), between markers that exist."""
    pages = [page for page in sorted((DOCS / "howto").glob("*.md")) if page.name != "index.md"]
    assert len(pages) >= 6
    for page in pages:
        includes = list(_includes(page))
        assert includes, f"{page.name} shows no code from an example DAG"
        for path, marker in includes:
            assert path.parent == EXAMPLE_DAGS, f"{page.name} includes {path}: not an example DAG"
            text = path.read_text(encoding="utf-8")
            assert marker and f"# [START {marker}]" in text and f"# [END {marker}]" in text, (page.name, marker)


def test_link_checker_finds_missing_pages_and_anchors(tmp_path):
    spec = importlib.util.spec_from_file_location("check_links", DOCS / "check_links.py")
    check_links = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_links)
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<a href="sub/page.html#there">ok</a> <a href="sub/page.html#gone">bad anchor</a>'
        '<a href="missing.html">bad page</a> <a href="#top">self</a> <h1 id="top">x</h1>'
        '<a href="https://example.org/nowhere">external: not fetched</a> <img src="img.png">'
    )
    (tmp_path / "sub" / "page.html").write_text('<h2 id="there">there</h2><a href="../index.html#top">back</a>')
    (tmp_path / "img.png").write_bytes(b"")
    assert check_links.broken_links(tmp_path) == [
        "index.html: sub/page.html#gone (no anchor #gone)",
        "index.html: missing.html (no such file)",
    ]
    assert check_links.main(["check_links", str(tmp_path)]) == 1
    (tmp_path / "index.html").write_text('<h1 id="top">x</h1><a href="sub/page.html#there">ok</a>')
    assert check_links.main(["check_links", str(tmp_path)]) == 0
