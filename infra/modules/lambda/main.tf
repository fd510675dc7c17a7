# Both Lambdas run the same package. The enqueue function is woken by EventBridge; it
# invokes the sync function asynchronously (InvocationType=Event) for small jobs.
# Neither runs in a VPC: they reach GHCR and formulae.brew.sh directly, with no NAT.

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
