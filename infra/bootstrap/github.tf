# GitHub Actions → AWS without stored keys: the workflow's OIDC token is exchanged for
# a role's credentials. Trust is by the token's sub claim (GitHub's default format):
#   repo:<owner>/<repo>:environment:<env>  a job that declares `environment: <env>`,
#                                          after that environment's protection rules;
#   repo:<owner>/<repo>:pull_request       a job run for a pull request (plan only).
# GitHub gives a pull request from a fork no id-token: write, so a fork gets neither.

locals {
  oidc_host         = "token.actions.githubusercontent.com"
  oidc_provider_arn = var.create_github_oidc_provider ? aws_iam_openid_connect_provider.github[0].arn : var.github_oidc_provider_arn

  # The bootstrap's own roles live under their own IAM path: the deploy policies let
  # an environment's deploy write roles named <name_prefix>-<env>-* at the path "/",
  # and no name there can reach a role under this path (the path is in the ARN).
  role_path = "/${var.name_prefix}-ci/"
}

resource "aws_iam_openid_connect_provider" "github" {
  count = var.create_github_oidc_provider ? 1 : 0

  url            = "https://${local.oidc_host}"
  client_id_list = ["sts.amazonaws.com"]
  # AWS trusts GitHub's certificate through its own root store and ignores these for
  # this host; the API still wants at least one. GitHub's published thumbprints:
  thumbprint_list = [
    "6938fd4d98bab03faadb97b34396831e3780aea1",
    "1c58a3a8518e8759bf075b76b750d4f2df264fcd",
  ]
}

data "aws_iam_policy_document" "trust" {
  for_each = {
    for pair in setproduct(keys(var.environments), ["deploy", "plan"]) :
    "${pair[0]}/${pair[1]}" => {
      # StringEquals, not StringLike: no wildcard in the subject, nothing else admitted.
      sub = pair[1] == "deploy" ? "repo:${var.github_repository}:environment:${pair[0]}" : "repo:${var.github_repository}:pull_request"
    }
  }

  statement {
    sid     = "GitHubActions"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [local.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:aud"
      values   = ["sts.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_host}:sub"
      values   = [each.value.sub]
    }
  }
}

resource "aws_iam_role" "deploy" {
  for_each = var.environments

  name                 = "${var.name_prefix}-deploy-${each.key}"
  path                 = local.role_path
  description          = "mirrord: GitHub Actions deploys of ${each.key} (environment ${each.key} of ${var.github_repository})"
  assume_role_policy   = data.aws_iam_policy_document.trust["${each.key}/deploy"].json
  max_session_duration = 3600 # the deploy job's timeout-minutes is 60
}

resource "aws_iam_role" "plan" {
  for_each = var.environments

  name                 = "${var.name_prefix}-plan-${each.key}"
  path                 = local.role_path
  description          = "mirrord: terraform plan of ${each.key} on pull requests of ${var.github_repository} (read-only)"
  assume_role_policy   = data.aws_iam_policy_document.trust["${each.key}/plan"].json
  max_session_duration = 3600
}

# Managed policies (a role's inline policies may hold only 10,240 characters in all;
# these hold about 15,000): plan = read; deploy = read + write_compute + write_network +
# write_platform
# (policies.tf). They sit under the bootstrap's path, out of the deploy's IAM reach.
locals {
  policies = {
    for pair in setproduct(keys(var.environments), ["read", "write-compute", "write-network", "write-platform"]) :
    "${pair[0]}/${pair[1]}" => { env = pair[0], part = pair[1] }
  }
  policy_json = {
    for key, p in local.policies : key => (
      p.part == "read" ? data.aws_iam_policy_document.read[p.env].json :
      p.part == "write-compute" ? data.aws_iam_policy_document.write_compute[p.env].json :
      p.part == "write-network" ? data.aws_iam_policy_document.write_network[p.env].json :
      data.aws_iam_policy_document.write_platform[p.env].json
    )
  }
}

resource "aws_iam_policy" "this" {
  for_each = local.policies

  name        = "${var.name_prefix}-${each.value.part}-${each.value.env}"
  path        = local.role_path
  description = "mirrord ${each.value.env}: terraform ${each.value.part == "read" ? "plan (read-only)" : "apply (${each.value.part})"}"
  policy      = local.policy_json[each.key]
}

resource "aws_iam_role_policy_attachment" "plan" {
  for_each = var.environments

  role       = aws_iam_role.plan[each.key].name
  policy_arn = aws_iam_policy.this["${each.key}/read"].arn
}

resource "aws_iam_role_policy_attachment" "deploy" {
  for_each = {
    for key, p in local.policies : key => p
  }

  role       = aws_iam_role.deploy[each.value.env].name
  policy_arn = aws_iam_policy.this[each.key].arn
}
