# What `terraform plan` and `terraform apply` of infra/environments/<env> need, and the
# deploy workflow's smoke test, derived from infra/main.tf and infra/modules/*. Every
# resource there is named <name_prefix>-<env>-… (the dashboard <name_prefix>-<env>), and
# the mirror bucket is the environment's bucket_name: each statement is scoped to those
# ARNs wherever the service has resource-level permissions. Where it has none, or the
# ARN holds an id AWS makes up (CloudFront distributions, autoscaling targets, task
# definitions' register call, new EC2 resources), the statement says so and uses "*".
#
#   read  (plan role, and the deploy role's first policy): the state and its lock file,
#         describe/get/list of everything the environment's Terraform refreshes;
#   write (the deploy role's other three policies, split for IAM's 6,144-character
#         limit on a managed policy): create/update/delete of those resources, writing the
#         state, ECR push, and the smoke test's invoke and run-task.
#
# Left out on purpose: s3:DeleteBucket and every object action on the mirror bucket
# (a deploy never deletes or reads bottles), secretsmanager:GetSecretValue and
# PutSecretValue (the webhook is set by a person), iam:AttachRolePolicy (the modules use
# inline policies only), and any IAM write outside <name_prefix>-<env>-*.

locals {
  envs = {
    for env, cfg in var.environments : env => {
      name       = "${var.name_prefix}-${env}"
      bucket_arn = "arn:${local.partition}:s3:::${cfg.bucket_name}"
      state_key  = "${aws_s3_bucket.state.arn}/${local.state_keys[env]}"
      kms        = cfg.kms_key_arn == null ? [] : [cfg.kms_key_arn]
    }
  }

  arn = {
    sqs     = "arn:${local.partition}:sqs:${local.region}:${local.account}"
    iam     = "arn:${local.partition}:iam::${local.account}"
    lambda  = "arn:${local.partition}:lambda:${local.region}:${local.account}"
    ecs     = "arn:${local.partition}:ecs:${local.region}:${local.account}"
    events  = "arn:${local.partition}:events:${local.region}:${local.account}"
    cw      = "arn:${local.partition}:cloudwatch:${local.region}:${local.account}"
    cwdash  = "arn:${local.partition}:cloudwatch::${local.account}"
    logs    = "arn:${local.partition}:logs:${local.region}:${local.account}"
    sns     = "arn:${local.partition}:sns:${local.region}:${local.account}"
    secrets = "arn:${local.partition}:secretsmanager:${local.region}:${local.account}"
    cf      = "arn:${local.partition}:cloudfront::${local.account}"
    acm     = "arn:${local.partition}:acm:us-east-1:${local.account}" # CloudFront takes us-east-1 certificates only
    r53     = "arn:${local.partition}:route53:::"
    budgets = "arn:${local.partition}:budgets::${local.account}"
  }
}

# --- read: terraform plan (and refresh before apply) --------------------------------

