"""
Templated identifier lists render only their strings with template syntax (``RendersOnlyTemplates``): a batch of
thousands of ICCIDs is not compiled as thousands of Jinja templates, and renders to the same values.
"""

from __future__ import annotations

import datetime as dt

import pytest
from airflow.sdk import DAG

from airflow_provider_m2m.operators.daraja import CheckSimSwapOperator
from airflow_provider_m2m.operators.m2m import QueryImeiOperator, SendSmsOperator
from airflow_provider_m2m.operators.sim_status import SetSimStatusOperator
from airflow_provider_m2m.sandbox import Fleet

ICCIDS = Fleet(2000).iccids
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def _rendered(op, dag, **params):
    op.render_template_fields({"params": params, "ds": "2026-11-30", "task": op}, dag.get_template_env())
    return op


@pytest.mark.parametrize(
    ("operator", "field", "values"),
    [
        (QueryImeiOperator, "iccids", ICCIDS),
        (SetSimStatusOperator, "iccids", ICCIDS),
        (SendSmsOperator, "iccids", ICCIDS),
        (CheckSimSwapOperator, "msisdns", ["254722000000", "0722000000"]),
    ],
)
def test_plain_strings_stay_as_they_are_and_templates_still_render(operator, field, values):
    with DAG("rendering", schedule=None, start_date=START) as dag:
        extra = {
            SendSmsOperator: {"message_text": "Hi\r\n{{ ds }}"},
            SetSimStatusOperator: {"status": "deactivated"},
        }.get(operator, {})
        op = operator(task_id="t", **{field: [*values, "{{ params.one }}", "{# a comment #}x"]}, **extra)
    rendered = getattr(_rendered(op, dag, one=values[0]), field)
    assert rendered == [*values, values[0], "x"]
    if operator is SendSmsOperator:
        assert op.message_text == "Hi\r\n2026-11-30"  # its own rendering (a carriage return survives) still runs


def test_a_native_rendering_dag_keeps_plain_iccids_as_text():
    # Compiled as a template, a plain ICCID would render to a Python int in a native-rendering DAG.
    with DAG("native", schedule=None, start_date=START, render_template_as_native_obj=True) as dag:
        op = QueryImeiOperator(task_id="q", iccids=ICCIDS[:3])
    assert _rendered(op, dag).iccids == ICCIDS[:3]


def test_the_dag_s_own_delimiters_are_honoured():
    kwargs = {"variable_start_string": "[[", "variable_end_string": "]]"}
    with DAG("delims", schedule=None, start_date=START, jinja_environment_kwargs=kwargs) as dag:
        op = QueryImeiOperator(task_id="q", iccids=["[[ params.one ]]", "{{ params.one }}"])
    assert _rendered(op, dag, one=ICCIDS[0]).iccids == [ICCIDS[0], "{{ params.one }}"]
