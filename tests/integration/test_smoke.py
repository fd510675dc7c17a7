"""The deploy workflow's smoke test and notice, and the runbook's Slack rotation, against
real peers: SQS, S3, Lambda and Secrets Manager in a moto server, the emulator upstream, a
loopback Slack receiver.

* A dry run (``{"source": "smoke"}``, ``"dry_run": true``, ``mirrord enqueue --dry-run``)
  plans and estimates like the weekly run, and sends, invokes and posts nothing.
* ``mirrord notify deploy`` posts one message naming environment, commit, image, status.
* A running daemon reads the webhook secret again for every job.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiobotocore.session import get_session
from conftest import (
    DATE,
    ROOT,
    MakeWorld,
    Receiver,
    make_settings,
    receiving,
    run_cli,
)

from mirrord.app import with_fresh_webhook
from mirrord.core.errors import JobError
from mirrord.core.messages import Message
from mirrord.daemon import Daemon
from mirrord.lambdas.enqueue import handler as enqueue_handler
from mirrord.lambdas.enqueue import is_dry_run, job_from_event

RUNBOOK = ROOT / "docs" / "operations.md"
# A function that does not exist in moto: an Invoke of it fails the handler, loudly.
NO_SUCH_FUNCTION = "mirrord-sync-does-not-exist"


@dataclass
class Queue:
    url: str
    client: Any

    async def depth(self) -> int:
        attrs = await self.client.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )
        return sum(int(v) for v in attrs["Attributes"].values())


@pytest.fixture
async def queue(bucket_name: str) -> AsyncIterator[Queue]:
    async with get_session().create_client("sqs") as client:
        url = (await client.create_queue(QueueName=bucket_name))["QueueUrl"]
        yield Queue(url, client)


def runbook_line(test: str) -> str:
    """The one-line ``sh`` block of docs/operations.md marked ``tested:`` by ``test``: the
    runbook's command is the one the test runs, not a copy of it."""
    lines = RUNBOOK.read_text().splitlines()
    marker = f"<!-- tested: tests/integration/test_smoke.py::{test} -->"
    start = lines.index(marker)
    assert lines[start + 1] == "```sh", f"{marker} is not followed by a sh block"
    body = lines[start + 2 : lines.index("```", start + 2)]
    assert len(body) == 1, f"the block of {test} should hold one command"
    return body[0]


def runbook_command(test: str) -> list[str]:
    return shlex.split(runbook_line(test))


