"""The alarm Lambda end to end: mirrord.lambdas.alarm.handler, on the runtime's own
thread and loop, reads the webhook from a real Secrets Manager secret (moto) and posts
each real-shaped SNS event to a real local webhook receiver, naming the environment.
Also: every other Slack message names it too (the App's Slack)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import boto3
import orjson
import pytest
from conftest import Receiver, Reply, make_settings
from sns_events import events, sns_event

from mirrord.app import open_app
from mirrord.core.messages import failure_message
from mirrord.lambdas.alarm import handler


@pytest.fixture
def alarm_env(moto: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> str:
    """The alarm function's environment as Terraform sets it: the secret (holding the
    receiver's URL, as JSON) and the environment's name; no bucket."""
    sm = boto3.client("secretsmanager", endpoint_url=moto, region_name="us-east-1")
    name = f"mirrord-staging/slack-webhook-{uuid.uuid4().hex[:8]}"
    arn: str = sm.create_secret(
        Name=name, SecretString=orjson.dumps({"webhook_url": receiver.url}).decode()
    )["ARN"]
    monkeypatch.setenv("MIRRORD_SLACK_SECRET_ID", arn)
    monkeypatch.setenv("MIRRORD_ENVIRONMENT", "staging")
    return arn


def shown(body: dict[str, Any]) -> str:
    return orjson.dumps(body).decode()


def log_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    """The handler's JSON log lines (it configures logging as in Lambda: to stderr)."""
    lines = []
    for line in capsys.readouterr().err.splitlines():
        try:
            lines.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            continue
    return lines


@pytest.mark.parametrize("kind", ["alarm", "ok", "composite", "lambda-failure", "budget"])
async def test_each_sns_shape_reaches_slack_with_the_environment(
    alarm_env: str, receiver: Receiver, kind: str
) -> None:
    out = await asyncio.to_thread(handler, events()[kind], None)
    assert out == {"posted": 1, "unsent": 0}
    (body,) = receiver.bodies
    assert body["text"].startswith("[staging] ")
    assert body["blocks"][0]["type"] == "header"
    assert body["blocks"][0]["text"]["text"].endswith("[staging]")
    expected = {
        "alarm": "docs/operations.md#alarm-dlq-not-empty",
        "ok": "ALARM → *OK*",
        "composite": "docs/operations.md#alarm-no-recent-sync",
        "lambda-failure": "UpstreamError",
        "budget": "80.00% of $50.00",
    }[kind]
    assert expected in shown(body)


async def test_garbage_still_posts_something(alarm_env: str, receiver: Receiver) -> None:
    out = await asyncio.to_thread(handler, {"surprise": True}, None)
    assert out == {"posted": 1, "unsent": 0}
    assert "surprise" in shown(receiver.bodies[0])
    await asyncio.to_thread(handler, sns_event("{half a json"), None)
    assert "{half a json" in shown(receiver.bodies[1])


async def test_a_slack_outage_does_not_raise_and_logs_the_alarm(
    alarm_env: str, receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    """Slack answers 503 twice (the send and its one retry): the handler returns (no
    Lambda retry re-posting a batch), and the log line keeps the alarm's text."""
    receiver.answer(
        Reply(status=503, text="no_service", headers={"Retry-After": "0"}),
        Reply(status=503, text="no_service", headers={"Retry-After": "0"}),
    )
    out = await asyncio.to_thread(handler, events()["alarm"], None)
    logs = log_lines(capsys)
    assert out == {"posted": 0, "unsent": 1}
    assert len(receiver.bodies) == 2
    (entry,) = [e for e in logs if e["event"] == "alarm_not_posted"]
    assert entry["level"] == "error"
    assert "mirrord-prod-dlq-not-empty" in entry["text"]
    assert receiver.url not in repr(logs)


async def test_a_missing_secret_does_not_raise(
    moto: str,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MIRRORD_SLACK_SECRET_ID", "mirrord-nowhere/slack-webhook")
    out = await asyncio.to_thread(handler, events()["alarm"], None)
    logs = log_lines(capsys)
    assert out == {"posted": 0, "unsent": 1}
    assert receiver.bodies == []
    assert any(e["event"] == "slack_secret_unusable" for e in logs)


async def test_job_messages_name_the_environment(bucket: str, receiver: Receiver) -> None:
    """MIRRORD_ENVIRONMENT reaches the App's Slack: a sync's failure message says which
    deployment failed; without it (a local run) no name is added."""
    message = failure_message(
        job_id="2026-11-29-weekly", date="2026-11-29", error="boom", report=None, logs_hint="x"
    )
    for environment, prefix in (("prod", "[prod] "), (None, "mirrord sync failed")):
        settings = make_settings(bucket, environment=environment, slack_webhook_url=receiver.url)
        async with open_app(settings) as app:
            assert await app.slack.send(message) is True
        body = receiver.bodies[-1]
        assert body["text"].startswith(prefix)
        assert ("[prod]" in body["blocks"][0]["text"]["text"]) is (environment is not None)
