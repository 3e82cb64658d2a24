"""
SMS notification run, triggered by hand from the Airflow UI.

Fill in the form: the SIMs (a list of ICCIDs, or a fleet file), the message, its data coding, and whether
this is a dry run. A dry run (the default) validates everything and writes the report of what would be
sent, sending nothing. A real run validates everything first (one bad ICCID or one character outside the
GSM 7-bit alphabet fails the run before any message goes out), sends in mapped batches sharing the
``m2m_platform`` pool (16 sends in flight per batch), waits (in the triggerer, holding no worker slot, asking
about as many SIMs per poke as the connection's rate limit allows) up to the chosen number of minutes
for the messages to be delivered, and writes a per-SIM report: ``sms_uid``, ``outcome`` of the send,
``error``, and the ``delivery`` state (delivered, failed, pending...) with ``delivered_at``. A retried
batch never resends to a SIM it already reached. Messages still pending when the wait ends are reported
as pending (a device that is off gets its message when it comes back: the platform keeps trying for 72
hours); the run fails only when a message was not accepted by the platform.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter

from airflow.sdk import DAG, Param, task

from airflow_provider_m2m.operators.m2m import SendSmsOperator
from airflow_provider_m2m.sensors.m2m import SmsDeliverySensor

POOL = "m2m_platform"
REPORT_COLUMNS = ["iccid", "sms_uid", "outcome", "error", "delivery", "delivery_status", "delivered_at"]

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
        "delivery_wait_minutes": Param(
            30,
            type="integer",
            minimum=0,
            maximum=4320,
            title="Wait for delivery (minutes)",
            description=(
                "How long to wait for the messages to reach the devices before writing the report (0: look "
                "once). Messages to devices that are off stay pending; the platform keeps trying for 72 hours."
            ),
        ),
        "batch_size": Param(
            1000,
            type="integer",
            minimum=1,
            maximum=10000,
            title="SIMs per batch",
            description=(
                "SIMs per send task (each sends 16 at a time); the batches run side by side, sharing the "
                "m2m_platform pool."
            ),
        ),
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
        from airflow_provider_m2m.exceptions import InvalidRequestError
        from airflow_provider_m2m.protocol import iccid, sms
        from airflow_provider_m2m.utils.files import chunked, read_csv
        from airflow_provider_m2m.utils.version_compat import AirflowFailException

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
        max_workers=16,  # sends in flight per batch: pool slots x 16 is the most at the platform at once
        pool=POOL,
        retries=2,
        retry_delay=dt.timedelta(seconds=30),
    ).expand(iccids=batches_to_send(plan))

    @task(trigger_rule="all_done")
    def collect_outcomes(batches: list[list[str]], params=None, ti=None) -> list[dict]:
        """One row per SIM: what the send did (from each batch, even a failed one), or dry_run."""
        if params["dry_run"]:
            return [{"iccid": i, "sms_uid": None, "outcome": "dry_run", "error": None} for b in batches for i in b]
        rows: list[dict] = []
        for index, batch in enumerate(batches):
            rows += (
                ti.xcom_pull(task_ids="send_sms", map_indexes=index)
                or ti.xcom_pull(task_ids="send_sms", map_indexes=index, key="outcomes")
                or [{"iccid": i, "outcome": "not_attempted", "error": "the batch task did not run"} for i in batch]
            )
        return rows

    @task
    def delivery_wait(rows: list[dict], params=None) -> list[dict]:
        """The delivery wait's arguments: one wait (it leaves out the SIMs nothing went to), none on a dry run."""
        return [] if params["dry_run"] else [{"messages": rows, "timeout": 60 * params["delivery_wait_minutes"]}]

    outcomes = collect_outcomes(plan)
    send >> outcomes

    # Mapped over one set of arguments so the form's wait can set the sensor's timeout (an init argument).
    # Deferrable: the triggerer polls; a wait that ends with messages pending is skipped, not failed.
    # A poke every 15 s asks about as many SIMs as the connection's max_requests_per_second allows in 15 s
    # (at 190/s: 2,850, so 10,000 messages are all asked about within a minute), 16 at a time; a poke whose
    # queries failed doubles the pause, up to 5 minutes.
    delivered = SmsDeliverySensor.partial(
        task_id="wait_for_delivery",
        deferrable=True,
        poke_interval=15,
        max_workers=16,
        max_wait=300,
        soft_fail=True,
    ).expand_kwargs(delivery_wait(outcomes))

    @task(trigger_rule="all_done", multiple_outputs=False)  # one XCom: the summary dict, not one per key
    def write_report(rows: list[dict], params=None, ti=None, run_id=None) -> dict:
        """Write the per-SIM report; fail the run if any SIM was not confirmed sent."""
        from airflow_provider_m2m.utils.files import report_folder, write_csv

        deliveries = ti.xcom_pull(task_ids="wait_for_delivery", map_indexes=0) or []  # none on a dry run
        by_message = {(d["iccid"], d["sms_uid"]): d for d in deliveries}
        for row in rows:
            found = by_message.get((row["iccid"], row.get("sms_uid")), {})
            row.update(
                delivery=found.get("state"), delivery_status=found.get("status"), delivered_at=found.get("delivered_at")
            )
        uri = report_folder(params["report_base_uri"], "sms_notification_run", run_id) + "/outcomes.csv"
        write_csv(uri, REPORT_COLUMNS, rows)
        tally = dict(Counter(row["outcome"] for row in rows))
        delivery = dict(Counter(row["delivery"] for row in rows if row["delivery"]))
        print(f"Report: {uri}\nOutcomes: {tally}\nDelivery: {delivery or 'not waited for'}")
        unconfirmed = {k: v for k, v in tally.items() if k not in ("success", "dry_run")}
        if unconfirmed:
            raise RuntimeError(f"report written to {uri}, but not every SMS was confirmed sent: {unconfirmed}")
        return {"report_csv": uri, "outcomes": tally, "delivery": delivery}

    write_report(outcomes) << delivered
