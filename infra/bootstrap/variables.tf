variable "account_id" {
  description = "The AWS account this bootstrap is for (12 digits). The provider refuses any other account (allowed_account_ids)."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.account_id))
    error_message = "account_id: the 12-digit AWS account id."
  }
}

variable "aws_region" {
  description = "Region of the state bucket, the ECR repository and every environment's resources (config.yaml's aws_region)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-[a-z]+)+-[0-9]$", var.aws_region))
    error_message = "aws_region: an AWS region such as us-east-1."
  }
}

variable "name_prefix" {
  description = "config.yaml's name_prefix: each environment's resources are named <name_prefix>-<environment>-…, and the deploy policies are scoped to those names."
  type        = string
  default     = "mirrord"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,19}$", var.name_prefix))
    error_message = "name_prefix: lowercase letters, digits and '-', starting with a letter, at most 20 characters."
  }
}

variable "github_repository" {
  description = "The GitHub repository that deploys, as owner/name. Only its workflows can assume the roles."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]*/[A-Za-z0-9._-]+$", var.github_repository))
    error_message = "github_repository: owner/name, e.g. example-org/mirrord."
  }
}

variable "environments" {
  description = <<-EOT
    One entry per deployment environment (any names; each is also a GitHub environment):
    the mirror bucket its Terraform creates (config.yaml's bucket_name) and, if it uses
    one, its kms_key_arn. Each gets a deploy role and a plan role.
  EOT
  type = map(object({
    bucket_name = string
    kms_key_arn = optional(string)
  }))

  validation {
    condition     = length(var.environments) > 0 && alltrue([for e in keys(var.environments) : can(regex("^[a-z][a-z0-9-]{0,19}$", e))])
    error_message = "environments: at least one; names are lowercase letters, digits and '-', starting with a letter, at most 20 characters."
  }

  # The deploy policy of "dev" is scoped to <name_prefix>-dev-*: an environment called
  # "dev-eu" would fall inside it (and its roles could be rewritten by dev's deploys).
  validation {
    condition = alltrue([
      for a in keys(var.environments) : alltrue([
        for b in keys(var.environments) : a == b || !startswith(b, "${a}-")
      ])
    ])
    error_message = "environments: no name may be another's name followed by '-' (dev and dev-eu): the deploy policies are scoped by the prefix <name_prefix>-<environment>-."
  }

  validation {
    condition     = alltrue([for e in values(var.environments) : can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", e.bucket_name))])
    error_message = "environments: bucket_name must follow S3's bucket naming rules."
  }

  validation {
    condition     = alltrue([for e in values(var.environments) : e.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", coalesce(e.kms_key_arn, "-")))])
    error_message = "environments: kms_key_arn must be a KMS key ARN, or left out."
  }
}

variable "state_bucket_name" {
  description = "Name of the Terraform state bucket to create (globally unique)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.state_bucket_name))
    error_message = "state_bucket_name must follow S3's bucket naming rules."
  }
}

variable "state_noncurrent_version_days" {
  description = "Days an overwritten version of a state file is kept (every apply writes one): how far back a state can be restored."
  type        = number
  default     = 90

  validation {
    condition     = var.state_noncurrent_version_days >= 1
    error_message = "state_noncurrent_version_days: at least 1."
  }
}

variable "ecr_repository_name" {
  description = "The ECR repository of the daemon's image (config.yaml's image_repository)."
  type        = string
  default     = "mirrord"

  validation {
    condition     = can(regex("^[a-z0-9]+([._/-][a-z0-9]+)*$", var.ecr_repository_name))
    error_message = "ecr_repository_name: lowercase letters, digits, and . _ - / between them."
  }
}

variable "ecr_keep_images" {
  description = "Images kept per environment (tags <environment>-…): older ones expire. Rolling back needs the previous image, so keep more than the deploys between two releases."
  type        = number
  default     = 30

  validation {
    condition     = var.ecr_keep_images >= 2
    error_message = "ecr_keep_images: at least 2 (the current image and the one to roll back to)."
  }
}

variable "ecr_untagged_expire_days" {
  description = "Days after which an untagged image (a tag's earlier push that failed half-way, a build's leftover) expires."
  type        = number
  default     = 14

  validation {
    condition     = var.ecr_untagged_expire_days >= 1
    error_message = "ecr_untagged_expire_days: at least 1."
  }
}

variable "create_github_oidc_provider" {
  description = "Create the account's GitHub Actions OIDC provider. An account has at most one per URL: set false and give github_oidc_provider_arn when it already exists."
  type        = bool
  default     = true
}

variable "github_oidc_provider_arn" {
  description = "ARN of an existing token.actions.githubusercontent.com OIDC provider (when create_github_oidc_provider is false)."
  type        = string
  default     = null

  validation {
    condition     = var.create_github_oidc_provider ? var.github_oidc_provider_arn == null : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/token\\.actions\\.githubusercontent\\.com$", coalesce(var.github_oidc_provider_arn, "-")))
    error_message = "github_oidc_provider_arn: give the existing provider's ARN (…:oidc-provider/token.actions.githubusercontent.com) exactly when create_github_oidc_provider is false."
  }
}

variable "tags" {
  description = "Tags for every resource this module creates."
  type        = map(string)
  default     = {}
}
