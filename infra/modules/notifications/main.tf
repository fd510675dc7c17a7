# Where people hear about mirrord: the Slack webhook (a secret the operator fills in,
# never a Terraform value) and an SNS topic for alarms and failed enqueues.
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
