output "distribution_arn" {
  description = "ARN of the distribution: the bucket policy lets only it read (AWS:SourceArn)."
  value       = aws_cloudfront_distribution.this.arn
}

output "domain_name" {
  description = "The distribution's domain, e.g. d111111abcdef8.cloudfront.net."
  value       = aws_cloudfront_distribution.this.domain_name
}

output "url" {
  description = "HOMEBREW_ARTIFACT_DOMAIN (and, with /api, HOMEBREW_API_DOMAIN)."
  value       = "https://${length(var.aliases) > 0 ? var.aliases[0] : aws_cloudfront_distribution.this.domain_name}"
}
