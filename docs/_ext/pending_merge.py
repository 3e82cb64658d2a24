"""
`pending_merge` (conf.py): documented pieces that arrive on other branches of the release.

`literalinclude` and `autoclass` are wrapped: when their file, `[START name]` marker or class is listed in
`pending_merge` and is not there yet, the page shows a short note in its place instead of failing the build;
when it is there, the build warns (an error under -W) until the entry is removed, so no placeholder outlives
the piece it stands for.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from docutils import nodes
from sphinx.directives.code import LiteralInclude

try:  # Sphinx 9 (the directive the autodoc extension registers)
    from sphinx.ext.autodoc import AutodocDirective
except ImportError:  # Sphinx 8
    from sphinx.ext.autodoc.directive import AutodocDirective
from sphinx.util import logging

logger = logging.getLogger(__name__)


def _note(text: str) -> list[nodes.Node]:
    note = nodes.note()
    note += nodes.paragraph(text=text)
    return [note]


def _marker(option: str | None) -> str | None:
    found = re.fullmatch(r"\s*\[(?:START|END) (\S+)\]\s*", option or "")
    return found.group(1) if found else None


class PendingLiteralInclude(LiteralInclude):
    def run(self) -> list[nodes.Node]:
        pending = self.config.pending_merge
        target = self.arguments[0]
        marker = _marker(self.options.get("start-after"))
        listed = [entry for entry in pending if target.endswith(entry) or entry == marker]
        if not listed:
            return super().run()
        _, path = self.env.relfn2path(target)
        source = Path(path)
        present = source.is_file() and (marker is None or f"[START {marker}]" in source.read_text())
        if present:
            logger.warning(
                "pending_merge lists %s, which now exists: remove it from pending_merge in docs/conf.py",
                listed[0],
                location=self.get_location(),
            )
            return super().run()
        return _note(f"This example ({Path(target).name}, {marker or 'whole file'}) arrives with this release.")


class PendingAutodoc(AutodocDirective):
    def run(self) -> list[nodes.Node]:
        name = self.arguments[0].strip()
        if name not in self.config.pending_merge:
            return super().run()
        module, _, attribute = name.rpartition(".")
        try:
            getattr(importlib.import_module(module), attribute)
        except (ImportError, AttributeError):
            return _note(f"{attribute} arrives with this release: its reference is built from its docstring.")
        logger.warning(
            "pending_merge lists %s, which now exists: remove it from pending_merge in docs/conf.py",
            name,
            location=self.get_location(),
        )
        return super().run()


def _override_autoclass(app, config) -> None:
    app.add_directive("autoclass", PendingAutodoc, override=True)


def setup(app):
    app.add_config_value("pending_merge", [], "env")
    app.add_directive("literalinclude", PendingLiteralInclude, override=True)
    # autodoc registers its directives when the configuration is read: replace autoclass after it does.
    app.connect("config-inited", _override_autoclass, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
