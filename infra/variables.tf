# The root module's variables. `mirrord config render` writes exactly these keys to
# terraform.tfvars.json, and infra/environments/*/variables.tf are symlinks to this file.

variable "name_prefix" {
  description = "First part of every resource name: <name_prefix>-<environment>-…"
  type        = string
  default     = "mirrord"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.name_prefix))
    error_message = "name_prefix: 2-21 lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "environment" {
  description = "The environment's name: its folder under infra/environments/ (dev, staging, prod, any name config.yaml gives, or moto, the local emulator)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,15}$", var.environment))
    error_message = "environment: 2-16 lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "aws_region" {
  description = "AWS region of the deployment, e.g. us-east-1."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.aws_region))
    error_message = "aws_region: a region code such as us-east-1 or eu-west-3."
  }
}

variable "bucket_name" {
  description = "The mirror's S3 bucket (MIRRORD_BUCKET); created by this configuration."
  type        = string

  validation {
    condition = (
      can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) &&
      !strcontains(var.bucket_name, "..") &&
      !can(regex("^\\d+\\.\\d+\\.\\d+\\.\\d+$", var.bucket_name)) &&
      !startswith(var.bucket_name, "xn--") &&
      !endswith(var.bucket_name, "-s3alias")
    )
    error_message = "bucket_name: 3-63 lower-case letters, digits, dots and dashes, starting and ending with a letter or digit, not an IP address (S3 bucket naming rules)."
  }
}

variable "schedule_expression" {
  description = "When the enqueue Lambda runs (EventBridge cron() or rate(), UTC)."
  type        = string
  default     = "cron(0 3 ? * SUN *)"

  validation {
    condition     = can(regex("^(cron\\([^)]+\\)|rate\\([1-9][0-9]* (minute|minutes|hour|hours|day|days)\\))$", var.schedule_expression))
    error_message = "schedule_expression: cron(...) or rate(N unit), e.g. cron(0 3 ? * SUN *)."
  }
}

variable "schedule_enabled" {
  description = "Whether the schedule fires. false pauses the weekly sync (the rule stays, DISABLED); manual runs still work."
  type        = bool
  default     = true
}

variable "platforms" {
  description = "MIRRORD_PLATFORMS: bottle tags to mirror, comma-separated, or auto (the three newest macOS releases)."
  type        = string
  default     = "auto"

  validation {
    condition     = can(regex("^\\s*((?i)auto|[a-z0-9_]+(\\s*,\\s*[a-z0-9_]+)*)\\s*$", var.platforms))
    error_message = "platforms: auto, or bottle tags separated by commas (arm64_sequoia,sequoia)."
  }
}

variable "concurrency" {
  description = "MIRRORD_CONCURRENCY: bottles in flight."
  type        = number
  default     = 16

  validation {
    condition     = var.concurrency >= 1 && var.concurrency <= 256 && floor(var.concurrency) == var.concurrency
    error_message = "concurrency: a whole number from 1 to 256."
  }
}

variable "part_size_mib" {
  description = "MIRRORD_PART_SIZE in MiB: the multipart part size."
  type        = number
  default     = 16

  validation {
    condition     = var.part_size_mib >= 5 && var.part_size_mib <= 5120 && floor(var.part_size_mib) == var.part_size_mib
    error_message = "part_size_mib: a whole number from 5 to 5120 (S3's 5 MiB-5 GiB parts)."
  }
}

variable "size_threshold_gb" {
  description = "MIRRORD_SIZE_THRESHOLD_GB: estimated jobs below it run in the sync Lambda, larger ones on Fargate."
  type        = number
  default     = 20

  validation {
    condition     = var.size_threshold_gb >= 0 && var.size_threshold_gb <= 100000
    error_message = "size_threshold_gb: 0 (always Fargate) to 100000."
  }
}

variable "task_cpu" {
  description = "CPU units of the daemon's Fargate task (1024 = 1 vCPU)."
  type        = number
  default     = 2048

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.task_cpu)
    error_message = "task_cpu: one of 256, 512, 1024, 2048, 4096, 8192, 16384."
  }
}

