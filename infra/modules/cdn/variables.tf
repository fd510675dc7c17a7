variable "name" {
  description = "Name of the origin access control and prefix of the cache policies."
  type        = string
}

variable "bucket_regional_domain_name" {
  description = "The mirror bucket's regional domain name (<bucket>.s3.<region>.amazonaws.com)."
  type        = string
}

variable "price_class" {
  description = "CloudFront price class: PriceClass_100 (North America, Europe), PriceClass_200, PriceClass_All."
  type        = string
  default     = "PriceClass_100"

  validation {
    condition     = contains(["PriceClass_100", "PriceClass_200", "PriceClass_All"], var.price_class)
    error_message = "price_class: PriceClass_100, PriceClass_200 or PriceClass_All."
  }
}

variable "short_ttl_seconds" {
  description = "Longest time an edge serves an image index or API file before asking the bucket again."
  type        = number
  default     = 300

  validation {
    condition     = var.short_ttl_seconds >= 0 && var.short_ttl_seconds <= 86400
    error_message = "short_ttl_seconds: 0 to 86400."
  }
}

variable "aliases" {
  description = "Custom domain names (need acm_certificate_arn, in us-east-1)."
  type        = list(string)
  default     = []
}

variable "acm_certificate_arn" {
  description = "ACM certificate (us-east-1) for aliases; null: the *.cloudfront.net certificate."
  type        = string
  default     = null
}

variable "route53_zone_id" {
  description = "Route 53 hosted zone of the aliases: alias A and AAAA records to the distribution. null: DNS is managed elsewhere (a CNAME to domain_name)."
  type        = string
  default     = null
}

variable "token_sha256" {
  description = "SHA-256 (hex) of each token readers may present (Authorization: Bearer <token>, or X-Mirror-Token: <token>); empty: anyone with the URL can read."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for h in var.token_sha256 : can(regex("^[0-9a-f]{64}$", h))])
    error_message = "token_sha256: lower-case hex SHA-256 digests (64 characters)."
  }
}

variable "kms_key_arn" {
  description = "The bucket's customer-managed key, if any: kms_key_policy_statements then says what its key policy must add for CloudFront."
  type        = string
  default     = null
}

variable "daily_gb_alarm" {
  description = "Alarm when the distribution serves more than this many GB (2^30 bytes) in a day; null: no alarm."
  type        = number
  default     = null

  validation {
    condition     = var.daily_gb_alarm == null || try(var.daily_gb_alarm > 0, false)
    error_message = "daily_gb_alarm: null or a positive number of GB."
  }
}

variable "alarm_topic_arn" {
  description = "SNS topic the bytes alarm notifies (in us-east-1, as the alarm)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
