# One deployment of mirrord, shared by every environment: the other folders link this
# file, outputs.tf, versions.tf and .terraform.lock.hcl here (`mirrord config render
# --env NAME` makes the links). The variables are the root module's (variables.tf is a
# symlink to ../../variables.tf); their values come from terraform.tfvars.json in the
# folder, and the state's place from backend.hcl, both rendered from config.yaml.
#
#   terraform init -backend-config=backend.hcl
#   terraform apply

provider "aws" {
  region = var.aws_region

  # Credentials for any other account fail here, before a plan or a change.
  allowed_account_ids = [var.account_id]

  default_tags {
    tags = {
      Project     = "mirrord"
      Environment = var.environment
    }
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
