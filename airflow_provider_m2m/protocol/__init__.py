"""
Pure protocol code: identifiers, GSM-7 text, SIM Insight XML and Daraja JSON.

Nothing here imports Airflow or does I/O, so it is fast to test and reusable outside Airflow.
One module per concern, in the manner of python-stdnum.
"""
