# The job queue the enqueue Lambda (large jobs) and the sync Lambda (hand-off at its
# deadline) write to, and the daemon reads. A body that is not a valid job, or a job
# that keeps failing, lands in the dead-letter queue after max_receive_count receives.
# The DLQ is also the sync Lambda's dead-letter target, so an operator can redrive
# either kind of failed job straight back to the daemon.

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  arn_prefix = "arn:${data.aws_partition.current.partition}:sqs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}"

  # Known before the queues exist, so each queue is created with its policy in one call.
  arns = {
    this = "${local.arn_prefix}:${var.name}"
    dlq  = "${local.arn_prefix}:${var.name}-dlq"
  }
}

data "aws_iam_policy_document" "tls_only" {
  for_each = local.arns

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [each.value]

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
  name                      = "${var.name}-dlq"
  message_retention_seconds = 1209600 # 14 days: time to look, then redrive
  policy                    = data.aws_iam_policy_document.tls_only["dlq"].json

  sqs_managed_sse_enabled           = var.kms_key_arn == null ? true : null
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = var.kms_key_arn == null ? null : 3600

  tags = var.tags
}

resource "aws_sqs_queue" "this" {
  name                       = var.name
  visibility_timeout_seconds = 3 * var.heartbeat_seconds
  message_retention_seconds  = var.message_retention_seconds
  receive_wait_time_seconds  = 20 # the daemon long-polls for 20 s too
  policy                     = data.aws_iam_policy_document.tls_only["this"].json

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.dlq.arn
    maxReceiveCount     = var.max_receive_count
  })

  sqs_managed_sse_enabled           = var.kms_key_arn == null ? true : null
  kms_master_key_id                 = var.kms_key_arn
  kms_data_key_reuse_period_seconds = var.kms_key_arn == null ? null : 3600

  tags = var.tags
}
