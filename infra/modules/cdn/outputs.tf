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

output "function_arn" {
  description = "The token-checking CloudFront Function; null when readers are not restricted."
  value       = one(aws_cloudfront_function.token_check[*].arn)
}

output "bytes_alarm_name" {
  description = "The daily bytes-served alarm; null without daily_gb_alarm."
  value       = one(aws_cloudwatch_metric_alarm.bytes_downloaded[*].alarm_name)
}

# With SSE-KMS, S3 decrypts for the reader, and through OAC the reader is CloudFront:
# the team's key policy (not managed here) must let cloudfront.amazonaws.com Decrypt,
# for this distribution only. Add these statements to it (terraform output -json).
output "kms_key_policy_statements" {
  description = "Statements to add to the policy of kms_key_arn so CloudFront can read SSE-KMS objects; empty without kms_key_arn."
  value = [
    for key in compact([var.kms_key_arn]) : {
      Sid       = "AllowCloudFrontReadThroughOAC"
      Effect    = "Allow"
      Principal = { Service = "cloudfront.amazonaws.com" }
      Action    = "kms:Decrypt"
      Resource  = "*"
      Condition = { StringEquals = { "AWS:SourceArn" = aws_cloudfront_distribution.this.arn } }
    }
  ]
}
