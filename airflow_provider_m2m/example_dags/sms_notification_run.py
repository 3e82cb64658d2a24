"""
SMS notification run, triggered by hand from the Airflow UI (dry run by default: nothing is sent).

Every SIM and the message are checked before anything is sent; the SMS go out in mapped batches, never twice
to a SIM; the wait for delivery runs in the triggerer; ``outcomes.csv`` has one row per SIM. See ``SmsRun``.
"""

import datetime as dt

from airflow.sdk import DAG, Param

from airflow_provider_m2m.sms import SmsRun

GSM7 = "GSM 7-bit, at most 160 characters; ^ { } \\ [ ~ ] | € count two; curly quotes and emoji are refused"

with DAG(
    dag_id="sms_notification_run",
    description="Send one SMS to a list of SIMs (dry run by default)",
    schedule=None,
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    doc_md=__doc__,
    tags=["m2m", "sms"],
    params={
        "iccids": Param(["8925401551663717897", "8925401193474827423"], type=["array", "null"],
                        items={"type": "string"}, title="ICCIDs",
                        description="One ICCID per line, 18 to 22 digits. May be empty with a fleet file."),
        "fleet_uri": Param(None, type=["null", "string"], title="Fleet file (optional)",
                           description="CSV with an iccid column, e.g. s3://bucket/fleet.csv; added to the ICCIDs."),
        "message_text": Param("Service notice: your tracker will update tonight.", type="string", minLength=1,
                              maxLength=160, title="Message", description=f"One SMS: {GSM7}. Binary: base64."),
        "data_coding": Param("default", type="string", enum=["default", "binary"], title="Data coding",
                             values_display={"default": "Text (GSM 7-bit)", "binary": "Binary (base64)"}),
        "dry_run": Param(True, type="boolean", title="Dry run",
                         description="On: validate and report only. Turn it off to send the SMS."),
        "delivery_wait_minutes": Param(30, type="integer", minimum=0, maximum=4320,
                                       title="Wait for delivery (minutes)",
                                       description="0: look once. Devices that are off get it later (72 h)."),
        "batch_size": Param(1000, type="integer", minimum=1, maximum=10000, title="SIMs per batch"),
        "report_base_uri": Param(None, type=["null", "string"], title="Report folder",
                                 description="e.g. s3://bucket/reports (empty: reports/ under the Airflow home)"),
    },
) as dag:
    # [START howto_sms_run]
    run = SmsRun(
        group_id="notify",
        iccids="{{ params.iccids or [] }}",
        fleet_uri="{{ params.fleet_uri or '' }}",
        message_text="{{ params.message_text }}",
        data_coding="{{ params.data_coding }}",
        dry_run="{{ params.dry_run }}",
        delivery_wait="{{ params.delivery_wait_minutes * 60 }}",
        report_base_uri="{{ params.report_base_uri or '' }}",
        batch_size="{{ params.batch_size }}",
        max_workers=16,  # sends in flight per batch; max_active_batches (4) batches at once
    )
    # [END howto_sms_run]
