# What the deploy workflow's GitHub environments need (.github/workflows/deploy.yml):
# copy github_environment_variables[<env>] into Settings > Environments > <env> >
# Variables, and each backend_hcl[<env>] to infra/environments/<env>/backend.hcl.

output "state_bucket" {
  description = "The Terraform state bucket (TF_STATE_BUCKET)."
  value       = aws_s3_bucket.state.id
}

output "ecr_repository_name" {
  description = "The image repository's name (ECR_REPOSITORY)."
  value       = aws_ecr_repository.this.name
}

output "ecr_repository_url" {
  description = "<account>.dkr.ecr.<region>.amazonaws.com/<name>: config.yaml's image_uri starts with it."
  value       = aws_ecr_repository.this.repository_url
}

output "github_oidc_provider_arn" {
  description = "The account's GitHub Actions OIDC provider."
  value       = local.oidc_provider_arn
}

output "deploy_role_arns" {
  description = "Per environment: the role its deploy job assumes (AWS_DEPLOY_ROLE_ARN)."
  value       = { for env, role in aws_iam_role.deploy : env => role.arn }
}

output "plan_role_arns" {
  description = "Per environment: the read-only role a pull request's plan assumes (AWS_PLAN_ROLE_ARN)."
  value       = { for env, role in aws_iam_role.plan : env => role.arn }
}

output "github_environment_variables" {
  description = "Per environment, the GitHub environment's variables, ready to copy."
  value = {
    for env in keys(var.environments) : env => {
      AWS_DEPLOY_ROLE_ARN = aws_iam_role.deploy[env].arn
      AWS_PLAN_ROLE_ARN   = aws_iam_role.plan[env].arn
      AWS_REGION          = var.aws_region
      ECR_REPOSITORY      = aws_ecr_repository.this.name
      TF_STATE_BUCKET     = aws_s3_bucket.state.id
    }
  }
}

output "backend_hcl" {
  description = "Per environment, the contents of infra/environments/<env>/backend.hcl."
  value = {
    for env, key in local.state_keys : env => join("\n", [
      "bucket       = \"${aws_s3_bucket.state.id}\"",
      "key          = \"${key}\"",
      "region       = \"${var.aws_region}\"",
      "encrypt      = true",
      "use_lockfile = true",
      "",
    ])
  }
}
