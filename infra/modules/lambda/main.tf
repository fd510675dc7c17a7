# The three Lambdas run the same package. The enqueue function is woken by EventBridge;
# it invokes the sync function asynchronously (InvocationType=Event) for small jobs. The
# alarm function is subscribed to the alarm topic and posts every message to Slack.
# None runs in a VPC: they reach GHCR, formulae.brew.sh and Slack directly, with no NAT.

locals {
  functions = {
    enqueue = {
      name        = var.enqueue_function_name
      handler     = "mirrord.lambdas.enqueue.handler"
      description = "mirrord: plan and estimate the weekly sync, send it to the sync Lambda or SQS"
      role        = var.enqueue_role_arn
      timeout     = var.enqueue_timeout
      memory      = var.enqueue_memory_size
      environment = merge(var.environment, {
        MIRRORD_SYNC_FUNCTION = var.sync_function_name
        MIRRORD_LOGS_HINT     = "CloudWatch log group /aws/lambda/${var.enqueue_function_name}"
      })
    }
    sync = {
      name        = var.sync_function_name
      handler     = "mirrord.lambdas.sync.handler"
      description = "mirrord: run a small sync job; hand it to SQS near the deadline"
      role        = var.sync_role_arn
      timeout     = var.sync_timeout
      memory      = var.sync_memory_size
      environment = merge(var.environment, {
        MIRRORD_LAMBDA_MARGIN_SECONDS = tostring(var.lambda_margin_seconds)
        MIRRORD_LOGS_HINT             = "CloudWatch log group /aws/lambda/${var.sync_function_name}"
      })
    }
    alarm = {
      name        = var.alarm_function_name
      handler     = "mirrord.lambdas.alarm.handler"
      description = "mirrord: post every message of the alarm topic to Slack"
      role        = var.alarm_role_arn
      timeout     = 60 # one SNS record per invocation; a Slack send takes 25 s at most
      memory      = 256
      # Only what it reads: the webhook's secret and the names; no bucket, no queue.
      environment = {
        for k, v in var.environment : k => v
        if contains(["MIRRORD_SLACK_SECRET_ID", "MIRRORD_ENVIRONMENT", "MIRRORD_LOG_LEVEL"], k)
      }
    }
  }
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338: retention is the log_retention_days variable (30 days by default); a year of sync logs has no use once status.json and the metrics are kept.
  #checkov:skip=CKV_AWS_158: encrypted with kms_key_arn when one is given; otherwise CloudWatch Logs' own encryption at rest, and the logs hold no secrets (the webhook URL is never logged).
  for_each = local.functions

  name              = "/aws/lambda/${each.value.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

resource "aws_lambda_function" "enqueue" {
  #checkov:skip=CKV_AWS_117: the function calls public endpoints (GHCR, formulae.brew.sh, Slack); in a VPC it would need a NAT gateway for nothing more.
  #checkov:skip=CKV_AWS_116: an asynchronous failure goes to the on-failure destination (aws_lambda_function_event_invoke_config.enqueue), which carries the error as well as the event.
  #checkov:skip=CKV_AWS_272: the zip is built by CI from this repository; there is no signing profile to verify against.
  #checkov:skip=CKV_AWS_115: one enqueue a week; a reservation would fail outright on accounts with the default concurrency quota of 10.
  #checkov:skip=CKV_AWS_173: the environment holds names and tuning only (the Slack webhook lives in Secrets Manager); it uses kms_key_arn when one is given.
  function_name    = local.functions.enqueue.name
  description      = local.functions.enqueue.description
  role             = local.functions.enqueue.role
  handler          = local.functions.enqueue.handler
  runtime          = var.runtime
  architectures    = [var.architecture]
  filename         = var.package_path
  source_code_hash = filebase64sha256(var.package_path)
  timeout          = local.functions.enqueue.timeout
  memory_size      = local.functions.enqueue.memory
  kms_key_arn      = var.kms_key_arn

  environment {
    variables = local.functions.enqueue.environment
  }

  tracing_config {
    mode = "PassThrough"
  }

  tags = var.tags

  depends_on = [aws_cloudwatch_log_group.this]
}

resource "aws_lambda_function" "sync" {
  #checkov:skip=CKV_AWS_117: the function streams bottles from GHCR, a public endpoint; in a VPC it would need a NAT gateway for nothing more.
  #checkov:skip=CKV_AWS_272: the zip is built by CI from this repository; there is no signing profile to verify against.
  #checkov:skip=CKV_AWS_115: the bucket lock already allows one sync at a time; a reservation would fail outright on accounts with the default concurrency quota of 10.
  #checkov:skip=CKV_AWS_173: the environment holds names and tuning only (the Slack webhook lives in Secrets Manager); it uses kms_key_arn when one is given.
  function_name    = local.functions.sync.name
  description      = local.functions.sync.description
  role             = local.functions.sync.role
  handler          = local.functions.sync.handler
  runtime          = var.runtime
  architectures    = [var.architecture]
  filename         = var.package_path
  source_code_hash = filebase64sha256(var.package_path)
  timeout          = local.functions.sync.timeout
  memory_size      = local.functions.sync.memory
  kms_key_arn      = var.kms_key_arn

  environment {
    variables = local.functions.sync.environment
  }

  # The event is the job message: after the last retry it lands in the job DLQ as is,
  # ready to be redriven to the daemon.
  dead_letter_config {
    target_arn = var.sync_dead_letter_arn
  }

  tracing_config {
    mode = "PassThrough"
  }

  tags = var.tags

  depends_on = [aws_cloudwatch_log_group.this]
}

resource "aws_lambda_function_event_invoke_config" "enqueue" {
  function_name                = aws_lambda_function.enqueue.function_name
  maximum_retry_attempts       = 1
  maximum_event_age_in_seconds = 3600

  destination_config {
    on_failure {
      destination = var.enqueue_failure_destination_arn
    }
  }
}

resource "aws_lambda_function_event_invoke_config" "sync" {
  function_name                = aws_lambda_function.sync.function_name
  maximum_retry_attempts       = 1 # a retry resumes from the checkpoint; nothing is fetched twice
  maximum_event_age_in_seconds = 21600
}

resource "aws_lambda_function" "alarm" {
  #checkov:skip=CKV_AWS_117: the function posts to Slack, a public endpoint; in a VPC it would need a NAT gateway for nothing more.
  #checkov:skip=CKV_AWS_116: SNS invokes it asynchronously; a message it could not post is logged with its text (services/alarm.py), and the topic's e-mail subscribers receive it from SNS anyway.
  #checkov:skip=CKV_AWS_272: the zip is built by CI from this repository; there is no signing profile to verify against.
  #checkov:skip=CKV_AWS_115: a few alarms a week; a reservation would fail outright on accounts with the default concurrency quota of 10.
  #checkov:skip=CKV_AWS_173: the environment holds the secret's ARN and the environment's name only; it uses kms_key_arn when one is given.
  function_name    = local.functions.alarm.name
  description      = local.functions.alarm.description
  role             = local.functions.alarm.role
  handler          = local.functions.alarm.handler
  runtime          = var.runtime
  architectures    = [var.architecture]
  filename         = var.package_path
  source_code_hash = filebase64sha256(var.package_path)
  timeout          = local.functions.alarm.timeout
  memory_size      = local.functions.alarm.memory
  kms_key_arn      = var.kms_key_arn

  environment {
    variables = local.functions.alarm.environment
  }

  tracing_config {
    mode = "PassThrough"
  }

  tags = var.tags

  depends_on = [aws_cloudwatch_log_group.this]
}

# No retries: an alarm posted twice is noise, and a Slack outage outlasts them.
resource "aws_lambda_function_event_invoke_config" "alarm" {
  function_name                = aws_lambda_function.alarm.function_name
  maximum_retry_attempts       = 0
  maximum_event_age_in_seconds = 3600
}

resource "aws_lambda_permission" "alarm" {
  statement_id  = "AlarmTopic"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.alarm.function_name
  principal     = "sns.amazonaws.com"
  source_arn    = var.alarm_topic_arn
}

resource "aws_sns_topic_subscription" "alarm" {
  topic_arn = var.alarm_topic_arn
  protocol  = "lambda"
  endpoint  = aws_lambda_function.alarm.arn

  depends_on = [aws_lambda_permission.alarm]
}
