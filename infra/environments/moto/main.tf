# mirrord against a moto server (tests/test_infra.py applies it). Every service the
# module uses is pointed at var.moto_endpoint; credentials are moto's dummies.
#
#   terraform apply -var moto_endpoint=http://127.0.0.1:5000 -var environment=moto \
#     -var aws_region=us-east-1 -var bucket_name=… -var image_uri=… \
#     -var lambda_package_path=…zip -var enable_autoscaling=false \
#     -var account_id=123456789012   # moto's default account

variable "moto_endpoint" {
  description = "URL of the moto server, e.g. http://127.0.0.1:5000."
  type        = string

  validation {
    condition     = can(regex("^https?://[^/\\s]+/?$", var.moto_endpoint))
    error_message = "moto_endpoint: http(s)://host:port."
  }
}

provider "aws" {
  region                      = var.aws_region
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  # moto answers sts:GetCallerIdentity with its account (123456789012 by default).
  allowed_account_ids     = [var.account_id]
  skip_metadata_api_check = true
  skip_region_validation  = true
  s3_use_path_style       = true

  endpoints {
    appautoscaling = var.moto_endpoint
    cloudwatch     = var.moto_endpoint
    ec2            = var.moto_endpoint
    ecs            = var.moto_endpoint
    events         = var.moto_endpoint
    iam            = var.moto_endpoint
    kms            = var.moto_endpoint
    lambda         = var.moto_endpoint
    logs           = var.moto_endpoint
    s3             = var.moto_endpoint
    secretsmanager = var.moto_endpoint
    sns            = var.moto_endpoint
    sqs            = var.moto_endpoint
    sts            = var.moto_endpoint
  }
}

module "mirrord" {
  source = "../.."

  name_prefix             = var.name_prefix
  environment             = var.environment
  aws_region              = var.aws_region
  bucket_name             = var.bucket_name
  schedule_expression     = var.schedule_expression
  schedule_enabled        = var.schedule_enabled
  platforms               = var.platforms
  concurrency             = var.concurrency
  part_size_mib           = var.part_size_mib
  size_threshold_gb       = var.size_threshold_gb
  task_cpu                = var.task_cpu
  task_memory             = var.task_memory
  sync_memory_size        = var.sync_memory_size
  image_uri               = var.image_uri
  lambda_package_path     = var.lambda_package_path
  log_retention_days      = var.log_retention_days
  alarm_emails            = var.alarm_emails
  kms_key_arn             = var.kms_key_arn
  use_nat_gateway         = var.use_nat_gateway
  enable_autoscaling      = var.enable_autoscaling
  max_tasks               = var.max_tasks
  shard_gb                = var.shard_gb
  enable_monitoring       = var.enable_monitoring
  noncurrent_version_days = var.noncurrent_version_days
  external_hash_url       = var.external_hash_url
  brew_mirror             = var.brew_mirror
  cloudfront_price_class  = var.cloudfront_price_class
  account_id              = var.account_id
  monthly_budget_usd      = var.monthly_budget_usd
  mirror_domain           = var.mirror_domain
  mirror_certificate_arn  = var.mirror_certificate_arn
  mirror_route53_zone_id  = var.mirror_route53_zone_id
  mirror_token_sha256     = var.mirror_token_sha256
  mirror_daily_gb_alarm   = var.mirror_daily_gb_alarm
  formulae                = var.formulae
  fallback_urls           = var.fallback_urls
  prune_after_sync        = var.prune_after_sync
  prune_keep_versions     = var.prune_keep_versions
  prune_keep_days         = var.prune_keep_days
}
