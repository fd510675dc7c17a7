# mirrord: EventBridge (weekly) → enqueue Lambda → sync Lambda (small jobs) or SQS →
# daemon on ECS Fargate (large jobs) → the S3 mirror. See README.md in this folder.
#
# This is a module: infra/environments/<env>/ configure the provider and call it.

locals {
  name = "${var.name_prefix}-${var.environment}"

  tags = {
    Project     = "mirrord"
    Environment = var.environment
    ManagedBy   = "terraform"
  }

  # The daemon's heartbeat: it keeps a job's message invisible for 3 of them, so the
  # queue's visibility timeout is 3 heartbeats too (a dead task's job comes back then).
  heartbeat_seconds = 60
  stop_timeout      = 120 # Fargate's longest SIGTERM → SIGKILL
  stop_grace        = 90  # in-flight transfers after SIGTERM; leaves 30 s to checkpoint
  # Receives before the DLQ; a shard failing on its last one is given up on (reported by
  # key) so the fan-in of its siblings still runs (docs/design.md §12).
  max_receive_count = 3

  enqueue_function_name = "${local.name}-enqueue"
  sync_function_name    = "${local.name}-sync"
  alarm_function_name   = "${local.name}-alarm"
  daemon_name           = "${local.name}-daemon"
  daemon_log_group_name = "/ecs/${local.daemon_name}"

  # Settings every runtime shares (mirrord reads them from the environment).
  mirrord_environment = merge(
    {
      MIRRORD_BUCKET            = module.s3.bucket_id
      MIRRORD_QUEUE_URL         = module.sqs.queue_url
      MIRRORD_PLATFORMS         = var.platforms
      MIRRORD_CONCURRENCY       = tostring(var.concurrency)
      MIRRORD_PART_SIZE         = "${var.part_size_mib}MiB"
      MIRRORD_SIZE_THRESHOLD_GB = tostring(var.size_threshold_gb)
      MIRRORD_HEARTBEAT_SECONDS = tostring(local.heartbeat_seconds)
      MIRRORD_SLACK_SECRET_ID   = module.notifications.slack_secret_arn
      MIRRORD_ENVIRONMENT       = var.environment # named in every Slack message
      # Scale-out: a job fans out to at most as many shards as tasks may run at once, so
      # max_tasks = 1 (the default) never shards.
      MIRRORD_SHARD_BYTES  = "${var.shard_gb}GB"
      MIRRORD_MAX_SHARDS   = tostring(var.max_tasks)
      MIRRORD_MAX_RECEIVES = tostring(local.max_receive_count)
      # One switch with the CloudFront distribution: the brew-6 copies are written
      # only where something serves them.
      MIRRORD_BREW_MIRROR = tostring(var.brew_mirror)
    },
    var.external_hash_url == null ? {} : { MIRRORD_EXTERNAL_HASH_URL = var.external_hash_url },
    length(var.formulae) == 0 ? {} : { MIRRORD_FORMULAE = join(",", var.formulae) },
    length(var.fallback_urls) == 0 ? {} : { MIRRORD_FALLBACK_URLS = join(",", var.fallback_urls) },
    !var.prune_after_sync ? {} : {
      MIRRORD_PRUNE_AFTER_SYNC    = "true"
      MIRRORD_PRUNE_KEEP_VERSIONS = tostring(var.prune_keep_versions)
      MIRRORD_PRUNE_KEEP_DAYS     = tostring(var.prune_keep_days)
    },
    var.brew_mirror ? { MIRRORD_MIRROR_URL = module.cdn[0].url } : {},
  )
}

module "s3" {
  source = "./modules/s3"

  bucket_name             = var.bucket_name
  kms_key_arn             = var.kms_key_arn
  noncurrent_version_days = var.noncurrent_version_days
  tags                    = local.tags

  cloudfront_enabled          = var.brew_mirror
  cloudfront_distribution_arn = one(module.cdn[*].distribution_arn)
}

module "cdn" {
  source = "./modules/cdn"
  count  = var.brew_mirror ? 1 : 0

  name                        = local.name
  bucket_regional_domain_name = module.s3.bucket_regional_domain_name
  price_class                 = var.cloudfront_price_class
  aliases                     = var.mirror_domain == null ? [] : [var.mirror_domain]
  acm_certificate_arn         = var.mirror_certificate_arn
  route53_zone_id             = var.mirror_route53_zone_id
  token_sha256                = var.mirror_token_sha256
  kms_key_arn                 = var.kms_key_arn
  daily_gb_alarm              = var.mirror_daily_gb_alarm
  alarm_topic_arn             = module.notifications.topic_arn
  tags                        = local.tags
}

module "sqs" {
  source = "./modules/sqs"

