"""Sphinx configuration of the docs site: `make docs` builds it into docs/_build/html."""

from __future__ import annotations

import os
from pathlib import Path

DOCS = Path(__file__).resolve().parent
# Autodoc imports Airflow, which writes a config file into its home: keep that inside the build folder.
os.environ.setdefault("AIRFLOW_HOME", str(DOCS / "_build" / "airflow-home"))

import airflow_provider_m2m  # noqa: E402  (importable: autodoc reads its docstrings)

project = "airflow-provider-m2m"
author = "airflow-provider-m2m developers"
copyright = "airflow-provider-m2m developers, Apache License 2.0"
release = version = airflow_provider_m2m.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
]

# Markdown pages (MyST); headings get anchors so `[text](page.md#a-heading)` links are checked by the build.
source_suffix = {".md": "markdown"}
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3
exclude_patterns = ["_build"]

# Every cross-reference must resolve (`make docs` passes -n). No intersphinx: the build runs without internet,
# so names outside this package (Airflow's, the standard library's) are left as plain text.
nitpicky = True
# Internal modules (utils/, protocol/, the feature packages' submodules) have no pages: a docstring may still
# name them or their functions for a reader of the code.
nitpick_ignore_regex = [
    (r"py:.*", r"(?!airflow_provider_m2m\.).*"),
    (r"py:.*", r"airflow_provider_m2m\.(utils|protocol)\..*"),
    (r"py:.*", r"airflow_provider_m2m\.(sms|fleet_audit|sandbox)\.[a-z_]+(\..*)?"),
]

autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autoclass_content = "class"  # the :param: fields are on the class; an inherited __init__ docstring is Airflow's
add_module_names = False

html_theme = "furo"
html_title = f"airflow-provider-m2m {release}"
html_show_sourcelink = False
