"""SNS events as the alarm Lambda receives them, shaped as AWS sends them: a CloudWatch
metric alarm's and a composite alarm's state change, a Lambda on-failure destination
record (the enqueue failed every attempt), an AWS Budgets alert (plain text)."""

from __future__ import annotations

from typing import Any

import orjson

TOPIC = "arn:aws:sns:us-east-1:123456789012:mirrord-prod-alarms"


def sns_event(message: str, subject: str | None = None) -> dict[str, Any]:
    """The Lambda event of one SNS notification (Records[0].Sns)."""
    return {
        "Records": [
            {
                "EventSource": "aws:sns",
                "EventVersion": "1.0",
                "EventSubscriptionArn": f"{TOPIC}:2bcfbf39-05c3-41de-beaa-fcfcc21c8f55",
                "Sns": {
                    "Type": "Notification",
                    "MessageId": "95df01b4-ee98-5cb9-9903-4c221d41eb5e",
                    "TopicArn": TOPIC,
                    "Subject": subject,
                    "Message": message,
                    "Timestamp": "2026-11-29T03:41:12.345Z",
                    "SignatureVersion": "1",
                    "Signature": "EXAMPLE",
                    "SigningCertUrl": "https://sns.us-east-1.amazonaws.com/cert.pem",
                    "UnsubscribeUrl": "https://sns.us-east-1.amazonaws.com/?Action=Unsubscribe",
                    "MessageAttributes": {},
                },
            }
        ]
    }


def metric_alarm(state: str = "ALARM", old: str = "OK") -> dict[str, Any]:
    return {
        "AlarmName": "mirrord-prod-dlq-not-empty",
        "AlarmDescription": "A message is in mirrord-prod-jobs-dlq: a job failed on every receive.",
        "AWSAccountId": "123456789012",
        "AlarmConfigurationUpdatedTimestamp": "2026-11-01T10:00:00.000+0000",
        "NewStateValue": state,
        "NewStateReason": (
            "Threshold Crossed: 1 out of the last 1 datapoints [1.0 (29/11/26 03:36:00)] was "
            "greater than the threshold (0.0) (minimum 1 datapoint for OK -> ALARM transition)."
        ),
        "StateChangeTime": "2026-11-29T03:41:12.300+0000",
        "Region": "US East (N. Virginia)",
        "AlarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:mirrord-prod-dlq-not-empty",
        "OldStateValue": old,
        "OKActions": [TOPIC],
        "AlarmActions": [TOPIC],
        "InsufficientDataActions": [],
        "Trigger": {
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Namespace": "AWS/SQS",
            "StatisticType": "Statistic",
            "Statistic": "MAXIMUM",
            "Unit": None,
            "Dimensions": [{"value": "mirrord-prod-jobs-dlq", "name": "QueueName"}],
            "Period": 300,
            "EvaluationPeriods": 1,
            "DatapointsToAlarm": 1,
            "ComparisonOperator": "GreaterThanThreshold",
            "Threshold": 0.0,
            "TreatMissingData": "notBreaching",
            "EvaluateLowSampleCountPercentile": "",
        },
    }


def composite_alarm() -> dict[str, Any]:
    return {
        "AlarmName": "mirrord-prod-no-recent-sync",
        "AlarmDescription": "No successful mirrord sync for 8 days (and no run under way).",
        "AWSAccountId": "123456789012",
        "NewStateValue": "ALARM",
        "NewStateReason": (
            "arn:aws:cloudwatch:us-east-1:123456789012:alarm:mirrord-prod-no-success-7d "
            "transitioned to ALARM at Sunday 29 November, 2026 03:41:12 UTC"
        ),
        "StateChangeTime": "2026-11-29T03:41:12.300+0000",
        "Region": "US East (N. Virginia)",
        "AlarmArn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:mirrord-prod-no-recent-sync",
        "OldStateValue": "OK",
        "AlarmRule": (
            'ALARM("mirrord-prod-no-success-7d") AND ALARM("mirrord-prod-enqueue-idle-1d")'
        ),
        "TriggeringChildren": [
            {
                "Arn": "arn:aws:cloudwatch:us-east-1:123456789012:alarm:mirrord-prod-no-success-7d",
                "State": {"Value": "ALARM", "Timestamp": "2026-11-29T03:41:12.300+0000"},
            }
        ],
        "OKActions": [TOPIC],
        "AlarmActions": [TOPIC],
        "InsufficientDataActions": [],
    }


def lambda_failure() -> dict[str, Any]:
    """An async invocation that failed every attempt (Python's error payload)."""
    return {
        "version": "1.0",
        "timestamp": "2026-11-29T03:05:41.123Z",
        "requestContext": {
            "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:mirrord-prod-enqueue:$LATEST",
            "condition": "RetriesExhausted",
            "approximateInvokeCount": 2,
        },
        "requestPayload": {"source": "aws.events", "detail-type": "Scheduled Event"},
        "responseContext": {
            "statusCode": 200,
            "executedVersion": "$LATEST",
            "functionError": "Unhandled",
        },
        "responsePayload": {
            "errorMessage": "catalog: GET https://formulae.brew.sh/api/formula.json: 503",
            "errorType": "UpstreamError",
            "requestId": "e4b46cbf-b738-xmpl-8880-a18cdf61200e",
            "stackTrace": ['  File "/var/task/mirrord/lambdas/enqueue.py", line 50'],
        },
    }


BUDGET_TEXT = (
    "AWS Budget Notification November 29, 2026\n"
    "AWS Account 123456789012\n\n"
    "Dear AWS Customer,\n\n"
    "You requested that we alert you when the ACTUAL Cost associated with your "
    "mirrord-prod-monthly budget is greater than 80.00% of $50.00 for the current month. "
    "The ACTUAL Cost associated with this budget is $41.20."
)


def events() -> dict[str, dict[str, Any]]:
    """Every shape, by name."""
    return {
        "alarm": sns_event(
            orjson.dumps(metric_alarm()).decode(),
            'ALARM: "mirrord-prod-dlq-not-empty" in US East (N. Virginia)',
        ),
        "ok": sns_event(
            orjson.dumps(metric_alarm("OK", "ALARM")).decode(),
            'OK: "mirrord-prod-dlq-not-empty" in US East (N. Virginia)',
        ),
        "composite": sns_event(
            orjson.dumps(composite_alarm()).decode(),
            'ALARM: "mirrord-prod-no-recent-sync" in US East (N. Virginia)',
        ),
        "lambda-failure": sns_event(orjson.dumps(lambda_failure()).decode()),
        "budget": sns_event(BUDGET_TEXT, "AWS Budgets: mirrord-prod-monthly has exceeded"),
    }
