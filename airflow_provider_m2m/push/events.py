"""
Pushed items as asset events in Airflow's metadata DB: one event per distinct item, committed before we answer.

Runs inside the api-server (the push receiver calls it). The item's identity, ``push_id`` (see
:attr:`~airflow_provider_m2m.protocol.push.PushPayload.push_id`), is stored in the event's ``extra``; a
delivery whose ``push_id`` already has an event on the asset records nothing. No table of our own: the
asset event table already holds what a duplicate has to be checked against, and an event is the record a DAG
reads. The check and the insert share one transaction that first locks the asset's row (``SELECT ... FOR
UPDATE`` on PostgreSQL and MySQL; SQLite serialises writers itself), so two deliveries of one item racing each
other cannot both insert.
"""

from __future__ import annotations

import logging

from sqlalchemy import select

from airflow_provider_m2m.protocol.push import PushPayload

log = logging.getLogger(__name__)


def record(payload: PushPayload) -> tuple[int, bool]:
    """
    Record one pushed item as an event on its asset, unless an event of the same item exists.

    Returns ``(event id, created)``: ``created`` is False for a redelivery. Raises whatever the DB raises:
    the caller answers 5xx and the platform delivers the item again.

    :param payload: the parsed, authenticated item.
    """
    from airflow.assets.manager import asset_manager
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    extra = {**payload.item, "push_id": payload.push_id}
    with create_session() as session:  # commits on leaving the block, before the receiver answers
        asset = _asset_row(session, payload.asset)
        existing = session.scalar(
            select(AssetEvent.id)
            .where(AssetEvent.asset_id == asset.id, AssetEvent.extra["push_id"].as_string() == payload.push_id)
            .limit(1)
        )
        if existing is not None:
            return existing, False
        event = asset_manager.register_asset_change(asset=asset, extra=extra, source_is_api=True, session=session)
        if event is None:  # only when the asset row vanished under us
            raise RuntimeError(f"asset {payload.asset} could not take an event")
        session.flush()
        return event.id, True


def _asset_row(session, name: str):
    """The asset's row, locked for this transaction; created when no DAG has declared the asset yet."""
    from airflow.models.asset import AssetActive, AssetModel

    query = select(AssetModel).where(AssetModel.name == name, AssetModel.uri == name)
    asset = session.scalar(query.with_for_update())
    if asset is None:
        # Items may arrive before any DAG is scheduled on the asset: keep them, a DAG added later sees them.
        model = AssetModel(name=name, uri=name, group="asset")
        session.add(model)
        session.add(AssetActive.for_asset(model))
        session.flush()
        asset = session.scalar(query.with_for_update())
    return asset
