"""What reaches the alarm topic, as Slack messages: pure, no I/O.

The topic (infra/modules/notifications) carries three kinds of message, each an SNS
record's ``Message`` string:

* a CloudWatch alarm's state change (a metric alarm: ``AlarmName``, ``NewStateValue``,
  ``NewStateReason``, ``Trigger``; a composite one: ``AlarmRule``, ``TriggeringChildren``);
* a Lambda on-failure destination record (the enqueue Lambda failed every attempt:
  ``requestContext``, ``responseContext``, ``responsePayload``);
* anything else (an AWS Budgets notification is plain text): posted as text, never an
  error. :func:`alarm_messages` never raises, whatever the event.
"""

from __future__ import annotations

from typing import Any

import orjson

from mirrord.core.messages import Message, _clip, _code, _context, _esc, _fields, _header, _section

RUNBOOK = "docs/operations.md"
# The alarms infra/modules/monitoring and cdn create that notify the topic, by the suffix after "<name>-" (longest
# first: "schedule-dlq-not-empty" before "dlq-not-empty"); each has a runbook section
# ``docs/operations.md#alarm-<suffix>``.
ALARM_SUFFIXES = (
    "schedule-dlq-not-empty",
    "dlq-not-empty",
    "sync-failed",
    "lambda-errors",
    "no-recent-sync",
    "queue-stuck",
    "job-too-long",
    "stalled-runs",
    "cdn-bytes-downloaded",
)
_STATES = {
    "ALARM": ":rotating_light:",
    "OK": ":white_check_mark:",
    "INSUFFICIENT_DATA": ":grey_question:",
}
_TEXT_MAX = 3000
_REASON_MAX = 1500
_RAW_MAX = 2500


def runbook_anchor(alarm_name: str) -> str:
    """``docs/operations.md#alarm-<suffix>`` for one of mirrord's alarms; the runbook's
    alarm list for any other."""
    for suffix in ALARM_SUFFIXES:
        if alarm_name == suffix or alarm_name.endswith(f"-{suffix}"):
            return f"{RUNBOOK}#alarm-{suffix}"
    return f"{RUNBOOK}#alarms"


def _text(value: Any, limit: int = 200) -> str:
    """A field from outside as plain text: a string as is, anything else as JSON."""
    if isinstance(value, str):
        return _clip(value, limit)
    return _clip(orjson.dumps(value).decode(), limit)


