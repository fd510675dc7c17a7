"""The alarm topic's messages as Slack messages (core/alarms.py), the environment's name
in every message (messages.with_environment, MIRRORD_ENVIRONMENT) and the EMF signals
the new alarms read (report.emf, report.running_emf)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from sns_events import BUDGET_TEXT, events, lambda_failure, metric_alarm, sns_event

from mirrord.core.alarms import ALARM_SUFFIXES, alarm_messages, runbook_anchor
from mirrord.core.errors import SettingsError
from mirrord.core.messages import Message, progress_message, start_message, with_environment
from mirrord.core.report import Failure, Report, emf, running_emf
from mirrord.core.settings import from_env


def flat(message: Message) -> str:
    """Everything Slack would show: the fallback text and every block's text."""
    return message.text + "\n" + orjson.dumps(message.blocks).decode()


def one(event: dict[str, Any]) -> Message:
    (message,) = alarm_messages(event)
    return message


def test_metric_alarm_names_state_reason_and_runbook() -> None:
    m = one(events()["alarm"])
    assert m.blocks[0]["type"] == "header"
    assert "ALARM: mirrord-prod-dlq-not-empty" in m.blocks[0]["text"]["text"]
    shown = flat(m)
    assert "OK → *ALARM*" in shown
    assert "Threshold Crossed: 1 out of the last 1 datapoints" in shown
    assert "docs/operations.md#alarm-dlq-not-empty" in shown
    assert "a job failed on every receive" in shown
    assert m.text.startswith("ALARM: mirrord-prod-dlq-not-empty")


def test_return_to_ok_is_posted_too() -> None:
    m = one(events()["ok"])
    assert m.blocks[0]["text"]["text"].startswith(":white_check_mark: OK:")
    assert "ALARM → *OK*" in flat(m)


def test_composite_alarm_names_its_rule_and_triggering_child() -> None:
    shown = flat(one(events()["composite"]))
    assert "docs/operations.md#alarm-no-recent-sync" in shown
    assert "Composite alarm" in shown
    assert "mirrord-prod-no-success-7d (ALARM)" in shown


def test_lambda_failure_record_names_function_error_and_request() -> None:
    m = one(events()["lambda-failure"])
    shown = flat(m)
    assert "Lambda failed: mirrord-prod-enqueue" in m.blocks[0]["text"]["text"]
    assert "UpstreamError" in shown
    assert "formulae.brew.sh/api/formula.json: 503" in shown
    assert "e4b46cbf-b738-xmpl-8880-a18cdf61200e" in shown
    assert "RetriesExhausted" in shown
    assert "/aws/lambda/mirrord-prod-enqueue" in shown


def test_lambda_failure_without_a_payload_still_reads() -> None:
    record = lambda_failure()
    record["requestContext"]["condition"] = "EventAgeExceeded"
    del record["responsePayload"]
    record["responseContext"] = {}
    shown = flat(one(sns_event(orjson.dumps(record).decode())))
    assert "EventAgeExceeded" in shown
    assert "no error" in shown


def test_budget_alert_is_posted_as_text() -> None:
    m = one(events()["budget"])
    assert "AWS Budgets: mirrord-prod-monthly has exceeded" in m.blocks[0]["text"]["text"]
    assert "greater than 80.00% of $50.00" in flat(m)


@pytest.mark.parametrize(
    "event",
    [
        None,
        "text",
        [],
        {},
        {"Records": []},
        {"Records": [None]},
        {"Records": [{"Sns": "not a dict"}]},
        {"Records": [{"Sns": {"Message": None}}]},
        {"Records": [{"Sns": {"Message": 42}}]},
        sns_event("{not json"),
        sns_event("[1, 2]"),
        sns_event(orjson.dumps({"AlarmName": ["x"], "NewStateValue": {"y": 1}}).decode()),
        sns_event(
            orjson.dumps(
                {**metric_alarm(), "AlarmRule": "x", "TriggeringChildren": [{"State": "bad"}]}
            ).decode()
        ),
        sns_event(orjson.dumps({"requestContext": 5, "responseContext": [1]}).decode()),
        sns_event("<!channel> " + "x" * 10_000),
    ],
)
def test_any_other_shape_posts_something_readable(event: Any) -> None:
    """Never an exception; every message has a header and stays in Slack's limits; an
    untrusted text cannot ping the channel."""
    messages = alarm_messages(event)
    assert messages
    for m in messages:
        assert m.text
        assert len(m.text) <= 3000
        assert m.blocks[0]["type"] == "header"
        assert "<!channel>" not in flat(m)
        for block in m.blocks:
            if block["type"] == "section" and "text" in block:
                assert len(block["text"]["text"]) <= 3000


