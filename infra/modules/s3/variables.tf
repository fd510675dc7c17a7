variable "bucket_name" {
  description = "Name of the mirror's bucket (MIRRORD_BUCKET)."
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

variable "kms_key_arn" {
  description = "KMS key for default encryption (SSE-KMS with an S3 bucket key). null: S3-managed keys (SSE-S3)."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:\\d{12}:key/[A-Za-z0-9-]+$", var.kms_key_arn))
    error_message = "kms_key_arn: null or a KMS key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)."
  }
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted version is kept (how far back bottles_hash.json, status.json and a mistakenly deleted bottle can be restored). Current bottles never expire."
  type        = number
  default     = 30

  validation {
    condition     = var.noncurrent_version_days >= 1 && floor(var.noncurrent_version_days) == var.noncurrent_version_days
    error_message = "noncurrent_version_days: a whole number of days, at least 1."
  }
}

variable "lock_key" {
  description = "Key of the bucket lock, rewritten every heartbeat while a job runs; its old versions are kept one day only."
  type        = string
  default     = "sync.lock"
}

variable "force_destroy" {
  description = "Let terraform destroy delete a non-empty bucket. Leave false for a real mirror."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}

variable "cloudfront_enabled" {
  description = "Whether a CloudFront distribution (modules/cdn) reads the bucket through OAC."
  type        = bool
  default     = false
}

variable "cloudfront_distribution_arn" {
  description = "That distribution's ARN (used when cloudfront_enabled)."
  type        = string
  default     = null
}

variable "cloudfront_prefixes" {
  description = "The only key prefixes that distribution may read: brew 6's registry (v2/) and API (api/) paths."
  type        = list(string)
  default     = ["v2/", "api/"]

  validation {
    condition     = length(var.cloudfront_prefixes) > 0 && alltrue([for p in var.cloudfront_prefixes : can(regex("^[A-Za-z0-9._-]+/$", p))])
    error_message = "cloudfront_prefixes: top-level folders, each ending in /, e.g. v2/."
  }
}
