# The weekly tick. EventBridge invokes the enqueue Lambda asynchronously with a
# "Scheduled Event" ({"source": "aws.events", "time": …}); the job date is that time's
# UTC day. Failed invocations are retried by Lambda and then reported through the
# function's on-failure destination, so the target itself retries only delivery.

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
}

resource "aws_lambda_permission" "this" {
  statement_id  = "AllowEventBridgeSchedule"
  action        = "lambda:InvokeFunction"
  function_name = var.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.this.arn
}
