terraform {
  required_version = ">= 1.9, < 2.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 6.0"
    }
  }

  # Local state, on purpose: this module creates the state bucket every other root
  # uses, so it cannot keep its own state there before it exists. It is run once per
  # account by an administrator; keep terraform.tfstate (it holds no secret) next to the
  # team's other records, or import the resources again if it is lost (README.md).
}