data "aws_iam_policy_document" "read" {
  #checkov:skip=CKV_AWS_356: the "*" statements hold only Describe/List/Get calls that have no resource-level permissions (ec2:Describe*, ecs:DescribeTaskDefinition, logs:Describe*, cloudwatch:DescribeAlarms, application-autoscaling:Describe*) or whose ARNs hold AWS-made ids (CloudFront).
  for_each = local.envs

  statement {
    sid       = "StateBucketList"
    actions   = ["s3:ListBucket"] # the S3 backend lists keys (workspaces) under the bucket
    resources = [aws_s3_bucket.state.arn]
  }

  statement {
    sid       = "StateRead"
    actions   = ["s3:GetObject"]
    resources = [each.value.state_key]
  }

  # use_lockfile: <key>.tflock is created when a run starts and deleted when it ends,
  # so even a plan writes here (and nowhere else).
  statement {
    sid       = "StateLockFile"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"]
    resources = ["${each.value.state_key}.tflock"]
  }

  statement {
    sid = "MirrorBucketConfigRead" # the bucket's settings, never its objects
    actions = [
      "s3:GetBucket*", "s3:GetAccelerateConfiguration", "s3:GetEncryptionConfiguration",
      "s3:GetLifecycleConfiguration", "s3:GetReplicationConfiguration", "s3:ListBucket",
    ]
    resources = [each.value.bucket_arn]
  }

  statement {
    sid       = "QueuesRead"
    actions   = ["sqs:GetQueueAttributes", "sqs:GetQueueUrl", "sqs:ListQueueTags"]
    resources = ["${local.arn.sqs}:${each.value.name}-*"]
  }

  statement {
    sid = "RolesRead"
    actions = [
      "iam:GetRole", "iam:GetRolePolicy", "iam:ListRolePolicies", "iam:ListAttachedRolePolicies",
      "iam:ListInstanceProfilesForRole", "iam:ListRoleTags",
    ]
    resources = ["${local.arn.iam}:role/${each.value.name}-*"]
  }

  statement {
    sid       = "FunctionsRead"
    actions   = ["lambda:GetFunction*", "lambda:GetPolicy", "lambda:ListVersionsByFunction", "lambda:ListTags", "lambda:GetRuntimeManagementConfig"]
    resources = ["${local.arn.lambda}:function:${each.value.name}-*"]
  }

  statement {
    sid     = "EcsRead"
    actions = ["ecs:DescribeClusters", "ecs:DescribeServices", "ecs:ListTagsForResource"]
    resources = [
      "${local.arn.ecs}:cluster/${each.value.name}-*",
      "${local.arn.ecs}:service/${each.value.name}-*/${each.value.name}-*",
      "${local.arn.ecs}:task-definition/${each.value.name}-*:*",
    ]
  }

  statement {
    sid       = "ScheduleRead"
    actions   = ["events:DescribeRule", "events:ListTargetsByRule", "events:ListTagsForResource"]
    resources = ["${local.arn.events}:rule/${each.value.name}-*"]
  }

  statement {
    sid     = "MonitoringRead"
    actions = ["cloudwatch:ListTagsForResource", "cloudwatch:GetDashboard"]
    resources = [
      "${local.arn.cw}:alarm:${each.value.name}-*",
      "${local.arn.cwdash}:dashboard/${each.value.name}",
      "${local.arn.cwdash}:dashboard/${each.value.name}-*",
    ]
  }

  statement {
    sid     = "LogsRead"
    actions = ["logs:ListTagsForResource", "logs:ListTagsLogGroup"]
    resources = [
      "${local.arn.logs}:log-group:/aws/lambda/${each.value.name}-*",
      "${local.arn.logs}:log-group:/ecs/${each.value.name}-*",
    ]
  }

  statement {
    sid       = "TopicRead"
    actions   = ["sns:GetTopicAttributes", "sns:GetSubscriptionAttributes", "sns:ListSubscriptionsByTopic", "sns:ListTagsForResource"]
    resources = ["${local.arn.sns}:${each.value.name}-*"]
  }

  statement {
    sid       = "SecretRead" # the secret's metadata; GetSecretValue is not granted
    actions   = ["secretsmanager:DescribeSecret", "secretsmanager:GetResourcePolicy"]
    resources = ["${local.arn.secrets}:secret:${each.value.name}/*", "${local.arn.secrets}:secret:${each.value.name}-*"]
  }

  statement {
    sid       = "CdnRead"
    actions   = ["cloudfront:GetFunction", "cloudfront:DescribeFunction"]
    resources = ["${local.arn.cf}:function/${each.value.name}-*"]
  }


  statement {
    sid       = "CertificateRead" # a custom domain's certificate, given by ARN
    actions   = ["acm:DescribeCertificate", "acm:ListTagsForCertificate"]
    resources = ["${local.arn.acm}:certificate/*"]
  }

  statement {
    sid       = "DnsRead" # the custom domain's alias records (a zone id AWS made up)
    actions   = ["route53:GetHostedZone", "route53:ListResourceRecordSets", "route53:GetChange", "route53:ListTagsForResource"]
    resources = ["${local.arn.r53}hostedzone/*", "${local.arn.r53}change/*"]
  }

  statement {
    sid       = "BudgetRead"
    actions   = ["budgets:ViewBudget", "budgets:ListTagsForResource"]
    resources = ["${local.arn.budgets}:budget/${each.value.name}*"]
  }

  # No resource-level permissions for these reads (or the ARN holds an AWS-made id).
  statement {
    sid = "DescribeUnscoped"
    actions = [
      "ec2:Describe*",
      "ecs:DescribeTaskDefinition",
      "logs:DescribeLogGroups", "logs:DescribeMetricFilters", "logs:DescribeQueryDefinitions",
      "cloudwatch:DescribeAlarms",
      "application-autoscaling:DescribeScalableTargets", "application-autoscaling:DescribeScalingPolicies",
      "application-autoscaling:ListTagsForResource",
      "cloudfront:GetDistribution", "cloudfront:GetDistributionConfig", "cloudfront:GetOriginAccessControl",
      "cloudfront:GetCachePolicy", "cloudfront:ListTagsForResource",
    ]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = each.value.kms
    content {
      sid       = "KeyRead"
      actions   = ["kms:DescribeKey"]
      resources = [statement.value]
    }
  }
}

