# The weekly tick. EventBridge invokes the enqueue Lambda asynchronously with a
# "Scheduled Event" ({"source": "aws.events", "time": …}); the job date is that time's
# UTC day. Failed invocations are retried by Lambda and then reported through the
# function's on-failure destination, so the target itself retries only delivery. An
# event EventBridge could not deliver at all (the function gone, its permission
# missing, throttled past the retry policy) lands in the schedule's own DLQ, with the
# error in its message attributes, instead of vanishing; `enabled = false` pauses the
# schedule without destroying anything.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  # Known before the queue exists, so it is created with its policy in one call.
  dlq_name = "${var.name}-dlq"
  dlq_arn  = "arn:${data.aws_partition.current.partition}:sqs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:${local.dlq_name}"
}

resource "aws_cloudwatch_event_rule" "this" {
  name                = var.name
  description         = "mirrord: plan and enqueue the sync"
  schedule_expression = var.schedule_expression
  state               = var.enabled ? "ENABLED" : "DISABLED"

  tags = var.tags
}

resource "aws_cloudwatch_event_target" "this" {
  rule      = aws_cloudwatch_event_rule.this.name
  target_id = "enqueue"
  arn       = var.function_arn

  retry_policy {
    maximum_event_age_in_seconds = 3600
    maximum_retry_attempts       = 3
  }

  dead_letter_config {
    arn = aws_sqs_queue.dlq.arn
  }
}

# Only this rule may send to the DLQ, and only over TLS.
data "aws_iam_policy_document" "dlq" {
  statement {
    sid       = "EventBridgeDeadLetters"
    effect    = "Allow"
    actions   = ["sqs:SendMessage"]
    resources = [local.dlq_arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.this.arn]
    }
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [local.dlq_arn]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue" "dlq" {
  name                      = local.dlq_name
  message_retention_seconds = 1209600 # 14 days: the alarm fires, someone looks
  policy                    = data.aws_iam_policy_document.dlq.json

  # With a customer-managed key, its key policy must let events.amazonaws.com use it
  # (kms:GenerateDataKey, kms:Decrypt), or EventBridge cannot write here.
  sqs_managed_sse_enabled           = var.kms_key_arn == null ? true : null
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = var.kms_key_arn == null ? null : 3600

  tags = var.tags
}

resource "aws_lambda_permission" "this" {
  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = var.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.this.arn
}
