# The daemon: a Fargate service at desired count 0 that the job queue wakes.
# While a message is visible it scales to one task; the task takes the message (it
# becomes in flight, kept invisible by the heartbeat), runs the job and deletes it.
# Once the queue holds nothing, visible or in flight, for scale_in_minutes, the
# service goes back to 0 and the task gets SIGTERM while idle.

data "aws_region" "current" {}

locals {
  container_name = "mirrord"

  environment = merge(var.environment, {
    MIRRORD_HEARTBEAT_SECONDS = tostring(var.heartbeat_seconds)
    MIRRORD_STOP_GRACE        = tostring(var.stop_grace)
    MIRRORD_HEALTH_FILE       = var.health_file
    MIRRORD_LOGS_HINT         = "CloudWatch log group ${aws_cloudwatch_log_group.this.name}"
  })
}

resource "aws_cloudwatch_log_group" "this" {
  #checkov:skip=CKV_AWS_338: retention is the log_retention_days variable (30 days by default); a year of sync logs has no use once status.json and the metrics are kept.
  #checkov:skip=CKV_AWS_158: encrypted with kms_key_arn when one is given; otherwise CloudWatch Logs' own encryption at rest, and the logs hold no secrets (the webhook URL is never logged).
  name              = "/ecs/${var.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn

  tags = var.tags
}

resource "aws_ecs_cluster" "this" {
  name = var.name

  setting {
    name  = "containerInsights"
    value = var.container_insights ? "enabled" : "disabled"
  }

  tags = var.tags
}

resource "aws_ecs_task_definition" "this" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = tostring(var.cpu)
  memory                   = tostring(var.memory)
  task_role_arn            = var.task_role_arn
  execution_role_arn       = var.execution_role_arn

  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = var.cpu_architecture
  }

  # Task storage mounted at /tmp: the only writable path (health file, Python's tempdir).
  volume {
    name = "tmp"
  }

  container_definitions = jsonencode([
    {
      name                   = local.container_name
      image                  = var.image_uri
      essential              = true
      entryPoint             = ["mirrord"]
      command                = ["daemon"]
      user                   = var.container_user
      readonlyRootFilesystem = true
      privileged             = false
      stopTimeout            = var.stop_timeout
      linuxParameters = {
        initProcessEnabled = true # reaps `mirrord health` children, forwards SIGTERM
        capabilities       = { drop = ["ALL"] }
      }
      environment = [for k in sort(keys(local.environment)) : { name = k, value = local.environment[k] }]
      mountPoints = [{ sourceVolume = "tmp", containerPath = "/tmp", readOnly = false }]
      healthCheck = {
        command     = ["CMD", "mirrord", "health"]
        interval    = 30
        timeout     = 10
        retries     = 3
        startPeriod = 60
      }
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = aws_cloudwatch_log_group.this.name
          awslogs-region        = data.aws_region.current.name
          awslogs-stream-prefix = "daemon"
        }
      }
    }
  ])

  tags = var.tags
}

resource "aws_ecs_service" "this" {
  #checkov:skip=CKV_AWS_333: without a NAT gateway (use_nat_gateway = false) the task needs a public IP to reach GHCR; its security group admits nothing inbound.
  name                               = var.name
  cluster                            = aws_ecs_cluster.this.id
  task_definition                    = aws_ecs_task_definition.this.arn
  desired_count                      = 0
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  enable_ecs_managed_tags            = true
  propagate_tags                     = "SERVICE"
  deployment_minimum_healthy_percent = 0   # a new revision replaces the tasks: never more daemons
  deployment_maximum_percent         = 100 # than desired (the lock keeps two jobs apart anyway)
  wait_for_steady_state              = false

  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = var.security_group_ids
    assign_public_ip = var.assign_public_ip
  }

  # The queue drives the count (or an operator does, without autoscaling).
  lifecycle {
    ignore_changes = [desired_count]
  }

  tags = var.tags
}
