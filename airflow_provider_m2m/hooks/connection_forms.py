"""
The connection forms for Airflow 3.1's UI, built from the declarative ones in provider info.

Airflow 3.2+ reads ``conn-fields`` and ``ui-field-behaviour`` from :func:`~airflow_provider_m2m.get_provider_info`
and never calls a hook's form methods when they are declared there. Airflow 3.1's UI only knows the older
hook classmethods ``get_connection_form_widgets`` (WTForms fields) and ``get_ui_field_behaviour``, so each
hook exposes the two below, translated from the same declarations: provider info stays the single registry.
WTForms and Flask-AppBuilder are imported inside the methods (3.1's UI stands in for them when they are not
installed), never when a hook module is imported.
"""

from __future__ import annotations

from typing import Any


def _declared(conn_type: str) -> dict[str, Any]:
    from airflow_provider_m2m import get_provider_info

    (entry,) = [c for c in get_provider_info()["connection-types"] if c["connection-type"] == conn_type]
    return entry


def _types(schema: dict[str, Any]) -> list[str]:
    declared = schema.get("type", "string")
    return list(declared) if isinstance(declared, list) else [declared]


@classmethod  # type: ignore[misc]
def form_widgets(cls: Any) -> dict[str, Any]:
    """The extra fields of ``cls.conn_type``'s form as WTForms fields (booleans as checkboxes, the rest as text)."""
    from flask_appbuilder.fieldwidgets import BS3TextFieldWidget
    from flask_babel import lazy_gettext
    from wtforms import BooleanField, StringField
    from wtforms.validators import Optional

    widgets: dict[str, Any] = {}
    for name, field in _declared(cls.conn_type).get("conn-fields", {}).items():
        schema = field.get("schema", {})
        label, description, default = lazy_gettext(field["label"]), field.get("description", ""), schema.get("default")
        if "boolean" in _types(schema):
            widgets[name] = BooleanField(label, description=description, default=default)
        else:  # numbers too: the hooks parse and check them, and a text box takes a decimal
            text_default = None if default is None else str(default)
            widgets[name] = StringField(
                label, validators=[Optional()], description=description, default=text_default,
                widget=BS3TextFieldWidget(),
            )
    return widgets


@classmethod  # type: ignore[misc]
def field_behaviour(cls: Any) -> dict[str, Any]:
    """The hidden, relabelled and placeholder standard fields of ``cls.conn_type``'s form."""
    declared = _declared(cls.conn_type).get("ui-field-behaviour", {})
    return {key.replace("-", "_"): value for key, value in declared.items()}
