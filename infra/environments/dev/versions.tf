terraform {
  required_version = ">= 1.10, < 2.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 6.0"
    }
  }

  # Partial configuration: the state bucket, key and lock table come from
  #   terraform init -backend-config=backend.hcl
  backend "s3" {}
}