def alarm_state_message(doc: dict[str, Any]) -> Message:
    """A CloudWatch alarm's state change (metric or composite)."""
    name = _text(doc.get("AlarmName") or "unnamed alarm")
    state = _text(doc.get("NewStateValue") or "unknown", 40)
    old = _text(doc.get("OldStateValue") or "unknown", 40)
    reason = _text(doc.get("NewStateReason") or "", _REASON_MAX)
    anchor = runbook_anchor(name)
    icon = _STATES.get(state, ":bell:")
    pairs = [
        ("Alarm", _code(name)),
        ("State", f"{_esc(old)} → *{_esc(state)}*"),
        ("Since", _esc(_text(doc.get("StateChangeTime") or "unknown", 40))),
        ("Runbook", _code(anchor)),
    ]
    blocks: list[dict[str, Any]] = [_header(f"{icon} {state}: {name}"), _fields(pairs)]
    description = doc.get("AlarmDescription")
    if description:
        blocks.append(_section(_esc(_text(description, _REASON_MAX))))
    if reason:
        blocks.append(_section(f"*Reason*\n{_esc(reason)}"))
    if "AlarmRule" in doc:
        children = [
            f"{_text(c.get('Arn', '?')).rsplit(':', 1)[-1]} "
            f"({_text(c.get('State', {}).get('Value', '?'), 40)})"
            for c in doc.get("TriggeringChildren") or []
            if isinstance(c, dict)
        ]
        rule = f"rule {_code(_text(doc['AlarmRule'], 500), 500)}"
        if children:
            rule += f" · triggered by {_esc(', '.join(children), 1000)}"
        blocks.append(_context(f"Composite alarm: {rule}"))
    text = f"{state}: {name} ({old} → {state}): {reason} · runbook {anchor}"
    return Message(_esc(text, _TEXT_MAX), tuple(blocks))


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def lambda_failure_message(doc: dict[str, Any]) -> Message:
    """A Lambda on-failure destination record: which function, why, which request."""
    request = _object(doc.get("requestContext"))
    response = _object(doc.get("responseContext"))
    payload = doc.get("responsePayload")
    function = _text(request.get("functionArn") or "unknown function", 300)
    short = function.split(":function:", 1)[-1].split(":", 1)[0]
    condition = _text(request.get("condition") or "unknown", 60)
    error_type = error_message = ""
    if isinstance(payload, dict):
        error_type = _text(payload.get("errorType") or "", 100)
        error_message = _text(payload.get("errorMessage") or "", _REASON_MAX)
    elif payload is not None:
        error_message = _text(payload, _REASON_MAX)
    error_type = error_type or _text(response.get("functionError") or "", 100) or "no error"
    request_id = _text(request.get("requestId") or "unknown", 80)
    pairs = [
        ("Function", _code(short)),
        ("Condition", _esc(condition)),
        ("Error", _code(error_type)),
        ("Request id", _code(request_id)),
        ("Attempts", _esc(_text(request.get("approximateInvokeCount", "?"), 10))),
        ("Runbook", _code(f"{RUNBOOK}#alarm-lambda-errors")),
    ]
    blocks: list[dict[str, Any]] = [_header(f":x: Lambda failed: {short}"), _fields(pairs)]
    if error_message:
        fenced = _esc(error_message.replace("```", "'''"), _REASON_MAX)
        blocks.append(_section(f"*Error message*\n```{fenced}```"))
    blocks.append(_context(f"Logs: CloudWatch log group {_code(f'/aws/lambda/{short}')}"))
    text = (
        f"Lambda {short} failed ({condition}): {error_type}: {error_message} · request {request_id}"
    )
    return Message(_esc(text, _TEXT_MAX), tuple(blocks))


def other_message(subject: str, body: str) -> Message:
    """A notification of no shape mirrord knows (a budget alert, a test publish)."""
    title = subject or "notification"
    fenced = _esc(body.replace("```", "'''"), _RAW_MAX) if body else "(empty)"
    blocks = (
        _header(f":bell: {title}"),
        _section(f"```{fenced}```"),
        _context(f"Runbook: {_code(f'{RUNBOOK}#alarms')}"),
    )
    return Message(_esc(f"{title}: {body}", _TEXT_MAX), blocks)


def sns_message(record: Any) -> Message:
    """One SNS record of a Lambda event → its Slack message."""
    sns = record.get("Sns") if isinstance(record, dict) else None
    if not isinstance(sns, dict):
        return other_message("unreadable SNS record", _text(record, _RAW_MAX))
    subject = _text(sns.get("Subject") or "", 140)
    raw = sns.get("Message")
    body = raw if isinstance(raw, str) else _text(raw, _RAW_MAX)
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    try:
        if isinstance(doc, dict) and "AlarmName" in doc and "NewStateValue" in doc:
            return alarm_state_message(doc)
        if isinstance(doc, dict) and "requestContext" in doc and "responseContext" in doc:
            return lambda_failure_message(doc)
    except (AttributeError, TypeError, ValueError):  # a known shape, oddly filled
        pass
    return other_message(subject, body)


def alarm_messages(event: Any) -> list[Message]:
    """Every record of an SNS-triggered Lambda event, as a message; an event of another
    shape is one readable message, not an error."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records:
        return [other_message("unexpected event", _text(event, _RAW_MAX))]
    return [sns_message(r) for r in records]
