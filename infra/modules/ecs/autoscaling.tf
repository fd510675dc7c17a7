# Scaling on the job queue, behind enable_autoscaling (off for the moto apply: moto's
# Application Auto Scaling never settles the target).

locals {
  scaling = var.enable_autoscaling ? toset(["this"]) : toset([])
}

resource "aws_appautoscaling_target" "this" {
  for_each = local.scaling

  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.this.name}/${aws_ecs_service.this.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = 0
  max_capacity       = var.max_tasks

  tags = var.tags
}

# Backlog per task is one message (a task runs one job or one shard at a time): the wake
# alarm's value is the messages visible plus in flight, and the steps set that many
# tasks, at most max_tasks. In flight counts the shards running, so a retry becoming
# visible mid-job never scales the running tasks in. With max_tasks = 1: one step, 1 task.
resource "aws_appautoscaling_policy" "wake" {
  for_each = local.scaling

  name               = "${var.name}-wake"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.this[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.this[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.this[each.key].scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ExactCapacity"
    cooldown                = 60
    metric_aggregation_type = "Maximum"

    # Relative to the alarm's threshold (1): a backlog of n messages sets min(n, max_tasks).
    dynamic "step_adjustment" {
      for_each = range(var.max_tasks)
      content {
        metric_interval_lower_bound = step_adjustment.value
        metric_interval_upper_bound = step_adjustment.value == var.max_tasks - 1 ? null : step_adjustment.value + 1
        scaling_adjustment          = step_adjustment.value + 1
      }
    }
  }
}

resource "aws_appautoscaling_policy" "sleep" {
  for_each = local.scaling

  name               = "${var.name}-sleep"
  policy_type        = "StepScaling"
  service_namespace  = aws_appautoscaling_target.this[each.key].service_namespace
  resource_id        = aws_appautoscaling_target.this[each.key].resource_id
  scalable_dimension = aws_appautoscaling_target.this[each.key].scalable_dimension

  step_scaling_policy_configuration {
    adjustment_type         = "ExactCapacity"
    cooldown                = 300
    metric_aggregation_type = "Maximum"

    step_adjustment {
      metric_interval_upper_bound = 0
      scaling_adjustment          = 0
    }
  }
}

# A job or a shard is waiting: wake the service, one task per message (the backlog).
# 0 while nothing is visible, so tasks finishing their shards never scale the others in:
# the sleep alarm below takes the service to 0 once all is done.
resource "aws_cloudwatch_metric_alarm" "wake" {
  for_each = local.scaling

  alarm_name          = "${var.name}-queue-has-work"
  alarm_description   = "Scales ${var.name} to one task per job message visible or in flight (at most ${var.max_tasks}) while the job queue has a visible message."
  evaluation_periods  = 1
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = 1
  treat_missing_data  = "notBreaching" # SQS stops reporting an idle queue
  alarm_actions       = [aws_appautoscaling_policy.wake[each.key].arn]

  metric_query {
    id          = "backlog"
    expression  = "IF(visible >= 1, visible + inflight, 0)"
    label       = "Job messages visible or in flight, while one is visible"
    return_data = true
  }

  metric_query {
    id = "visible"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = var.queue_name }
      stat        = "Maximum"
      period      = 60
    }
  }

  metric_query {
    id = "inflight"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesNotVisible"
      dimensions  = { QueueName = var.queue_name }
      stat        = "Maximum"
      period      = 60
    }
  }

  tags = var.tags
}

# Nothing visible and nothing in flight (a running job keeps its message in flight)
# for scale_in_minutes: back to 0.
resource "aws_cloudwatch_metric_alarm" "sleep" {
  for_each = local.scaling

  alarm_name          = "${var.name}-queue-drained"
  alarm_description   = "Scales ${var.name} to 0 once the job queue has been empty, in flight included, for ${var.scale_in_minutes} minutes."
  comparison_operator = "LessThanOrEqualToThreshold"
  threshold           = 0
  evaluation_periods  = var.scale_in_minutes / 5
  treat_missing_data  = "breaching" # SQS stops reporting a queue idle for 6 hours: it is empty
  alarm_actions       = [aws_appautoscaling_policy.sleep[each.key].arn]

  metric_query {
    id          = "messages"
    expression  = "visible + inflight"
    label       = "Messages visible or in flight"
    return_data = true
  }

  metric_query {
    id = "visible"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = var.queue_name }
      stat        = "Maximum"
      period      = 300
    }
  }

  metric_query {
    id = "inflight"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesNotVisible"
      dimensions  = { QueueName = var.queue_name }
      stat        = "Maximum"
      period      = 300
    }
  }

  tags = var.tags
}
