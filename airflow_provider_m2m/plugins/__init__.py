"""Airflow plugins of this provider: the api-server app that receives SIM Insight's pushes."""
