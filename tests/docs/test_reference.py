"""
Every public class has a reference entry: an ``autoclass`` / ``autoexception`` directive on a docs page, or an
``automodule`` with members of the module that holds it.

The public classes are those of the public modules (the import paths DESIGN.md makes a contract): a module's
``__all__`` where it has one, else the classes defined in it (in a package, in its submodules too).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import textwrap

from conftest import ROOT

DOCS = ROOT / "docs"
PUBLIC_MODULES = [
    "airflow_provider_m2m.hooks.m2m",
    "airflow_provider_m2m.hooks.daraja",
    "airflow_provider_m2m.operators.m2m",
    "airflow_provider_m2m.operators.daraja",
    "airflow_provider_m2m.operators.approval",
    "airflow_provider_m2m.sensors.m2m",
    "airflow_provider_m2m.triggers.m2m",
    "airflow_provider_m2m.plugins.sim_insight_push",
    "airflow_provider_m2m.fleet_audit",
    "airflow_provider_m2m.sms",
    "airflow_provider_m2m.exceptions",
    "airflow_provider_m2m.sandbox",
]
_DIRECTIVE = re.compile(r"^\.\. (auto\w+):: ([\w.]+)\n((?:   :.*\n)*)", re.M)


def public_classes(module_name: str) -> dict[str, type]:
    """``{"module.Name": class}`` for the public classes of a module."""
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None)
    if names is None:
        own = module_name + "." if hasattr(module, "__path__") else None
        names = [
            name
            for name, value in vars(module).items()
            if inspect.isclass(value)
            and not name.startswith("_")
            and (value.__module__ == module_name or (own and value.__module__.startswith(own)))
        ]
    return {f"{module_name}.{name}": getattr(module, name) for name in names if inspect.isclass(getattr(module, name))}


def documented() -> set[str]:
    """Every name a docs page documents through autodoc (``module.Name``)."""
    names: set[str] = set()
    for page in DOCS.rglob("*.md"):
        if "_build" in page.parts:
            continue
        for kind, target, options in _DIRECTIVE.findall(page.read_text(encoding="utf-8")):
            names.add(target)
            if kind == "automodule" and ":no-members:" not in options:
                names.update(public_classes(target))
    return names


def test_public_classes_are_found():
    """The listing is not vacuous: the known public classes are in it."""
    listed = {name.rsplit(".", 1)[1] for module in PUBLIC_MODULES for name in public_classes(module)}
    assert {"M2mHook", "DarajaHook", "QueryImeiOperator", "CheckSimSwapOperator", "SmsDeliverySensor"} <= listed
    assert {"SmsDeliveryTrigger", "ApproveSimsOperator", "InvalidRequestError", "Sandbox", "ImeiRecord"} <= listed


def test_every_public_class_has_a_reference_entry():
    entries = documented()
    missing = []
    for module in PUBLIC_MODULES:
        for name, cls in public_classes(module).items():
            defined_at = f"{cls.__module__}.{cls.__qualname__}"
            if name not in entries and defined_at not in entries:
                missing.append(name)
    assert not missing, f"public classes without a reference entry in docs/reference: {missing}"


def test_every_autodoc_target_exists():
    """A reference entry names something importable."""
    for target in documented():
        module, _, attribute = target.rpartition(".")
        try:
            importlib.import_module(target)
        except ImportError:
            assert hasattr(importlib.import_module(module), attribute), f"docs document {target}: no such thing"


def test_code_examples_in_public_docstrings_are_python():
    """
    The reference renders the docstrings' ``.. code-block:: python`` examples: each must at least be Python.

    They show a call's shape with placeholders (``output_uri=...``), so they are parsed, not run; the runnable
    docstring examples are doctests, run by ``--doctest-modules``.
    """
    seen = 0
    for module in PUBLIC_MODULES:
        for name, cls in public_classes(module).items():
            for doc in [cls.__doc__] + [getattr(member, "__doc__", None) for member in vars(cls).values()]:
                text = inspect.cleandoc(doc or "") + "\n"
                for _, block in re.findall(r"^( *)\.\. code-block:: python\n\n((?:\1 +.*\n|\n)+)", text, re.M):
                    seen += 1
                    ast.parse(textwrap.dedent(block), f"{name} docstring")
    assert seen > 0
