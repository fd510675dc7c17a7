# One-time, per-account set-up for mirrord's deploys (README.md in this folder):
#   - the Terraform state bucket (S3-native locking: no DynamoDB table);
#   - the ECR repository of the daemon's image;
#   - the GitHub Actions OIDC provider, and per environment a deploy role (GitHub
#     environment <env> only) and a read-only plan role (pull requests), with their
#     least-privilege policies (policies.tf).
# Run by an administrator with local state; the deploy workflow never touches it.

provider "aws" {
  region              = var.aws_region
  allowed_account_ids = [var.account_id]

  default_tags {
    tags = merge({ Project = "mirrord", ManagedBy = "terraform", Component = "bootstrap" }, var.tags)
  }
}

data "aws_partition" "current" {}

locals {
  partition = data.aws_partition.current.partition
  account   = var.account_id
  region    = var.aws_region

  # The key every environment's backend uses (deploy.yml: key=mirrord/<env>/terraform.tfstate).
  state_keys = { for env in keys(var.environments) : env => "mirrord/${env}/terraform.tfstate" }
}

# --- Terraform state ---------------------------------------------------------------

resource "aws_s3_bucket" "state" {
  #checkov:skip=CKV_AWS_144: cross-region replication of a few small state files is not worth a second bucket; versioning keeps every earlier state.
  #checkov:skip=CKV_AWS_18: access logging needs a log bucket of its own; CloudTrail records who read or wrote the state.
  #checkov:skip=CKV2_AWS_62: nothing reacts to state writes; event notifications would have no consumer.
  #checkov:skip=CKV_AWS_145: SSE-S3 encrypts at rest without a key to pay for and manage; access is governed by IAM and the bucket policy.
  bucket = var.state_bucket_name # never force_destroy: it holds every environment's state
}

resource "aws_s3_bucket_ownership_controls" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "state" {
  bucket                  = aws_s3_bucket.state.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "state" {
  bucket = aws_s3_bucket.state.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "state" {
  bucket = aws_s3_bucket.state.id

  # Every apply overwrites a state file, every run writes and deletes a lock file
  # (<key>.tflock): earlier versions are kept this long, then the delete markers go.
  rule {
    id     = "expire-noncurrent-state"
    status = "Enabled"
    filter {}

    noncurrent_version_expiration {
      noncurrent_days = var.state_noncurrent_version_days
    }

    expiration {
      expired_object_delete_marker = true
    }

    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }

  depends_on = [aws_s3_bucket_versioning.state]
}

data "aws_iam_policy_document" "state_bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.state.arn,
      "${aws_s3_bucket.state.arn}/*",
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

resource "aws_s3_bucket_policy" "state" {
  bucket = aws_s3_bucket.state.id
  policy = data.aws_iam_policy_document.state_bucket.json

  depends_on = [aws_s3_bucket_public_access_block.state]
}

# --- the daemon's image ------------------------------------------------------------

resource "aws_ecr_repository" "this" {
  #checkov:skip=CKV_AWS_136: AES256 (ECR's default) encrypts at rest; a CMK would add cost and a key policy for an image of public code.
  name                 = var.ecr_repository_name
  image_tag_mutability = "IMMUTABLE" # a tag is one build, forever: what was tested is what runs

  image_scanning_configuration {
    scan_on_push = true
  }

  encryption_configuration {
    encryption_type = "AES256"
  }
}

# The workflow tags <environment>-<commit>: one rule per environment keeps its newest
# ecr_keep_images (its current image and what to roll back to), so a busy dev cannot
# push prod's images out. Untagged images expire after ecr_untagged_expire_days. An
# image tagged for two environments counts in the first one's rule (by priority).
resource "aws_ecr_lifecycle_policy" "this" {
  repository = aws_ecr_repository.this.name
  policy = jsonencode({
    rules = concat(
      [{
        rulePriority = 1
        description  = "untagged images expire after ${var.ecr_untagged_expire_days} days"
        selection = {
          tagStatus   = "untagged"
          countType   = "sinceImagePushed"
          countUnit   = "days"
          countNumber = var.ecr_untagged_expire_days
        }
        action = { type = "expire" }
      }],
      [for i, env in sort(keys(var.environments)) : {
        rulePriority = i + 2
        description  = "keep the newest ${var.ecr_keep_images} images of ${env}"
        selection = {
          tagStatus     = "tagged"
          tagPrefixList = ["${env}-"]
          countType     = "imageCountMoreThan"
          countNumber   = var.ecr_keep_images
        }
        action = { type = "expire" }
      }],
    )
  })
}
