"""
SMS notification run, triggered by hand from the Airflow UI.

Fill in the form: the SIMs (a list of ICCIDs, or a fleet file), the message, its data coding, and whether
this is a dry run. A dry run (the default) validates everything and writes the report of what would be
sent, sending nothing. A real run validates everything first (one bad ICCID or one character outside the
GSM 7-bit alphabet fails the run before any message goes out), sends in mapped batches sharing the
``m2m_platform`` pool, and writes a per-SIM outcome report (``sms_uid``, ``outcome``, ``error``).
A retried batch never resends to a SIM it already reached.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, Param, task

from airflow_provider_m2m.operators.m2m import SendSmsOperator

POOL = "m2m_platform"
OUTCOME_COLUMNS = ["iccid", "sms_uid", "outcome", "error"]

with DAG(
    dag_id="sms_notification_run",
    description="Send one SMS to a list of SIMs (dry run by default)",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    doc_md=__doc__,
    tags=["m2m", "sms"],
    params={
        "iccids": Param(
            ["8925401551663717897", "8925401193474827423"],
            type=["array", "null"],
            items={"type": "string"},
            title="ICCIDs",
            description=(
                "One ICCID per line, 18 to 22 digits (spaces and dashes are ignored). May be left empty when a "
                "fleet file is given below."
            ),
        ),
        "fleet_uri": Param(
            None,
            type=["null", "string"],
            title="Fleet file (optional)",
            description=(
                "URI of a CSV file with an iccid column, e.g. s3://bucket/fleet.csv or file:///data/fleet.csv. "
                "Its SIMs are added to the ICCIDs above."
            ),
        ),
        "message_text": Param(
            "Service notice: your tracker will update tonight.",
            type="string",
            minLength=1,
            maxLength=160,
            title="Message",
            description=(
                "One SMS: at most 160 characters of the GSM 7-bit alphabet (letters, digits, common "
                "punctuation, some accented letters such as é ñ ü). ^ { } \\ [ ~ ] | € count as two. Curly "
                "quotes, emoji and most accented capitals are refused before anything is sent. For binary "
                "data coding, base64 of at most 120 bytes."
            ),
        ),
        "data_coding": Param(
            "default",
            type="string",
            enum=["default", "binary"],
            values_display={"default": "Text (GSM 7-bit)", "binary": "Binary (base64)"},
            title="Data coding",
            description="Text: an ordinary SMS. Binary: the message is base64, and its decoded bytes are sent.",
        ),
        "dry_run": Param(
            True,
            type="boolean",
            title="Dry run",
            description=(
                "On: only validate and write the report of what would be sent; nothing is sent. "
                "Turn it off to send the SMS."
            ),
        ),
        "batch_size": Param(200, type="integer", minimum=1, maximum=5000, title="SIMs per batch"),
        "report_base_uri": Param(
            None,
            type=["null", "string"],
            title="Report folder",
            description=(
                "Where the outcome report goes, e.g. s3://bucket/reports (empty: reports/ under the Airflow home)."
            ),
        ),
    },
) as dag:

    @task
    def validate_and_plan(params=None) -> list[list[str]]:
        """Validate every SIM and the message before anything is sent; cut the SIMs into batches."""
        from airflow.sdk.exceptions import AirflowFailException

        from airflow_provider_m2m.exceptions import InvalidRequestError
        from airflow_provider_m2m.files import chunked, read_csv
        from airflow_provider_m2m.protocol import iccid, sms

        try:
            numbers = list(params["iccids"] or [])
            if params["fleet_uri"]:
                numbers += [row["iccid"] for row in read_csv(params["fleet_uri"])]
            numbers = list(dict.fromkeys(iccid.validate_many(numbers)))
            coding = sms.validate_data_coding(params["data_coding"])
            sms.validate_message(params["message_text"], coding)
        except InvalidRequestError as exc:
            raise AirflowFailException(f"Nothing sent: {exc}") from None
        batches = list(chunked(numbers, params["batch_size"]))
        mode = "DRY RUN: nothing will be sent" if params["dry_run"] else "sending"
        print(f"{len(numbers)} SIMs in {len(batches)} batches; {mode}")
        return batches

    @task
    def batches_to_send(batches: list[list[str]], params=None) -> list[list[str]]:
        """All the batches, or none on a dry run (the send task is then skipped)."""
        return [] if params["dry_run"] else batches

    plan = validate_and_plan()

    send = SendSmsOperator.partial(
        task_id="send_sms",
        message_text="{{ params.message_text }}",
        data_coding="{{ params.data_coding }}",
        pool=POOL,
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    ).expand(iccids=batches_to_send(plan))

    @task(trigger_rule="all_done")
    def write_report(batches: list[list[str]], params=None, ti=None, run_id=None) -> dict:
        """Write the per-SIM outcome report; fail the run if any SIM was not confirmed sent."""
        from airflow_provider_m2m.files import report_folder, write_csv

        if params["dry_run"]:
            rows = [{"iccid": i, "outcome": "dry_run"} for batch in batches for i in batch]
        else:
            rows = []
            for index in range(len(batches)):
                done = ti.xcom_pull(task_ids="send_sms", map_indexes=index)
                rows += (
                    done
                    or ti.xcom_pull(task_ids="send_sms", map_indexes=index, key="outcomes")
                    or [
                        {"iccid": i, "outcome": "not_attempted", "error": "the batch task did not run"}
                        for i in batches[index]
                    ]
                )
        uri = report_folder(params["report_base_uri"], "sms_notification_run", run_id) + "/outcomes.csv"
        write_csv(uri, OUTCOME_COLUMNS, rows)
        tally: dict[str, int] = {}
        for row in rows:
            tally[row["outcome"]] = tally.get(row["outcome"], 0) + 1
        print(f"Report: {uri}\nOutcomes: {tally}")
        unconfirmed = {k: v for k, v in tally.items() if k not in ("success", "dry_run")}
        if unconfirmed:
            raise RuntimeError(f"report written to {uri}, but not every SMS was confirmed sent: {unconfirmed}")
        return {"report_csv": uri, "outcomes": tally}

    write_report(plan) << send