variable "task_memory" {
  description = "Memory of the daemon's Fargate task in MiB (a combination Fargate offers for task_cpu)."
  type        = number
  default     = 8192

  validation {
    condition     = var.task_memory >= 512 && var.task_memory <= 122880 && var.task_memory % 512 == 0
    error_message = "task_memory: 512 to 122880 MiB, in steps of 512."
  }

  validation {
    condition     = var.task_memory >= var.concurrency * 3 * var.part_size_mib + 512
    error_message = "task_memory: a sync holds up to concurrency x 3 x part_size_mib MiB; leave 512 MiB on top of that."
  }
}

variable "sync_memory_size" {
  description = "Memory of the sync Lambda in MB. A sync holds up to concurrency x 3 x part_size_mib MiB there as in the daemon's task; CPU and network scale with it too."
  type        = number
  default     = 2048

  validation {
    condition     = var.sync_memory_size >= 512 && var.sync_memory_size <= 10240 && floor(var.sync_memory_size) == var.sync_memory_size
    error_message = "sync_memory_size: a whole number from 512 to 10240 MB (Lambda's range)."
  }

  validation {
    condition     = var.sync_memory_size >= var.concurrency * 3 * var.part_size_mib + 512
    error_message = "sync_memory_size: the sync Lambda holds up to concurrency x 3 x part_size_mib MiB, as the daemon's task does; leave 512 MiB on top of that, or lower concurrency."
  }
}

variable "image_uri" {
  description = "The daemon's container image (built from docker/Dockerfile), by tag or digest."
  type        = string

  validation {
    condition     = length(var.image_uri) > 0 && !can(regex("\\s", var.image_uri))
    error_message = "image_uri: a non-empty image reference without spaces."
  }
}

variable "lambda_package_path" {
  description = "Path of the Lambda deployment zip (the mirrord package and its dependencies)."
  type        = string

  validation {
    condition     = endswith(var.lambda_package_path, ".zip")
    error_message = "lambda_package_path: a .zip file."
  }
}