# --- write: terraform apply, ECR push, the smoke test -------------------------------
# write_compute: state, bucket settings, queues, roles, functions, ECS (and the smoke
# test); write_network: the VPC; write_platform: schedule, monitoring, logs, topic,
# secret, CDN, DNS, budget, ECR, KMS.

data "aws_iam_policy_document" "write_compute" {
  #checkov:skip=CKV_AWS_356: the "*" statements are calls without resource-level permissions or whose ARNs hold AWS-made ids (ecs:RegisterTaskDefinition, ecr:GetAuthorizationToken, CloudFront distributions, OAC and cache policies, Application Auto Scaling targets, EC2's create calls, Logs Insights query definitions); each is commented where it is granted.
  #checkov:skip=CKV_AWS_111: the same unscoped calls: what they can write is bounded by the region condition (EC2) and the service (the rest); deletes of VPC resources need the environment's tags.
  for_each = local.envs

  statement {
    sid       = "StateWrite"
    actions   = ["s3:PutObject"]
    resources = [each.value.state_key]
  }

  statement {
    sid = "MirrorBucketConfigure" # no DeleteBucket, no object access
    actions = [
      "s3:CreateBucket", "s3:PutBucketVersioning", "s3:PutBucketPolicy", "s3:DeleteBucketPolicy",
      "s3:PutEncryptionConfiguration", "s3:PutLifecycleConfiguration", "s3:PutBucketPublicAccessBlock",
      "s3:PutBucketOwnershipControls", "s3:PutBucketTagging",
    ]
    resources = [each.value.bucket_arn]
  }

  statement {
    sid       = "Queues"
    actions   = ["sqs:CreateQueue", "sqs:DeleteQueue", "sqs:SetQueueAttributes", "sqs:TagQueue", "sqs:UntagQueue"]
    resources = ["${local.arn.sqs}:${each.value.name}-*"]
  }

  statement {
    sid = "Roles"
    actions = [
      "iam:CreateRole", "iam:DeleteRole", "iam:UpdateRole", "iam:UpdateRoleDescription",
      "iam:UpdateAssumeRolePolicy", "iam:TagRole", "iam:UntagRole",
      "iam:PutRolePolicy", "iam:DeleteRolePolicy",
    ]
    resources = ["${local.arn.iam}:role/${each.value.name}-*"]
  }

  statement {
    sid       = "PassOwnRoles"
    actions   = ["iam:PassRole"]
    resources = ["${local.arn.iam}:role/${each.value.name}-*"]

    condition {
      test     = "StringEquals"
      variable = "iam:PassedToService"
      values   = ["ecs-tasks.amazonaws.com", "lambda.amazonaws.com"]
    }
  }

  # The first ECS cluster and scalable target of an account create these once.
  statement {
    sid     = "ServiceLinkedRoles"
    actions = ["iam:CreateServiceLinkedRole"]
    resources = [
      "${local.arn.iam}:role/aws-service-role/ecs.amazonaws.com/AWSServiceRoleForECS",
      "${local.arn.iam}:role/aws-service-role/ecs.application-autoscaling.amazonaws.com/AWSServiceRoleForApplicationAutoScaling_ECSService",
    ]

    condition {
      test     = "StringEquals"
      variable = "iam:AWSServiceName"
      values   = ["ecs.amazonaws.com", "ecs.application-autoscaling.amazonaws.com"]
    }
  }

  statement {
    sid = "Functions"
    actions = [
      "lambda:CreateFunction", "lambda:DeleteFunction", "lambda:UpdateFunctionCode",
      "lambda:UpdateFunctionConfiguration", "lambda:TagResource", "lambda:UntagResource",
      "lambda:AddPermission", "lambda:RemovePermission",
      "lambda:PutFunctionEventInvokeConfig", "lambda:UpdateFunctionEventInvokeConfig",
      "lambda:DeleteFunctionEventInvokeConfig",
    ]
    resources = ["${local.arn.lambda}:function:${each.value.name}-*"]
  }

  # The smoke test: the enqueue handler in dry-run mode, and one daemon task.
  statement {
    sid       = "SmokeInvoke"
    actions   = ["lambda:InvokeFunction"]
    resources = ["${local.arn.lambda}:function:${each.value.name}-enqueue"]
  }

  statement {
    sid       = "SmokeRunTask"
    actions   = ["ecs:RunTask"]
    resources = ["${local.arn.ecs}:task-definition/${each.value.name}-daemon:*"]

    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = ["${local.arn.ecs}:cluster/${each.value.name}-daemon"]
    }
  }

  statement {
    sid       = "SmokeTasks"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask", "ecs:TagResource"]
    resources = ["${local.arn.ecs}:task/${each.value.name}-daemon/*"]
  }

  statement {
    sid       = "SmokeLogs" # what the smoke test's task and invocation logged
    actions   = ["logs:GetLogEvents", "logs:FilterLogEvents"]
    resources = ["${local.arn.logs}:log-group:/aws/lambda/${each.value.name}-*:*", "${local.arn.logs}:log-group:/ecs/${each.value.name}-*:*"]
  }

  statement {
    sid = "Ecs"
    actions = [
      "ecs:CreateCluster", "ecs:DeleteCluster", "ecs:UpdateCluster", "ecs:UpdateClusterSettings",
      "ecs:PutClusterCapacityProviders", "ecs:CreateService", "ecs:UpdateService", "ecs:DeleteService",
      "ecs:TagResource", "ecs:UntagResource",
    ]
    resources = [
      "${local.arn.ecs}:cluster/${each.value.name}-*",
      "${local.arn.ecs}:service/${each.value.name}-*/${each.value.name}-*",
      "${local.arn.ecs}:task-definition/${each.value.name}-*:*",
    ]
  }

  # Register/Deregister take no resource: a task definition's ARN does not exist until
  # it is registered. Application Auto Scaling targets are ids AWS makes up.
  statement {
    sid = "TaskDefinitionsAndScaling"
    actions = [
      "ecs:RegisterTaskDefinition", "ecs:DeregisterTaskDefinition",
      "application-autoscaling:RegisterScalableTarget", "application-autoscaling:DeregisterScalableTarget",
      "application-autoscaling:PutScalingPolicy", "application-autoscaling:DeleteScalingPolicy",
      "application-autoscaling:TagResource", "application-autoscaling:UntagResource",
    ]
    resources = ["*"]
  }
}

