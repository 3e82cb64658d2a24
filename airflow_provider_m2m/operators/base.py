"""
What every operator (and sensor) of this provider shares: a hook built from its connection id on first use.

Modelled on the AWS provider's ``AwsBaseOperator[AwsHookType]``: a subclass names its hook class, and the
connection id attribute is the hook's own ``conn_name_attr`` (``m2m_conn_id``, ``daraja_conn_id``), so an
operator's argument and its hook's keyword can never drift apart.

.. code-block:: python

    class QueryImeiOperator(PlatformOperator[M2mHook]):
        hook_class = M2mHook
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Generic, TypeVar

from airflow.sdk import BaseOperator

from airflow_provider_m2m.hooks.base import PlatformHook
from airflow_provider_m2m.operators.arguments import RendersOnlyTemplates

HookT = TypeVar("HookT", bound=PlatformHook)


class PlatformHookMixin(Generic[HookT]):
    """
    A ``hook`` property for an operator or a sensor: ``hook_class`` built with the connection id the task holds
    under the attribute the hook's ``conn_name_attr`` names. Built on first use, never at parse time (a DAG
    file must not reach a connection while it is parsed).

    :cvar hook_class: the hook to build (a :class:`~airflow_provider_m2m.hooks.base.PlatformHook`).
    """

    hook_class: type[HookT]

    @property
    def hook_parameters(self) -> dict[str, Any]:
        """The keywords the hook is built with; a subclass may add some (e.g. a retry policy)."""
        conn_id_attr = self.hook_class.conn_name_attr
        return {conn_id_attr: getattr(self, conn_id_attr)}

    @cached_property
    def hook(self) -> HookT:
        """The platform hook (built on first use, never at parse time)."""
        return self.hook_class(**self.hook_parameters)


class PlatformOperator(PlatformHookMixin[HookT], RendersOnlyTemplates, BaseOperator):
    """
    Base of this provider's operators: a lazily built :attr:`hook`, and templated lists that render only their
    strings holding template syntax (:class:`~airflow_provider_m2m.operators.arguments.RendersOnlyTemplates`).

    :param kwargs: passed to :class:`~airflow.sdk.BaseOperator` (``task_id``, ``retries``, ``pool``...).
    """

    # Its own __init__, only passing the arguments on: without one, Airflow's operator metaclass gives this class
    # a wrapped copy of BaseOperator.__init__, whose ``inlets=None`` default then overrides the ``[]`` a mapped
    # task (``.partial().expand()``) needs.
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)


__all__ = ["PlatformHookMixin", "PlatformOperator"]
