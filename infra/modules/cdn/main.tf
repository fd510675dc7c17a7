# CloudFront in front of the private mirror bucket: what users set as
# HOMEBREW_ARTIFACT_DOMAIN (https://<domain>) and HOMEBREW_API_DOMAIN (https://<domain>/api).
#
# Origin Access Control signs every origin request (SigV4), so the bucket stays private;
# no origin request policy is attached, so no viewer header (Authorization included)
# reaches S3. Three cache policies, none keyed on headers, cookies or query strings:
#   v2/*/blobs/*      immutable (the key is the content's sha256): a year
#   v2/*/manifests/*  an index can gain a tag under the same ref: minutes
#   api/*             replaced after every clean sync: minutes
#   everything else   as manifests; the bucket policy (modules/s3) lets the OAC read
#                     only v2/* and api/*, so S3 refuses the rest (status.json,
#                     sync.lock, bottles_hash.json, dated folders, GET / listings) with
#                     a 403 (AccessDenied), as it does a missing key without ListBucket.
#
# Optional, each off by default:
#   aliases + acm_certificate_arn (+ route53_zone_id)  a custom domain (sni-only, TLSv1.2_2021)
#                                                      and its alias A/AAAA records
#   token_sha256                                       readers must present a token: a
#                                                      CloudFront Function (token_check.js)
#                                                      on viewer request, on every behaviour
#   daily_gb_alarm + alarm_topic_arn                   BytesDownloaded over a day → the topic

resource "aws_cloudfront_origin_access_control" "this" {
  name                              = var.name
  description                       = "mirrord: CloudFront reads the private mirror bucket"
  origin_access_control_origin_type = "s3"
  signing_behavior                  = "always"
  signing_protocol                  = "sigv4"
}

resource "aws_cloudfront_cache_policy" "immutable" {
  name        = "${var.name}-blobs"
  comment     = "content-addressed blobs: cache a year"
  min_ttl     = 86400
  default_ttl = 31536000
  max_ttl     = 31536000

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_brotli = false
    enable_accept_encoding_gzip   = false

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_cache_policy" "short" {
  name        = "${var.name}-short"
  comment     = "image indexes and API files: replaced in place, cache minutes"
  min_ttl     = 0
  default_ttl = var.short_ttl_seconds
  max_ttl     = var.short_ttl_seconds

  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_brotli = true
    enable_accept_encoding_gzip   = true

    cookies_config {
      cookie_behavior = "none"
    }
    headers_config {
      header_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "none"
    }
  }
}

resource "aws_cloudfront_distribution" "this" {
  #checkov:skip=CKV_AWS_68: a WAF web ACL costs 5 USD a month plus 1 USD a rule and 0.60 USD per million requests, and needs a us-east-1 provider; readers are restricted instead by token_sha256 (a CloudFront Function, 0.10 USD per million requests), see infra/README.md.
  #checkov:skip=CKV2_AWS_47: no WAF (see CKV_AWS_68), so no Log4j rule set either; nothing behind this distribution runs Java.
  #checkov:skip=CKV_AWS_86: standard logs need a log bucket written on every brew install; CloudFront's own request metrics show use and errors.
  #checkov:skip=CKV_AWS_174: the default *.cloudfront.net certificate fixes the TLS policy (TLSv1); with a custom domain (acm_certificate_arn) the policy is TLSv1.2_2021.
  #checkov:skip=CKV2_AWS_42: the default certificate is used unless acm_certificate_arn is given (a custom domain is optional).
  #checkov:skip=CKV_AWS_310: a single origin by design: the mirror bucket is the copy users fall back to; GHCR itself is the failover brew already has.
  #checkov:skip=CKV_AWS_305: there is no root document: brew asks only for v2/… and api/… paths.
  #checkov:skip=CKV_AWS_374: a mirror for a team's machines wherever they are; restrict with geo_restriction if needed.
  #checkov:skip=CKV2_AWS_32: brew (curl) is the only client: browser security headers change nothing for it.
  enabled         = true
  comment         = "mirrord: Homebrew mirror (${var.name})"
  is_ipv6_enabled = true
  price_class     = var.price_class
  aliases         = var.aliases
  http_version    = "http2and3"

  origin {
    origin_id                = "bucket"
    domain_name              = var.bucket_regional_domain_name
    origin_access_control_id = aws_cloudfront_origin_access_control.this.id
  }

  default_cache_behavior {
    target_origin_id       = "bucket"
    viewer_protocol_policy = "https-only"
    allowed_methods        = ["GET", "HEAD"]
    cached_methods         = ["GET", "HEAD"]
    cache_policy_id        = aws_cloudfront_cache_policy.short.id
    compress               = true

    dynamic "function_association" {
      for_each = aws_cloudfront_function.token_check[*].arn
      content {
        event_type   = "viewer-request"
        function_arn = function_association.value
      }
    }
  }

  ordered_cache_behavior {
    path_pattern           = "v2/*/blobs/*"
    target_origin_id       = "bucket"
    viewer_protocol_policy = "https-only"
    allowed_methods        = ["GET", "HEAD"]
    cached_methods         = ["GET", "HEAD"]
    cache_policy_id        = aws_cloudfront_cache_policy.immutable.id
    compress               = false # bottles are gzip already

    dynamic "function_association" {
      for_each = aws_cloudfront_function.token_check[*].arn
      content {
        event_type   = "viewer-request"
        function_arn = function_association.value
      }
    }
  }

  ordered_cache_behavior {
    path_pattern           = "api/*"
    target_origin_id       = "bucket"
    viewer_protocol_policy = "https-only"
    allowed_methods        = ["GET", "HEAD"]
    cached_methods         = ["GET", "HEAD"]
    cache_policy_id        = aws_cloudfront_cache_policy.short.id
    compress               = true

    dynamic "function_association" {
      for_each = aws_cloudfront_function.token_check[*].arn
      content {
        event_type   = "viewer-request"
        function_arn = function_association.value
      }
    }
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = var.acm_certificate_arn == null
    acm_certificate_arn            = var.acm_certificate_arn
    ssl_support_method             = var.acm_certificate_arn == null ? null : "sni-only"
    minimum_protocol_version       = var.acm_certificate_arn == null ? "TLSv1" : "TLSv1.2_2021"
  }

  tags = var.tags

  lifecycle {
    # The root module's mirror_domain validation checks this too, but only when the
    # domain is set (Terraform validates set variables only, and two validations may
    # not refer to each other): here a certificate without a domain is refused as well.
    precondition {
      condition     = (length(var.aliases) == 0) == (var.acm_certificate_arn == null)
      error_message = "mirror_domain and mirror_certificate_arn go together: both set or both null."
    }
  }
}