data "aws_iam_policy_document" "write_network" {
  #checkov:skip=CKV_AWS_356: the "*" statements are calls without resource-level permissions or whose ARNs hold AWS-made ids (ecs:RegisterTaskDefinition, ecr:GetAuthorizationToken, CloudFront distributions, OAC and cache policies, Application Auto Scaling targets, EC2's create calls, Logs Insights query definitions); each is commented where it is granted.
  #checkov:skip=CKV_AWS_111: the same unscoped calls: what they can write is bounded by the region condition (EC2) and the service (the rest); deletes of VPC resources need the environment's tags.
  for_each = local.envs

  # EC2's create calls name resources that do not exist yet, and its associations and
  # routes carry no tags: these are on "*", in this region only.
  statement {
    sid = "NetworkBuild"
    actions = [
      "ec2:CreateVpc", "ec2:ModifyVpcAttribute", "ec2:CreateSubnet", "ec2:ModifySubnetAttribute",
      "ec2:CreateInternetGateway", "ec2:AttachInternetGateway", "ec2:DetachInternetGateway",
      "ec2:CreateRouteTable", "ec2:CreateRoute", "ec2:ReplaceRoute", "ec2:DeleteRoute",
      "ec2:AssociateRouteTable", "ec2:DisassociateRouteTable", "ec2:CreateSecurityGroup",
      "ec2:CreateVpcEndpoint", "ec2:ModifyVpcEndpoint",
      "ec2:AllocateAddress", "ec2:CreateNatGateway", "ec2:DisassociateAddress",
    ]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [local.region]
    }
  }

  # Rules only in the environment's own security groups (tagged Environment = <env>);
  # the rule itself is a resource of its own, new or untagged.
  statement {
    sid = "NetworkRules"
    actions = [
      "ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress",
      "ec2:RevokeSecurityGroupEgress", "ec2:RevokeSecurityGroupIngress", "ec2:ModifySecurityGroupRules",
      "ec2:UpdateSecurityGroupRuleDescriptionsEgress", "ec2:UpdateSecurityGroupRuleDescriptionsIngress",
    ]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:security-group/*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Environment"
      values   = [each.key]
    }
  }

  statement {
    sid       = "NetworkRuleObjects"
    actions   = ["ec2:AuthorizeSecurityGroupEgress", "ec2:AuthorizeSecurityGroupIngress", "ec2:ModifySecurityGroupRules", "ec2:CreateTags"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:security-group-rule/*"]
  }

  # Tags: on a resource being created, on the environment's own resources, and on an
  # untagged security group (the VPC's default one, which aws_default_security_group
  # adopts and tags before emptying it). That last grant means an untagged security
  # group elsewhere in the region could be claimed: tag the account's groups.
  statement {
    sid       = "NetworkTagOnCreate"
    actions   = ["ec2:CreateTags"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "ec2:CreateAction"
      values   = ["CreateVpc", "CreateSubnet", "CreateInternetGateway", "CreateRouteTable", "CreateSecurityGroup", "CreateVpcEndpoint", "AllocateAddress", "CreateNatGateway"]
    }
  }

  statement {
    sid       = "NetworkTagOwn"
    actions   = ["ec2:CreateTags", "ec2:DeleteTags"]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Environment"
      values   = [each.key]
    }
  }

  statement {
    sid       = "NetworkTagDefaultGroup"
    actions   = ["ec2:CreateTags"]
    resources = ["arn:${local.partition}:ec2:${local.region}:${local.account}:security-group/*"]

    condition {
      test     = "Null"
      variable = "aws:ResourceTag/Environment"
      values   = ["true"]
    }
  }

  statement {
    sid = "NetworkDelete"
    actions = [
      "ec2:DeleteVpc", "ec2:DeleteSubnet", "ec2:DeleteInternetGateway", "ec2:DeleteRouteTable",
      "ec2:DeleteSecurityGroup", "ec2:DeleteVpcEndpoints", "ec2:DeleteNatGateway", "ec2:ReleaseAddress",
    ]
    resources = ["*"]

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Environment"
      values   = [each.key]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:ResourceTag/Project"
      values   = ["mirrord"]
    }
  }
}

data "aws_iam_policy_document" "write_platform" {
  #checkov:skip=CKV_AWS_356: the "*" statements are calls without resource-level permissions or whose ARNs hold AWS-made ids (ecs:RegisterTaskDefinition, ecr:GetAuthorizationToken, CloudFront distributions, OAC and cache policies, Application Auto Scaling targets, EC2's create calls, Logs Insights query definitions); each is commented where it is granted.
  #checkov:skip=CKV_AWS_111: the same unscoped calls: what they can write is bounded by the region condition (EC2) and the service (the rest); deletes of VPC resources need the environment's tags.
  for_each = local.envs

  statement {
    sid = "Schedule"
    actions = [
      "events:PutRule", "events:DeleteRule", "events:EnableRule", "events:DisableRule",
      "events:PutTargets", "events:RemoveTargets", "events:TagResource", "events:UntagResource",
    ]
    resources = ["${local.arn.events}:rule/${each.value.name}-*"]
  }

  statement {
    sid = "Monitoring"
    actions = [
      "cloudwatch:PutMetricAlarm", "cloudwatch:PutCompositeAlarm", "cloudwatch:DeleteAlarms",
      "cloudwatch:TagResource", "cloudwatch:UntagResource",
      "cloudwatch:PutDashboard", "cloudwatch:DeleteDashboards",
    ]
    resources = [
      "${local.arn.cw}:alarm:${each.value.name}-*",
      "${local.arn.cwdash}:dashboard/${each.value.name}",
      "${local.arn.cwdash}:dashboard/${each.value.name}-*",
    ]
  }

  statement {
    sid = "Logs"
    actions = [
      "logs:CreateLogGroup", "logs:DeleteLogGroup", "logs:PutRetentionPolicy", "logs:DeleteRetentionPolicy",
      "logs:AssociateKmsKey", "logs:DisassociateKmsKey", "logs:TagResource", "logs:UntagResource",
      "logs:TagLogGroup", "logs:UntagLogGroup", "logs:PutMetricFilter", "logs:DeleteMetricFilter",
    ]
    resources = [
      "${local.arn.logs}:log-group:/aws/lambda/${each.value.name}-*",
      "${local.arn.logs}:log-group:/ecs/${each.value.name}-*",
    ]
  }

  # Saved Logs Insights queries have ids, not names, as their ARNs.
  statement {
    sid       = "LogsQueries"
    actions   = ["logs:PutQueryDefinition", "logs:DeleteQueryDefinition"]
    resources = ["*"]
  }

  statement {
    sid = "Topic"
    actions = [
      "sns:CreateTopic", "sns:DeleteTopic", "sns:SetTopicAttributes", "sns:Subscribe", "sns:Unsubscribe",
      "sns:SetSubscriptionAttributes", "sns:TagResource", "sns:UntagResource",
    ]
    resources = ["${local.arn.sns}:${each.value.name}-*"]
  }

  statement {
    sid = "Secret" # the secret's shell; its value is never read or written by a deploy
    actions = [
      "secretsmanager:CreateSecret", "secretsmanager:DeleteSecret", "secretsmanager:UpdateSecret",
      "secretsmanager:TagResource", "secretsmanager:UntagResource",
      "secretsmanager:PutResourcePolicy", "secretsmanager:DeleteResourcePolicy",
    ]
    resources = ["${local.arn.secrets}:secret:${each.value.name}/*", "${local.arn.secrets}:secret:${each.value.name}-*"]
  }

  # Distributions, origin access controls and cache policies are ids AWS makes up.
  statement {
    sid = "Cdn"
    actions = [
      "cloudfront:CreateDistribution", "cloudfront:CreateDistributionWithTags", "cloudfront:UpdateDistribution",
      "cloudfront:DeleteDistribution", "cloudfront:TagResource", "cloudfront:UntagResource",
      "cloudfront:CreateOriginAccessControl", "cloudfront:UpdateOriginAccessControl", "cloudfront:DeleteOriginAccessControl",
      "cloudfront:CreateCachePolicy", "cloudfront:UpdateCachePolicy", "cloudfront:DeleteCachePolicy",
    ]
    resources = ["*"]
  }

  statement {
    sid = "CdnFunctions" # the viewer-request token check, by name
    actions = [
      "cloudfront:CreateFunction", "cloudfront:UpdateFunction", "cloudfront:DeleteFunction",
      "cloudfront:PublishFunction", "cloudfront:TagResource", "cloudfront:UntagResource",
    ]
    resources = ["${local.arn.cf}:function/${each.value.name}-*"]
  }


  # The zone is the team's; the record names are config.yaml's aliases, not a pattern
  # this module knows. Restrict to one zone here if the account holds others.
  statement {
    sid       = "Dns"
    actions   = ["route53:ChangeResourceRecordSets"]
    resources = ["${local.arn.r53}hostedzone/*"]
  }

  statement {
    sid       = "Budget"
    actions   = ["budgets:ModifyBudget", "budgets:TagResource", "budgets:UntagResource"]
    resources = ["${local.arn.budgets}:budget/${each.value.name}*"]
  }

  statement {
    sid       = "EcrLogin" # GetAuthorizationToken takes no resource
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }

  statement {
    sid = "EcrPush"
    actions = [
      "ecr:BatchCheckLayerAvailability", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
      "ecr:CompleteLayerUpload", "ecr:PutImage", "ecr:BatchGetImage", "ecr:DescribeImages", "ecr:ListImages",
      "ecr:GetDownloadUrlForLayer",
    ]
    resources = [aws_ecr_repository.this.arn]
  }

  # With a customer-managed key: Lambda (environment) and CloudWatch Logs take grants
  # on it for the resources they create; the key policy must admit them as well.
  dynamic "statement" {
    for_each = each.value.kms
    content {
      sid       = "KeyGrants"
      actions   = ["kms:CreateGrant"]
      resources = [statement.value]

      condition {
        test     = "Bool"
        variable = "kms:GrantIsForAWSResource"
        values   = ["true"]
      }
    }
  }

  dynamic "statement" {
    for_each = each.value.kms
    content {
      sid       = "KeyUseThroughServices"
      actions   = ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]

      condition {
        test     = "StringEquals"
        variable = "kms:ViaService"
        values   = [for s in ["lambda", "logs", "secretsmanager", "sqs", "sns", "s3"] : "${s}.${local.region}.amazonaws.com"]
      }
    }
  }
}
