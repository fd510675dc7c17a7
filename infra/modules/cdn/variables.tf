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

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