variable "log_retention_days" {
  description = "Retention of the Lambda and daemon log groups, in days."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of CloudWatch Logs' values (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "alarm_emails" {
  description = "E-mail addresses subscribed to the alarm topic (each confirms a subscription mail)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alarm_emails: every entry must be an e-mail address."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key for the bucket, queues, secret, topic, logs and Lambda environment. null: AWS-managed encryption everywhere. The key policy must let CloudWatch Logs, SNS and CloudWatch alarms use it, and with brew_mirror CloudFront (the kms_key_policy_statements output)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:\\d{12}:key/[A-Za-z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn: null or a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "use_nat_gateway" {
  description = "false: tasks in public subnets with a public IP and an egress-only security group (no fixed cost). true: private subnets behind one NAT gateway."
  type        = bool
  default     = false
}

variable "enable_autoscaling" {
  description = "Scale the daemon's service on the job queue (Application Auto Scaling target, two step policies, two queue alarms). Off: the service stays at 0 tasks unless scaled by hand."
  type        = bool
  default     = true
}

variable "max_tasks" {
  description = "Most daemon tasks at once, and so the most shards a job fans out to (MIRRORD_MAX_SHARDS; docs/design.md §12). 1: every job runs on one task, never sharded."
  type        = number
  default     = 1

  validation {
    condition     = var.max_tasks >= 1 && var.max_tasks <= 16 && floor(var.max_tasks) == var.max_tasks
    error_message = "max_tasks: a whole number from 1 to 16."
  }
}

variable "shard_gb" {
  description = "MIRRORD_SHARD_BYTES in GB: a Fargate job estimated over it fans out to ceil(estimate / shard_gb) shards, at most max_tasks. 0: never shard."
  type        = number
  default     = 16

  validation {
    condition     = var.shard_gb >= 0 && var.shard_gb <= 100000 && floor(var.shard_gb) == var.shard_gb
    error_message = "shard_gb: a whole number from 0 (never shard) to 100000."
  }
}

variable "enable_monitoring" {
  description = "Create the alarms (DLQ not empty, sync failed, Lambda errors, no recent sync), their log metric filters and the dashboard."
  type        = bool
  default     = true
}

variable "noncurrent_version_days" {
  description = "Days replaced or deleted object versions are kept in the bucket (the undo window for bottles_hash.json and a deleted bottle)."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_days >= 1 && floor(var.noncurrent_version_days) == var.noncurrent_version_days
    error_message = "noncurrent_version_days: a whole number of days, at least 1."
  }
}

variable "external_hash_url" {
  description = "MIRRORD_EXTERNAL_HASH_URL: another mirror's bottles_hash.json (s3://BUCKET/KEY or https://…) whose bottles are skipped. null: none."
  type        = string
  default     = null

  validation {
    condition     = var.external_hash_url == null || can(regex("^(s3://[a-z0-9][a-z0-9.-]+[a-z0-9]/.+|https://.+)$", var.external_hash_url))
    error_message = "external_hash_url: null, s3://BUCKET/KEY or https://…"
  }
}

variable "brew_mirror" {
  description = "Serve brew 6 from the mirror: MIRRORD_BREW_MIRROR=true in every runtime (each sync also publishes image indexes, blob keys and API files under v2/ and api/, a second copy of every bottle) AND a CloudFront distribution (OAC, HTTPS only) in front of the bucket, whose URL users set as HOMEBREW_ARTIFACT_DOMAIN and, with /api, HOMEBREW_API_DOMAIN. false: bottles under their dated folders only, no CloudFront, half the storage."
  type        = bool
  default     = true
}

variable "cloudfront_price_class" {
  description = "CloudFront price class when brew_mirror: PriceClass_100, PriceClass_200 or PriceClass_All."
  type        = string
  default     = "PriceClass_100"

  validation {
    condition     = contains(["PriceClass_100", "PriceClass_200", "PriceClass_All"], var.cloudfront_price_class)
    error_message = "cloudfront_price_class: PriceClass_100, PriceClass_200 or PriceClass_All."
  }
}

variable "account_id" {
  description = "The AWS account this environment deploys to. The environments' provider allows only it (allowed_account_ids): credentials for another account fail before any change."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.account_id))
    error_message = "account_id: the 12-digit AWS account id, as a string."
  }
}

variable "monthly_budget_usd" {
  description = "Monthly AWS cost budget of the account in USD: 80 % actually spent or 100 % forecast notifies the alarm topic (and so Slack). null: no budget."
  type        = number
  default     = null

  validation {
    condition     = var.monthly_budget_usd == null || try(var.monthly_budget_usd > 0, false)
    error_message = "monthly_budget_usd: a positive amount in USD, or null for no budget."
  }
}

variable "mirror_domain" {
  description = "Custom domain of the CloudFront distribution (e.g. brew.example.com); mirror_url becomes https://<domain>. Needs mirror_certificate_arn. null: the *.cloudfront.net domain."
  type        = string
  default     = null

  validation {
    condition     = var.mirror_domain == null || can(regex("^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]{2,63}$", var.mirror_domain))
    error_message = "mirror_domain: null or a lower-case DNS name such as brew.example.com."
  }

  validation {
    condition     = (var.mirror_domain == null) == (var.mirror_certificate_arn == null)
    error_message = "mirror_domain and mirror_certificate_arn go together: both set or both null."
  }
}

variable "mirror_certificate_arn" {
  description = "ACM certificate covering mirror_domain; CloudFront takes certificates from us-east-1 only. null: no custom domain."
  type        = string
  default     = null

  validation {
    condition     = var.mirror_certificate_arn == null || can(regex("^arn:aws[a-z-]*:acm:us-east-1:\\d{12}:certificate/[A-Za-z0-9-]+$", var.mirror_certificate_arn))
    error_message = "mirror_certificate_arn: null or an ACM certificate ARN in us-east-1 (arn:aws:acm:us-east-1:ACCOUNT:certificate/ID): CloudFront uses no other region's certificates."
  }
}

