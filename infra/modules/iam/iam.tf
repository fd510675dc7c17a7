# The policy documents. Every statement names its resources; the one "*" is
# ecr:GetAuthorizationToken, which AWS defines on no resource.

data "aws_iam_policy_document" "assume" {
  for_each = {
    lambda = "lambda.amazonaws.com"
    ecs    = "ecs-tasks.amazonaws.com"
  }

  statement {
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = [each.value]
    }

    # ECS passes the account of the task to the assume call (confused-deputy guard);
    # Lambda does not for execution roles, so the condition is for ECS only.
    dynamic "condition" {
      for_each = each.key == "ecs" ? [local.account] : []
      content {
        test     = "StringEquals"
        variable = "aws:SourceAccount"
        values   = [condition.value]
      }
    }
  }
}

# Reading and writing the mirror: bottles (PutObject, multipart), the hash file
# (conditional PutObject), status.json and the lock; with prune, deleting bottles.
# ListBucket makes a missing key a 404 rather than a 403; ListBucketMultipartUploads
# lets verify find stray uploads.
data "aws_iam_policy_document" "bucket_rw" {
  statement {
    sid       = "MirrorBucket"
    actions   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
    resources = [var.bucket_arn]
  }

  statement {
    sid = "MirrorObjects"
    actions = [
      "s3:GetObject",
      "s3:PutObject",
      "s3:AbortMultipartUpload",
      "s3:ListMultipartUploadParts",
    ]
    resources = ["${var.bucket_arn}/*"]
  }

  # Prune (prune_after_sync): the dated bottle folders and brew 6's copies, never the
  # hash file, status.json, the lock or api/. Versioning keeps what it deletes.
  dynamic "statement" {
    for_each = var.prune ? [var.bucket_arn] : []
    content {
      sid       = "PruneBottles"
      actions   = ["s3:DeleteObject"]
      resources = ["${statement.value}/????-??-??/*", "${statement.value}/v2/homebrew/core/*"]
    }
  }
}

data "aws_iam_policy_document" "common" {
  statement {
    sid       = "SlackWebhook"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.slack_secret_arn]
  }

  dynamic "statement" {
    for_each = local.external_s3 == null ? [] : [local.external_s3]
    content {
      sid       = "ExternalHashFile"
      actions   = ["s3:GetObject"]
      resources = ["arn:${local.partition}:s3:::${statement.value.bucket}/${statement.value.key}"]
    }
  }

  dynamic "statement" {
    for_each = local.external_s3 == null ? [] : [local.external_s3]
    content {
      sid       = "ExternalHashBucket"
      actions   = ["s3:ListBucket"]
      resources = ["arn:${local.partition}:s3:::${statement.value.bucket}"]
    }
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "CustomerManagedKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "enqueue" {
  source_policy_documents = [data.aws_iam_policy_document.common.json]

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.log_group_arns.enqueue}:*"]
  }

  statement {
    sid       = "HashFileBucket"
    actions   = ["s3:ListBucket"]
    resources = [var.bucket_arn]
  }

  statement {
    sid       = "HashFile"
    actions   = ["s3:GetObject"]
    resources = ["${var.bucket_arn}/${var.hash_key}"]
  }

  statement {
    sid       = "SendLargeJobs"
    actions   = ["sqs:SendMessage"]
    resources = [var.queue_arn]
  }

  statement {
    sid       = "InvokeSyncLambda"
    actions   = ["lambda:InvokeFunction"]
    resources = [local.sync_function_arn, "${local.sync_function_arn}:*"]
  }

  statement {
    sid       = "OnFailureDestination"
    actions   = ["sns:Publish"]
    resources = [var.alarm_topic_arn]
  }
}

data "aws_iam_policy_document" "sync" {
  source_policy_documents = [
    data.aws_iam_policy_document.common.json,
    data.aws_iam_policy_document.bucket_rw.json,
  ]

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.log_group_arns.sync}:*"]
  }

  statement {
    sid       = "HandOffAndDeadLetter"
    actions   = ["sqs:SendMessage"]
    resources = [var.queue_arn, var.dlq_arn]
  }
}

data "aws_iam_policy_document" "task" {
  source_policy_documents = [
    data.aws_iam_policy_document.common.json,
    data.aws_iam_policy_document.bucket_rw.json,
  ]

  statement {
    sid = "ServeJobs"
    # SendMessage: a job handed back on SIGTERM (a deploy) is sent again as a new message,
    # so the hand-back does not use up one of its receives (daemon.py, docs/design.md §8).
    actions = [
      "sqs:ReceiveMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:DeleteMessage",
      "sqs:SendMessage",
    ]
    resources = [var.queue_arn]
  }
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.log_group_arns.task}:*"]
  }

  dynamic "statement" {
    for_each = local.ecr == null ? [] : [local.ecr]
    content {
      sid       = "EcrToken"
      actions   = ["ecr:GetAuthorizationToken"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = local.ecr == null ? [] : [local.ecr]
    content {
      sid       = "PullImage"
      actions   = ["ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer"]
      resources = ["arn:${local.partition}:ecr:${statement.value.region}:${statement.value.account}:repository/${statement.value.repository}"]
    }
  }
}

# The alarm Lambda: the webhook's secret, its own log group and, with a customer-managed
# key, decrypting the secret and its environment. Nothing of the bucket or the queues.
data "aws_iam_policy_document" "alarm" {
  statement {
    sid       = "SlackWebhook"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.slack_secret_arn]
  }

  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${local.log_group_arns.alarm}:*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "CustomerManagedKey"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }
}
