"""The roles in infra/modules/iam allow what the code calls: each SQS operation the job
queue adapter makes (mirrord/adapters/sqs.py) is granted to the Fargate task that serves
jobs. A call the policy lacks fails only in AWS (moto does not check IAM), where a SIGTERM
hand-back would fall back to using up one of the job's receives."""

from __future__ import annotations

import re

from conftest import ROOT

IAM = ROOT / "infra" / "modules" / "iam" / "iam.tf"
SQS_ADAPTER = ROOT / "mirrord" / "adapters" / "sqs.py"


def policy_actions(name: str) -> set[str]:
    """The actions of ``data "aws_iam_policy_document" "<name>"``, up to the next block."""
    text = IAM.read_text()
    start = text.index(f'data "aws_iam_policy_document" "{name}"')
    end = text.find('\ndata "', start + 1)
    block = text[start : end if end != -1 else len(text)]
    return set(re.findall(r'"((?:sqs|s3|kms|lambda|logs|secretsmanager):[A-Za-z*]+)"', block))


def sqs_operations() -> set[str]:
    """sqs:<Operation> for each ``self._client.<snake_case>(`` call in the adapter."""
    calls = re.findall(r"self\._client\.([a-z_]+)\(", SQS_ADAPTER.read_text())
    assert calls, "the adapter calls nothing: the pattern no longer matches its code"
    return {"sqs:" + "".join(part.title() for part in call.split("_")) for call in calls}


def test_the_task_role_may_make_every_call_the_job_queue_adapter_makes() -> None:
    used = sqs_operations()
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage"} <= used
    missing = used - policy_actions("task")
    assert not missing, f"infra/modules/iam: the task role lacks {sorted(missing)}"


def test_the_alarm_role_may_only_read_the_secret_and_write_its_logs() -> None:
    """The alarm Lambda posts the alarm topic's messages to Slack: nothing of the bucket,
    the queues or the other functions."""
    assert policy_actions("alarm") == {
        "secretsmanager:GetSecretValue",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "kms:Decrypt",
    }
