# Where people hear about mirrord: the Slack webhook (a secret the operator fills in,
# never a Terraform value) and an SNS topic for alarms, failed enqueues and budget
# alerts. The alarm Lambda (modules/lambda) is subscribed to the topic and posts each
# message to the same webhook; e-mail subscriptions are optional.
#
# After the first apply, store the webhook (the URL, or {"webhook_url": "…"}):
#   aws secretsmanager put-secret-value --secret-id <slack_secret_arn> --secret-string 'https://hooks.slack.com/services/…'
# Until then mirrord logs one warning per job and carries on without Slack.

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57: an incoming-webhook URL cannot be rotated by a Lambda; Slack issues a new one and the operator puts it here.
  #checkov:skip=CKV_AWS_149: uses kms_key_arn when one is given; otherwise the AWS-managed Secrets Manager key, which the account's roles can use without a key policy.
  name                    = "${var.name}/slack-webhook"
  description             = "Slack incoming-webhook URL for mirrord notifications (MIRRORD_SLACK_SECRET_ID). Set by the operator."
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days

  tags = var.tags
}

resource "aws_sns_topic" "this" {
  #checkov:skip=CKV_AWS_26: encrypted with kms_key_arn when one is given; the AWS-managed SNS key cannot be used, as CloudWatch alarms may not publish to a topic encrypted with it. The messages are alarm texts.
  name              = "${var.name}-alarms"
  kms_master_key_id = var.kms_key_arn

  tags = var.tags
}

resource "aws_sns_topic_subscription" "email" {
  for_each = toset(var.alarm_emails)

  topic_arn = aws_sns_topic.this.arn
  protocol  = "email"
  endpoint  = each.value
}

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account = data.aws_caller_identity.current.account_id
}

# Who may publish: this account's CloudWatch alarms, this account's budgets, and the
# account's own principals (the enqueue Lambda's role, for its on-failure record).
data "aws_iam_policy_document" "topic" {
  statement {
    sid       = "AccountPrincipals"
    actions   = ["sns:Publish", "sns:Subscribe", "sns:GetTopicAttributes"]
    resources = [aws_sns_topic.this.arn]

    principals {
      type        = "AWS"
      identifiers = ["arn:${data.aws_partition.current.partition}:iam::${local.account}:root"]
    }
  }

  statement {
    sid       = "CloudWatchAlarms"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.this.arn]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:cloudwatch:${data.aws_region.current.name}:${local.account}:alarm:*"]
    }
  }

  statement {
    sid       = "Budgets"
    actions   = ["sns:Publish"]
    resources = [aws_sns_topic.this.arn]

    principals {
      type        = "Service"
      identifiers = ["budgets.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = ["arn:${data.aws_partition.current.partition}:budgets::${local.account}:*"]
    }
  }
}

resource "aws_sns_topic_policy" "this" {
  arn    = aws_sns_topic.this.arn
  policy = data.aws_iam_policy_document.topic.json
}

# The monthly budget (monthly_budget_usd; null: none): the whole account's cost, as
# Budgets sees it without cost allocation tags, so one account per environment reads
# best. 80 % of it actually spent, or 100 % forecast for the month, notifies the topic
# (and so Slack).
resource "aws_budgets_budget" "this" {
  count = var.monthly_budget_usd == null ? 0 : 1

  name         = "${var.name}-monthly"
  budget_type  = "COST"
  limit_amount = format("%.2f", var.monthly_budget_usd)
  limit_unit   = "USD"
  time_unit    = "MONTHLY"

  notification {
    comparison_operator       = "GREATER_THAN"
    threshold                 = 80
    threshold_type            = "PERCENTAGE"
    notification_type         = "ACTUAL"
    subscriber_sns_topic_arns = [aws_sns_topic.this.arn]
  }

  notification {
    comparison_operator       = "GREATER_THAN"
    threshold                 = 100
    threshold_type            = "PERCENTAGE"
    notification_type         = "FORECASTED"
    subscriber_sns_topic_arns = [aws_sns_topic.this.arn]
  }

  depends_on = [aws_sns_topic_policy.this]
}
