# Where each output goes (infra/bootstrap/README.md, "One-time steps"):
#   github_environment_variables[<env>]  Settings > Environments > <env> > Variables
#   plan_targets                         Settings > Variables (repository): PLAN_TARGETS
#   state_bucket                         config.yaml: state.bucket
#   ecr_repository_name                  config.yaml: image_repository
#   backend_hcl[<env>]                   what `mirrord config render --env <env>` must
#                                        write to infra/environments/<env>/backend.hcl
# The deploy workflow (.github/workflows/deploy.yml) reads everything else from config.yaml.

output "state_bucket" {
  description = "The Terraform state bucket: config.yaml's state.bucket."
  value       = aws_s3_bucket.state.id
}

output "ecr_repository_name" {
  description = "The image repository's name: config.yaml's image_repository (its default is name_prefix)."
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
  description = "Per environment: the read-only role a pull request's plan assumes (in plan_targets)."
  value       = { for env, role in aws_iam_role.plan : env => role.arn }
}

output "github_environment_variables" {
  description = "Per environment, the GitHub environment's variables, ready to copy: only the deploy role (the rest is config.yaml's)."
  value = {
    for env in keys(var.environments) : env => {
      AWS_DEPLOY_ROLE_ARN = aws_iam_role.deploy[env].arn
    }
  }
}

# The pull request's plan job runs in no GitHub environment (its token's sub would
# otherwise be the environment's, which only the deploy role trusts), so it cannot read
# an environment's variables: its targets are one repository variable.
output "plan_targets" {
  description = "The repository variable PLAN_TARGETS (deploy.yml's plan job), as its JSON value: one {env, role} per environment."
  value       = jsonencode([for env in sort(keys(var.environments)) : { env = env, role = aws_iam_role.plan[env].arn }])
}

output "backend_hcl" {
  description = "Per environment, exactly what `mirrord config render --env <env>` writes to infra/environments/<env>/backend.hcl once config.yaml's state.bucket (and state.region, default aws_region) name this bucket and region."
  value = {
    for env, key in local.state_keys : env => join("\n", [
      "# Rendered from config.yaml by `mirrord config render --env ${env}`.",
      "bucket       = \"${aws_s3_bucket.state.id}\"",
      "key          = \"${key}\"",
      "region       = \"${var.aws_region}\"",
      "encrypt      = true",
      "use_lockfile = true",
      "",
    ])
  }
}