  name              = "${local.name}-jobs"
  heartbeat_seconds = local.heartbeat_seconds
  max_receive_count = local.max_receive_count
  kms_key_arn       = var.kms_key_arn
  tags              = local.tags
}

module "notifications" {
  source = "./modules/notifications"

  name               = local.name
  alarm_emails       = var.alarm_emails
  kms_key_arn        = var.kms_key_arn
  monthly_budget_usd = var.monthly_budget_usd
  tags               = local.tags
}

module "iam" {
  source = "./modules/iam"

  name                  = local.name
  bucket_arn            = module.s3.bucket_arn
  queue_arn             = module.sqs.queue_arn
  dlq_arn               = module.sqs.dlq_arn
  slack_secret_arn      = module.notifications.slack_secret_arn
  alarm_topic_arn       = module.notifications.topic_arn
  enqueue_function_name = local.enqueue_function_name
  sync_function_name    = local.sync_function_name
  alarm_function_name   = local.alarm_function_name
  task_log_group_name   = local.daemon_log_group_name
  image_uri             = var.image_uri
  kms_key_arn           = var.kms_key_arn
  external_hash_url     = var.external_hash_url
  prune                 = var.prune_after_sync
  tags                  = local.tags
}

module "lambda" {
  source = "./modules/lambda"

  enqueue_function_name           = local.enqueue_function_name
  sync_function_name              = local.sync_function_name
  package_path                    = var.lambda_package_path
  enqueue_role_arn                = module.iam.enqueue_role_arn
  sync_role_arn                   = module.iam.sync_role_arn
  environment                     = local.mirrord_environment
  lambda_margin_seconds           = 120
  sync_memory_size                = var.sync_memory_size
  sync_dead_letter_arn            = module.sqs.dlq_arn
  enqueue_failure_destination_arn = module.notifications.topic_arn
  alarm_function_name             = local.alarm_function_name
  alarm_role_arn                  = module.iam.alarm_role_arn
  alarm_topic_arn                 = module.notifications.topic_arn
  log_retention_days              = var.log_retention_days
  kms_key_arn                     = var.kms_key_arn
  tags                            = local.tags
}

module "network" {
  source = "./modules/network"

  name            = local.name
  use_nat_gateway = var.use_nat_gateway
  tags            = local.tags
}

module "ecs" {
  source = "./modules/ecs"

  name               = local.daemon_name
  image_uri          = var.image_uri
  cpu                = var.task_cpu
  memory             = var.task_memory
  environment        = local.mirrord_environment
  heartbeat_seconds  = local.heartbeat_seconds
  stop_timeout       = local.stop_timeout
  stop_grace         = local.stop_grace
  task_role_arn      = module.iam.task_role_arn
  execution_role_arn = module.iam.execution_role_arn
  subnet_ids         = module.network.task_subnet_ids
  security_group_ids = [module.network.security_group_id]
  assign_public_ip   = module.network.assign_public_ip
  log_retention_days = var.log_retention_days
  kms_key_arn        = var.kms_key_arn
  queue_name         = module.sqs.queue_name
  enable_autoscaling = var.enable_autoscaling
  max_tasks          = var.max_tasks
  tags               = local.tags
}

module "eventbridge" {
  source = "./modules/eventbridge"

  name                = "${local.name}-schedule"
  schedule_expression = var.schedule_expression
  enabled             = var.schedule_enabled
  function_arn        = module.lambda.enqueue_function_arn
  function_name       = module.lambda.enqueue_function_name
  kms_key_arn         = var.kms_key_arn
  tags                = local.tags
}

module "monitoring" {
  source = "./modules/monitoring"
  count  = var.enable_monitoring ? 1 : 0

  name                  = local.name
  topic_arn             = module.notifications.topic_arn
  queue_name            = module.sqs.queue_name
  dlq_name              = module.sqs.dlq_name
  schedule_dlq_name     = module.eventbridge.dlq_name
  enqueue_function_name = module.lambda.enqueue_function_name
  sync_function_name    = module.lambda.sync_function_name
  cluster_name          = module.ecs.cluster_name
  service_name          = module.ecs.service_name
  log_group_names = {
    enqueue = module.lambda.log_group_names.enqueue
    sync    = module.lambda.log_group_names.sync
    daemon  = module.ecs.log_group_name
  }
  tags = local.tags
}

# An image in another account's ECR needs that repository's policy to admit this
# account's execution role; config.yaml derives image_uri in account_id's own ECR.
check "image_in_this_account" {
  assert {
    condition     = !can(regex("^[0-9]{12}\\.dkr\\.ecr\\.", var.image_uri)) || startswith(var.image_uri, "${var.account_id}.")
    error_message = "image_uri ${var.image_uri} is in another account's ECR than account_id ${var.account_id}: the task's execution role can pull it only if that repository's policy allows it."
  }
}