# Readers must present a token (token_sha256 not empty): see token_check.js. The code
# holds the tokens' SHA-256 hashes only, so neither a plan, the state nor
# DescribeFunction shows a token; a token is 32 random bytes, so its hash cannot be
# reversed by guessing.
resource "aws_cloudfront_function" "token_check" {
  count = length(var.token_sha256) > 0 ? 1 : 0

  name    = "${var.name}-token-check"
  runtime = "cloudfront-js-2.0"
  comment = "mirrord: 403 unless the request carries a mirror token"
  publish = true
  code    = templatefile("${path.module}/token_check.js", { token_hashes = jsonencode(var.token_sha256) })
}

# The custom domain's alias records, when the zone is managed in Route 53 here.
resource "aws_route53_record" "alias" {
  for_each = var.route53_zone_id == null ? {} : {
    for pair in setproduct(var.aliases, ["A", "AAAA"]) : "${pair[0]} ${pair[1]}" => { name = pair[0], type = pair[1] }
  }

  zone_id = var.route53_zone_id
  name    = each.value.name
  type    = each.value.type

  alias {
    name                   = aws_cloudfront_distribution.this.domain_name
    zone_id                = aws_cloudfront_distribution.this.hosted_zone_id
    evaluate_target_health = false
  }
}

# Bytes served in a day over daily_gb_alarm (GB = 2^30 bytes, as AWS bills them).
# CloudFront publishes its metrics in us-east-1 only, and an alarm notifies a topic of
# its own region: this alarm and alarm_topic_arn must be in us-east-1 (the root module
# refuses mirror_daily_gb_alarm elsewhere).
resource "aws_cloudwatch_metric_alarm" "bytes_downloaded" {
  count = var.daily_gb_alarm == null ? 0 : 1

  alarm_name          = "${var.name}-cdn-bytes-downloaded"
  alarm_description   = "CloudFront served more than ${var.daily_gb_alarm} GB in a day (about ${format("%.2f", var.daily_gb_alarm * 0.085)} USD at 0.085 USD/GB): check who pulls from the mirror."
  namespace           = "AWS/CloudFront"
  metric_name         = "BytesDownloaded"
  statistic           = "Sum"
  period              = 86400
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.daily_gb_alarm * 1073741824
  treat_missing_data  = "notBreaching"
  alarm_actions       = [var.alarm_topic_arn]
  ok_actions          = [var.alarm_topic_arn]

  dimensions = {
    DistributionId = aws_cloudfront_distribution.this.id
    Region         = "Global"
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = var.alarm_topic_arn != null
      error_message = "daily_gb_alarm needs alarm_topic_arn."
    }
  }
}
