"""SIM Insight's pushes (MO SMS, delivery receipts, usage alerts) as asset events.

Received by :mod:`~airflow_provider_m2m.plugins.sim_insight_push`."""
