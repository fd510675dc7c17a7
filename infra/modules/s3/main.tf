# The mirror's bucket: bottles under YYYY-MM-DD/, bottles_hash.json, status.json and
# sync.lock at the top. Versioned so a bad hash-file write can be rolled back; the
# bottles themselves are never expired by age.

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18: server access logs need a second bucket and grow with every brew install; CloudTrail data events are the audit trail where one is needed.
  #checkov:skip=CKV_AWS_144: cross-region replication doubles storage for a cache whose source (GHCR) stays the system of record; a lost bucket is refilled by the next sync.
  #checkov:skip=CKV2_AWS_62: nothing consumes S3 events; the job's end is reported by status.json, EMF metrics and Slack.
  #checkov:skip=CKV_AWS_145: SSE-KMS is opt-in through kms_key_arn; the default SSE-S3 encrypts at rest without a key to pay for and manage.
  bucket        = var.bucket_name
  force_destroy = var.force_destroy

  tags = var.tags
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  # A task killed mid-upload cannot abort its own multipart upload: S3 does it.
  # Replaced and deleted versions (bottles_hash.json and status.json every job, a bottle
  # deleted by mistake) are kept for noncurrent_version_days. Current objects never expire.
  rule {
    id     = "abort-multipart-and-expire-old-versions"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }

    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_days
    }
  }

  # The lock is rewritten every heartbeat while a job runs: its history is noise.
  rule {
    id     = "expire-old-lock-versions"
    status = "Enabled"

    filter {
      prefix = var.lock_key
    }

    noncurrent_version_expiration {
      noncurrent_days = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

data "aws_iam_policy_document" "this" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.this.arn,
      "${aws_s3_bucket.this.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

# The CloudFront distribution (modules/cdn), and only it, reads through OAC, and only
# what brew asks for: the keys under var.cloudfront_prefixes (v2/ and api/). No
# ListBucket, so nothing can be listed, and status.json, sync.lock, bottles_hash.json
# and the dated folders stay private. S3 answers 403 for those, and for a missing key
# too (without ListBucket it does not say whether a key exists): brew fails on either.
data "aws_partition" "current" {}

locals {
  # The bucket's ARN from its name: known at plan time, so a plan shows the grant.
  bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${var.bucket_name}"
}

data "aws_iam_policy_document" "cloudfront" {
  source_policy_documents = [data.aws_iam_policy_document.this.json]

  dynamic "statement" {
    for_each = var.cloudfront_enabled ? [1] : []
    content {
      sid       = "CloudFrontReadsThroughOAC"
      effect    = "Allow"
      actions   = ["s3:GetObject"]
      resources = [for prefix in var.cloudfront_prefixes : "${local.bucket_arn}/${prefix}*"]

      principals {
        type        = "Service"
        identifiers = ["cloudfront.amazonaws.com"]
      }

      condition {
        test     = "StringEquals"
        variable = "AWS:SourceArn"
        values   = [var.cloudfront_distribution_arn]
      }
    }
  }
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id
  policy = data.aws_iam_policy_document.cloudfront.json

  # S3 rejects a policy while the public access block is being applied.
  depends_on = [aws_s3_bucket_public_access_block.this]
}