async def run_runbook_shell(test: str, env: dict[str, str]) -> None:
    """The runbook line under bash, with the venv's tools (the aws CLI) first on PATH,
    while this loop goes on serving the test's peers."""
    venv_bin = str(Path(sys.executable).parent)
    proc = await asyncio.create_subprocess_exec(
        "bash",
        "-eo",
        "pipefail",
        "-c",
        runbook_line(test),
        env={**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", **env},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, (out + err).decode()


def smoke_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def deployed_env(world: Any, queue: Queue, slack: Receiver, **extra: str) -> dict[str, str]:
    s = world.app.settings
    return {
        "MIRRORD_BUCKET": s.bucket,
        "MIRRORD_API_URL": s.api_url,
        "MIRRORD_QUEUE_URL": queue.url,
        "MIRRORD_SYNC_FUNCTION": NO_SUCH_FUNCTION,
        "MIRRORD_SLACK_WEBHOOK_URL": slack.url,
        **extra,
    }


@pytest.mark.parametrize(("threshold", "route"), [("100", "lambda"), ("0", "fargate")])
async def test_smoke_event_plans_and_sends_nothing(
    make_world: MakeWorld,
    queue: Queue,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    threshold: str,
    route: str,
) -> None:
    """{"source": "smoke"} through the Lambda handler: the whole plan and estimate (the
    catalog, the hash file, the image indexes), the route it would take; no SQS message,
    no Invoke (the sync function does not exist: an Invoke would fail the handler), no
    Slack post, nothing written to the bucket."""
    world = await make_world()
    smoke_env(
        monkeypatch,
        deployed_env(world, queue, receiver, MIRRORD_SIZE_THRESHOLD_GB=threshold),
    )
    result = await asyncio.to_thread(enqueue_handler, {"source": "smoke", "date": DATE}, None)
    assert result["dry_run"] is True
    assert result["route"] == route
    assert result["job_id"] == f"{DATE}-smoke"
    assert result["bottles"] > 0
    assert result["estimate"]["bytes"] > 0
    assert result["estimate"]["from_index"] == result["bottles"]
    assert world.emu.requests["registry"] > 1, "the catalog and the image indexes were read"
    assert world.emu.requests["blob"] == 0, "no bottle was fetched"
    assert await queue.depth() == 0
    assert receiver.bodies == []
    listed = await world.app.s3.list_objects_v2(Bucket=world.app.settings.bucket)
    assert listed.get("KeyCount", 0) == 0


async def test_the_same_event_without_dry_run_does_send(
    make_world: MakeWorld, queue: Queue, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: a manual event with the same settings does send
    (so "nothing sent" there is the dry run's doing, not a broken set-up)."""
    world = await make_world()
    smoke_env(monkeypatch, deployed_env(world, queue, receiver, MIRRORD_SIZE_THRESHOLD_GB="0"))
    result = await asyncio.to_thread(enqueue_handler, {"source": "manual", "date": DATE}, None)
    assert "dry_run" not in result
    assert result["route"] == "fargate"
    assert await queue.depth() == 1
    assert len(receiver.bodies) == 1


def test_dry_run_is_exactly_a_boolean() -> None:
    """A typo must not turn a rehearsal into a real job, nor the reverse."""
    assert is_dry_run({"source": "smoke"})
    assert is_dry_run({"source": "manual", "dry_run": True})
    assert not is_dry_run({"source": "manual"})
    with pytest.raises(JobError, match="dry_run must be true or false"):
        is_dry_run({"source": "manual", "dry_run": "yes"})
    job = job_from_event({"source": "smoke"}, datetime.now(UTC))
    assert job.reason == "smoke"
    with pytest.raises(JobError, match=r"'manual' or 'smoke'"):
        job_from_event({"source": "smok"}, datetime.now(UTC))


async def test_runbook_enqueue_dry_run(
    make_world: MakeWorld, queue: Queue, receiver: Receiver
) -> None:
    """docs/operations.md's dry run from a shell, as printed there: one JSON line, the
    route, nothing on the queue, no Slack."""
    argv = runbook_command("test_runbook_enqueue_dry_run")
    assert argv[:2] == ["mirrord", "enqueue"]
    world = await make_world()
    env = deployed_env(world, queue, receiver, MIRRORD_SIZE_THRESHOLD_GB="0")
    result = await run_cli(*argv[1:], env=env)
    assert result.code == 0, result.stderr.decode()
    body = result.json()
    assert body["dry_run"] is True
    assert body["route"] == "fargate"
    assert body["bottles"] > 0
    assert await queue.depth() == 0
    assert receiver.bodies == []


# --- mirrord notify deploy -----------------------------------------------------------

COMMIT = "0123456789abcdef0123456789abcdef01234567"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/mirrord@sha256:" + "ab" * 32


async def test_notify_deploy_posts_env_commit_image_and_status(receiver: Receiver) -> None:
    result = await run_cli(
        *("notify", "deploy", "--env", "staging", "--status", "success"),
        *("--commit", COMMIT, "--image", IMAGE, "--run-url", "https://github.com/o/r/runs/1"),
        env={"MIRRORD_SLACK_WEBHOOK_URL": receiver.url},
    )
    assert result.code == 0, result.stderr.decode()
    [body] = receiver.bodies
    text = body["text"]
    assert "staging" in text
    assert "success" in text
    assert COMMIT[:12] in text
    assert IMAGE in text
    assert "https://github.com/o/r/runs/1" in text
    fields = orjson.dumps(body["blocks"]).decode()
    assert COMMIT in fields
    assert IMAGE in fields


async def test_notify_deploy_reads_the_webhook_secret(receiver: Receiver) -> None:
    """The webhook from Secrets Manager, as the functions read it (MIRRORD_SLACK_SECRET_ID)."""
    async with get_session().create_client("secretsmanager") as sm:
        name = f"mirrord/deploy-{COMMIT[:8]}-{id(receiver)}"
        await sm.create_secret(Name=name, SecretString=receiver.url)
    result = await run_cli(
        *("notify", "deploy", "--env", "prod", "--status", "failure", "--commit", COMMIT),
        env={"MIRRORD_SLACK_SECRET_ID": name},
    )
    assert result.code == 0, result.stderr.decode()
    [body] = receiver.bodies
    assert "prod" in body["text"]
    assert "failure" in body["text"]


async def test_notify_deploy_without_a_webhook_is_a_usage_error() -> None:
    result = await run_cli(
        *("notify", "deploy", "--env", "dev", "--status", "success", "--commit", COMMIT),
        env={"MIRRORD_SLACK_WEBHOOK_URL": "", "MIRRORD_SLACK_SECRET_ID": ""},
    )
    assert result.code == 2
    assert b"no Slack webhook" in result.stderr


async def test_notify_deploy_refused_by_slack_fails(receiver: Receiver) -> None:
    """A webhook that answers 404 (revoked): exit 1, so the workflow can say so."""
    from conftest import Reply

    receiver.answer(Reply(status=404, text="no_service"))
    result = await run_cli(
        *("notify", "deploy", "--env", "dev", "--status", "success", "--commit", COMMIT),
        env={"MIRRORD_SLACK_WEBHOOK_URL": receiver.url},
    )
    assert result.code == 1
    assert len(receiver.bodies) == 1


# --- rotating the Slack webhook under a running daemon -------------------------------


@pytest.fixture
async def second_receiver() -> AsyncIterator[Receiver]:
    async with receiving() as rec:
        yield rec


async def test_fresh_webhook_follows_a_rotated_secret(
    make_world: MakeWorld, bucket: str, receiver: Receiver, second_receiver: Receiver
) -> None:
    """with_fresh_webhook reads the secret again: after put-secret-value, the next
    message goes to the new webhook, none to the old."""
    async with get_session().create_client("secretsmanager") as sm:
        name = f"mirrord/rotate-{id(receiver)}"
        await sm.create_secret(Name=name, SecretString=receiver.url)
        world = await make_world(
            settings=lambda emu: make_settings(bucket, emu.api_url, slack_secret_id=name)
        )
        note = Message("hello", ())
        assert await world.app.slack.send(note)
        await sm.put_secret_value(SecretId=name, SecretString=second_receiver.url)
        assert await world.app.slack.send(note)  # the app as opened: still the old one
        fresh = await with_fresh_webhook(world.app)
        assert await fresh.slack.send(note)
    assert len(receiver.bodies) == 2
    assert len(second_receiver.bodies) == 1


async def test_running_daemon_posts_to_the_rotated_webhook(
    make_world: MakeWorld,
    bucket: str,
    queue: Queue,
    receiver: Receiver,
    second_receiver: Receiver,
) -> None:
    """The runbook's rotation without a restart: job 1 reports to the old webhook; the
    secret is rotated while the daemon runs; job 2 reports to the new one only."""
    async with get_session().create_client("secretsmanager") as sm:
        name = f"mirrord/daemon-{id(receiver)}"
        await sm.create_secret(Name=name, SecretString=receiver.url)
        world = await make_world(
            settings=lambda emu: make_settings(
                bucket,
                emu.api_url,
                slack_secret_id=name,
                queue_url=queue.url,
                heartbeat_seconds=1.0,
            )
        )
        app = world.app
        assert app.queue is not None
        stop = asyncio.Event()
        daemon = Daemon(app, app.queue, stop=stop, owner="rotation")
        task = asyncio.create_task(daemon.serve())
        try:
            await app.queue.send(
                job_from_event({"source": "manual", "date": DATE}, datetime.now(UTC))
            )
            await _until(lambda: daemon.jobs_done == 1 or task.done())
            before = len(receiver.bodies)
            assert before >= 1, "job 1 reported to the first webhook"
            # docs/operations.md's command, as printed there (the aws CLI, against moto).
            await run_runbook_shell(
                "test_running_daemon_posts_to_the_rotated_webhook",
                {"SLACK_SECRET": name, "NEW_WEBHOOK_URL": second_receiver.url},
            )
            job2 = {"source": "manual", "date": DATE, "job_id": f"{DATE}-second"}
            await app.queue.send(job_from_event(job2, datetime.now(UTC)))
            await _until(lambda: daemon.jobs_done == 2 or task.done())
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)
    assert daemon.jobs_done == 2
    assert len(receiver.bodies) == before, "nothing more to the rotated-out webhook"
    assert second_receiver.bodies, "job 2 reported to the new webhook"
    assert any(f"{DATE}-second" in orjson.dumps(b).decode() for b in second_receiver.bodies)


async def _until(check: Any, seconds: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.1)


def test_runbook_exists() -> None:
    assert Path(RUNBOOK).is_file()