def test_runbook_anchors() -> None:
    assert runbook_anchor("mirrord-prod-schedule-dlq-not-empty").endswith(
        "#alarm-schedule-dlq-not-empty"
    )
    assert runbook_anchor("mirrord-prod-dlq-not-empty").endswith("#alarm-dlq-not-empty")
    assert runbook_anchor("mirrord-dev-queue-stuck") == "docs/operations.md#alarm-queue-stuck"
    assert runbook_anchor("someone-elses-alarm") == "docs/operations.md#alarms"
    assert len(set(ALARM_SUFFIXES)) == len(ALARM_SUFFIXES)


# --- the environment's name in every message ------------------------------------------


def test_with_environment_marks_header_and_text() -> None:
    m = start_message(
        job_id="j", date="2026-11-29", bottles=3, estimated_bytes=10, route="lambda", bucket="b"
    )
    named = with_environment(m, "staging")
    assert named.text.startswith("[staging] mirrord sync started")
    assert named.blocks[0]["text"]["text"].endswith("[staging]")
    assert named.blocks[1:] == m.blocks[1:]


def test_with_environment_without_a_header_adds_a_context_line() -> None:
    m = progress_message(job_id="j", done=1, total=10, bytes_done=5, elapsed_s=3, failed=0)
    named = with_environment(m, "prod")
    assert named.blocks[0] == {
        "type": "context",
        "elements": [{"type": "mrkdwn", "text": "Environment: *prod*"}],
    }
    assert named.blocks[1:] == m.blocks


def test_no_environment_leaves_the_message_as_it_is() -> None:
    m = progress_message(job_id="j", done=1, total=10, bytes_done=5, elapsed_s=3, failed=0)
    assert with_environment(m, None) is m
    assert with_environment(m, "") is m


def test_environment_setting() -> None:
    assert from_env({"MIRRORD_ENVIRONMENT": "prod-eu"}, require_bucket=False).environment == (
        "prod-eu"
    )
    assert from_env({}, require_bucket=False).environment is None
    for bad in ("<!channel>", "a b", "x" * 41):
        with pytest.raises(SettingsError, match="MIRRORD_ENVIRONMENT"):
            from_env({"MIRRORD_ENVIRONMENT": bad}, require_bucket=False)


# --- the EMF signals ------------------------------------------------------------------


def metrics(record: dict[str, Any]) -> dict[str, str]:
    (directive,) = record["_aws"]["CloudWatchMetrics"]
    assert directive["Dimensions"] == [["Route"]]
    return {m["Name"]: m["Unit"] for m in directive["Metrics"]}


@pytest.mark.parametrize(
    ("report", "changed", "stored", "stalled"),
    [
        (Report(job_id="j", date="d", planned=5, downloaded=3, adopted=1), 1, 4, 0),
        (Report(job_id="j", date="d", planned=5, failed=(Failure("k", "e"),)), 1, 0, 1),
        (Report(job_id="j", date="d", planned=5, stopped=True, remaining=5), 1, 0, 1),
        (Report(job_id="j", date="d", planned=0), 0, 0, 0),
        (Report(job_id="j", date="d", planned=2, adopted=2), 1, 2, 0),
    ],
)
def test_emf_carries_the_stall_signal(
    report: Report, changed: int, stored: int, stalled: int
) -> None:
    record = emf(report, route="fargate", now_ms=1)
    units = metrics(record)
    for name in ("CatalogChanged", "BottlesStored", "StalledRun"):
        assert units[name] == "Count"
    assert record["Route"] == "fargate"
    assert (record["CatalogChanged"], record["BottlesStored"], record["StalledRun"]) == (
        changed,
        stored,
        stalled,
    )
    # The success filter still reads these (infra/modules/monitoring).
    assert {"BottlesFailed", "BottlesRemaining"} <= set(record)


def test_running_emf_is_one_metric_in_seconds() -> None:
    record = running_emf(3723.456, route="fargate", now_ms=1700000000000)
    assert metrics(record) == {"JobRunningSeconds": "Seconds"}
    assert record["JobRunningSeconds"] == 3723.5
    assert record["_aws"]["Timestamp"] == 1700000000000
    assert record["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "mirrord"


def test_budget_fixture_is_plain_text() -> None:
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(BUDGET_TEXT)
