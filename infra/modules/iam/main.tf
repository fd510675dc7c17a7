# Five roles, each allowed only what its code calls (see iam.tf):
#   enqueue   - read the hash file, invoke the sync Lambda, send to the job queue
#   sync      - the pipeline on the bucket, send to the job queue (hand-off) and the DLQ
#   task      - the daemon: the pipeline on the bucket, receive/extend/delete jobs
#   execution - ECS: pull the image, write the container's logs
#   alarm     - the alarm Lambda: read the Slack secret, write its logs

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  partition = data.aws_partition.current.partition
  region    = data.aws_region.current.name
  account   = data.aws_caller_identity.current.account_id

  sync_function_arn = "arn:${local.partition}:lambda:${local.region}:${local.account}:function:${var.sync_function_name}"

  log_group_arns = {
    enqueue = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${var.enqueue_function_name}"
    sync    = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${var.sync_function_name}"
    task    = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:${var.task_log_group_name}"
    alarm   = "arn:${local.partition}:logs:${local.region}:${local.account}:log-group:/aws/lambda/${var.alarm_function_name}"
  }

  # s3://bucket/key → that one object (and ListBucket, so a missing key is a 404, not a 403).
  external_s3 = (
    var.external_hash_url != null && startswith(coalesce(var.external_hash_url, "-"), "s3://")
    ? regex("^s3://(?P<bucket>[^/]+)/(?P<key>.+)$", var.external_hash_url)
    : null
  )

  # <account>.dkr.ecr.<region>.amazonaws.com/<repository>[:tag|@digest]
  ecr = try(
    regex("^(?P<account>\\d{12})\\.dkr\\.ecr\\.(?P<region>[a-z0-9-]+)\\.amazonaws\\.com(?:\\.cn)?/(?P<repository>[^:@]+)", var.image_uri),
    null
  )
}

resource "aws_iam_role" "enqueue" {
  name                 = "${var.name}-enqueue"
  description          = "mirrord enqueue Lambda: plan, estimate, route the weekly job"
  assume_role_policy   = data.aws_iam_policy_document.assume["lambda"].json
  max_session_duration = 3600

  tags = var.tags
}

resource "aws_iam_role" "sync" {
  name                 = "${var.name}-sync"
  description          = "mirrord sync Lambda: run small jobs into the bucket"
  assume_role_policy   = data.aws_iam_policy_document.assume["lambda"].json
  max_session_duration = 3600

  tags = var.tags
}

resource "aws_iam_role" "task" {
  name                 = "${var.name}-task"
  description          = "mirrord daemon (ECS task role): serve SQS jobs into the bucket"
  assume_role_policy   = data.aws_iam_policy_document.assume["ecs"].json
  max_session_duration = 3600

  tags = var.tags
}

resource "aws_iam_role" "execution" {
  name                 = "${var.name}-execution"
  description          = "mirrord ECS execution role: pull the image, ship the container's logs"
  assume_role_policy   = data.aws_iam_policy_document.assume["ecs"].json
  max_session_duration = 3600

  tags = var.tags
}

resource "aws_iam_role_policy" "enqueue" {
  name   = "mirrord-enqueue"
  role   = aws_iam_role.enqueue.id
  policy = data.aws_iam_policy_document.enqueue.json
}

resource "aws_iam_role_policy" "sync" {
  name   = "mirrord-sync"
  role   = aws_iam_role.sync.id
  policy = data.aws_iam_policy_document.sync.json
}

resource "aws_iam_role_policy" "task" {
  name   = "mirrord-task"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}

resource "aws_iam_role_policy" "execution" {
  name   = "mirrord-execution"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "alarm" {
  name                 = "${var.name}-alarm"
  description          = "mirrord alarm Lambda: post the alarm topic's messages to Slack"
  assume_role_policy   = data.aws_iam_policy_document.assume["lambda"].json
  max_session_duration = 3600

  tags = var.tags
}

resource "aws_iam_role_policy" "alarm" {
  name   = "mirrord-alarm"
  role   = aws_iam_role.alarm.id
  policy = data.aws_iam_policy_document.alarm.json
}