variable "mirror_route53_zone_id" {
  description = "Route 53 hosted zone of mirror_domain: alias A and AAAA records to the distribution are created in it. null: point the name at the distribution yourself (CNAME)."
  type        = string
  default     = null

  validation {
    condition     = var.mirror_route53_zone_id == null || (can(regex("^Z[A-Z0-9]{1,31}$", var.mirror_route53_zone_id)) && var.mirror_domain != null)
    error_message = "mirror_route53_zone_id: null, or a hosted zone ID (Z…) together with mirror_domain."
  }
}

variable "mirror_token_sha256" {
  description = "SHA-256 (hex) of each token allowed to read from CloudFront (two during a rotation). Clients send the token as HOMEBREW_DOCKER_REGISTRY_TOKEN (v2/) and an X-Mirror-Token curlrc header (api/). Empty: anyone with the URL can read."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for h in var.mirror_token_sha256 : can(regex("^[0-9a-f]{64}$", h))])
    error_message = "mirror_token_sha256: lower-case hex SHA-256 digests of the tokens (64 characters each; printf %s \"$TOKEN\" | sha256sum), never the tokens."
  }
}

variable "mirror_daily_gb_alarm" {
  description = "Alarm (to the alarm topic) when CloudFront serves more than this many GB in a day. null: no alarm. CloudFront's metrics exist in us-east-1 only: needs aws_region = us-east-1."
  type        = number
  default     = null

  validation {
    condition     = var.mirror_daily_gb_alarm == null || try(var.mirror_daily_gb_alarm > 0, false)
    error_message = "mirror_daily_gb_alarm: null or a positive number of GB."
  }

  validation {
    condition     = var.mirror_daily_gb_alarm == null || var.aws_region == "us-east-1"
    error_message = "mirror_daily_gb_alarm: CloudFront publishes BytesDownloaded in us-east-1 only and an alarm notifies a topic of its own region, so the alarm needs aws_region = us-east-1."
  }
}

variable "formulae" {
  description = "MIRRORD_FORMULAE: a subset mirror's roots (config.yaml's brewfile and formulae). Every job naming no formulae, the weekly one included, mirrors these and their runtime dependency closure per target. []: the whole catalog."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for f in var.formulae : can(regex("^[A-Za-z0-9][A-Za-z0-9@+._-]{0,127}$", f))])
    error_message = "formulae: formula names as homebrew/core spells them (e.g. jq, openssl@3)."
  }
}

variable "fallback_urls" {
  description = "MIRRORD_FALLBACK_URLS: other mirrors' flat bottles/ folders (TUNA/USTC layout), asked in order for a bottle GHCR fails after its retries; every byte is still checked against the catalog's sha256. https only. []: none."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for u in var.fallback_urls : can(regex("^https://[^/?#@\\s]+(/[^?#\\s]*)?$", u))])
    error_message = "fallback_urls: https:// URLs of a bottles/ folder, without credentials, query or fragment."
  }
}

variable "prune_after_sync" {
  description = "MIRRORD_PRUNE_AFTER_SYNC: after each clean scheduled sync (the whole catalog, or the subset formulae names), delete superseded bottles (mirrord prune; docs/operations.md). Gives the syncing roles s3:DeleteObject on the bottle prefixes only. Deleted objects stay recoverable for noncurrent_version_days."
  type        = bool
  default     = false
}

variable "prune_keep_versions" {
  description = "MIRRORD_PRUNE_KEEP_VERSIONS: prune keeps this many newest versions of each formula per target."
  type        = number
  default     = 2

  validation {
    condition     = var.prune_keep_versions >= 1 && floor(var.prune_keep_versions) == var.prune_keep_versions
    error_message = "prune_keep_versions: a whole number, at least 1."
  }
}

variable "prune_keep_days" {
  description = "MIRRORD_PRUNE_KEEP_DAYS: prune never deletes a bottle mirrored fewer than this many days ago."
  type        = number
  default     = 30

  validation {
    condition     = var.prune_keep_days >= 0 && var.prune_keep_days <= 3650 && floor(var.prune_keep_days) == var.prune_keep_days
    error_message = "prune_keep_days: a whole number of days, 0..3650."
  }
}
