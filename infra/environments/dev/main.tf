# One deployment of mirrord. The variables are the root module's (variables.tf is a
# symlink to ../../variables.tf); their values come from terraform.tfvars.json in this
# folder, which `mirrord config render` writes.
#
#   terraform init -backend-config=backend.hcl
#   terraform apply

provider "aws" {
  region = var.aws_region

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
  enable_monitoring       = var.enable_monitoring
  noncurrent_version_days = var.noncurrent_version_days
  external_hash_url       = var.external_hash_url
  brew_mirror             = var.brew_mirror
  cloudfront_price_class  = var.cloudfront_price_class
  mirror_domain           = var.mirror_domain
  mirror_certificate_arn  = var.mirror_certificate_arn
  mirror_route53_zone_id  = var.mirror_route53_zone_id
  mirror_token_sha256     = var.mirror_token_sha256
  mirror_daily_gb_alarm   = var.mirror_daily_gb_alarm
}
