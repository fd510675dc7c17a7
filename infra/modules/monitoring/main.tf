# Alarms (all to the SNS topic) and one dashboard.
#
#   dlq-not-empty   a job or a sync invocation failed for good: look, fix, redrive
#   schedule-dlq-not-empty  EventBridge could not deliver the schedule's event at all
#   sync-failed     a job finished with failed bottles (EMF BottlesFailed > 0)
#   lambda-errors   an enqueue or sync invocation raised
#   no-recent-sync  no successful job for 8 days (composite, see below)
#   queue-stuck     a job waits in the queue and no task takes it (bad image, missing role)
#   job-too-long    a daemon job has run longer than max_job_hours (EMF JobRunningSeconds)
#   stalled-runs    runs stored nothing while the catalog changed (EMF StalledRun)
#
# Every alarm, and its return to OK, goes to the topic; the alarm Lambda posts it to
# Slack with its runbook anchor (docs/operations.md#alarm-<name without the prefix>).

data "aws_region" "current" {}

locals {
  success_metric = "SyncSucceeded"
  actions        = [var.topic_arn]
}

# --- successes, counted from the logs ------------------------------------------
# A complete job logs its EMF record with BottlesFailed = 0 and BottlesRemaining = 0;
# an enqueue that found nothing new logs "nothing_to_do". Both count as a success.

resource "aws_cloudwatch_log_metric_filter" "job_complete" {
  for_each = { sync = var.log_group_names.sync, daemon = var.log_group_names.daemon }

  name           = "${var.name}-${each.key}-job-complete"
  log_group_name = each.value
  pattern        = "{ ($.event = \"metrics\") && ($.BottlesFailed = 0) && ($.BottlesRemaining = 0) }"

  metric_transformation {
    namespace = var.namespace
    name      = local.success_metric
    value     = "1"
    unit      = "Count"
  }
}

resource "aws_cloudwatch_log_metric_filter" "nothing_to_do" {
  name           = "${var.name}-enqueue-nothing-to-do"
  log_group_name = var.log_group_names.enqueue
  pattern        = "{ $.event = \"nothing_to_do\" }"

  metric_transformation {
    namespace = var.namespace
    name      = local.success_metric
    value     = "1"
    unit      = "Count"
  }
}

# --- the alarms --------------------------------------------------------------------

resource "aws_cloudwatch_metric_alarm" "dlq_not_empty" {
  alarm_name          = "${var.name}-dlq-not-empty"
  alarm_description   = "A message is in ${var.dlq_name}: a job failed on every receive or a sync Lambda invocation failed every attempt. Read the logs, fix, then redrive it to ${var.queue_name}."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = var.dlq_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "schedule_dlq_not_empty" {
  alarm_name          = "${var.name}-schedule-dlq-not-empty"
  alarm_description   = "A message is in ${var.schedule_dlq_name}: EventBridge could not deliver the schedule's event to the enqueue Lambda (function missing, permission missing, throttled past the retries). Its attributes name the error; fix it, then invoke the enqueue Lambda with {\"source\": \"manual\"} and purge the queue."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = var.schedule_dlq_name }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "sync_failed" {
  alarm_name          = "${var.name}-sync-failed"
  alarm_description   = "A mirrord job finished with failed bottles (EMF BottlesFailed > 0). The Slack failure message and the logs name them."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions

  metric_query {
    id          = "failed"
    expression  = join(" + ", [for i, _ in var.routes : "FILL(r${i}, 0)"])
    label       = "Bottles failed"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = var.routes
    content {
      id = "r${metric_query.key}"
      metric {
        namespace   = var.namespace
        metric_name = "BottlesFailed"
        dimensions  = { Route = metric_query.value }
        stat        = "Sum"
        period      = 3600
      }
    }
  }

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "lambda_errors" {
  alarm_name          = "${var.name}-lambda-errors"
  alarm_description   = "The enqueue or the sync Lambda raised. A failed enqueue is also published to the topic with its error; a failed sync lands in ${var.dlq_name}."
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions

  metric_query {
    id          = "errors"
    expression  = "FILL(enqueue, 0) + FILL(sync, 0)"
    label       = "Lambda errors"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = { enqueue = var.enqueue_function_name, sync = var.sync_function_name }
    content {
      id = metric_query.key
      metric {
        namespace   = "AWS/Lambda"
        metric_name = "Errors"
        dimensions  = { FunctionName = metric_query.value }
        stat        = "Sum"
        period      = 300
      }
    }
  }

  tags = var.tags
}

# "No successful sync in 8 days." CloudWatch evaluates 7 days at most, and a weekly
# job finishing a little later than last week's would trip a plain 7-day window every
# week. So the alarm is the conjunction of two: no success in the last 7 days AND no
# enqueue invocation in the last day. When this week's run is under way (or its
# enqueue failed) the second holds the alarm back for one more day: 8 days in all.
# A broken schedule (no enqueue at all) alarms after 7.

resource "aws_cloudwatch_metric_alarm" "no_success_window" {
  alarm_name          = "${var.name}-no-success-${var.success_window_days}d"
  alarm_description   = "Part of ${var.name}-no-recent-sync: no complete job or 'nothing to do' enqueue in ${var.success_window_days} days. No actions of its own."
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  evaluation_periods  = 1
  treat_missing_data  = "breaching"

  metric_query {
    id          = "successes"
    expression  = "FILL(s, 0)"
    label       = "Successful jobs in ${var.success_window_days} days"
    return_data = true
  }

  metric_query {
    id = "s"
    metric {
      namespace   = var.namespace
      metric_name = local.success_metric
      stat        = "Sum"
      period      = var.success_window_days * 86400
    }
  }

  tags = var.tags
}

resource "aws_cloudwatch_metric_alarm" "enqueue_idle" {
  alarm_name          = "${var.name}-enqueue-idle-1d"
  alarm_description   = "Part of ${var.name}-no-recent-sync: the enqueue Lambda was not invoked in the last day. No actions of its own."
  comparison_operator = "LessThanThreshold"
  threshold           = 1
  evaluation_periods  = 1
  treat_missing_data  = "breaching"

  metric_query {
    id          = "invocations"
    expression  = "FILL(i, 0)"
    label       = "Enqueue invocations in a day"
    return_data = true
  }

  metric_query {
    id = "i"
    metric {
      namespace   = "AWS/Lambda"
      metric_name = "Invocations"
      dimensions  = { FunctionName = var.enqueue_function_name }
      stat        = "Sum"
      period      = 86400
    }
  }

  tags = var.tags
}

resource "aws_cloudwatch_composite_alarm" "no_recent_sync" {
  alarm_name        = "${var.name}-no-recent-sync"
  alarm_description = "No successful mirrord sync for ${var.success_window_days + 1} days (and no run under way). Check the schedule, the enqueue Lambda's logs and status.json's last_success."
  alarm_rule        = "ALARM(\"${aws_cloudwatch_metric_alarm.no_success_window.alarm_name}\") AND ALARM(\"${aws_cloudwatch_metric_alarm.enqueue_idle.alarm_name}\")"
  alarm_actions     = local.actions
  ok_actions        = local.actions

  tags = var.tags
}

# "A job waits but no task takes it." ApproximateAgeOfOldestMessage alone counts the
# message a running job keeps in flight (hours, for a first sync), so the age counts
# only while a message is visible, i.e. not taken. A healthy start takes minutes: the
# wake alarm's 1-minute period (modules/ecs/autoscaling.tf) and SQS's 1-minute metrics,
# the 60 s scaling cooldown, the Fargate launch and image pull (1-3 min), then a 20 s
# long poll: under 10 minutes. queue_age_threshold_seconds (30 min, 3x that) held for
# 3 periods of 5 minutes fires within about 45 minutes of a job nobody takes, instead
# of the 8 days of no-recent-sync.
resource "aws_cloudwatch_metric_alarm" "queue_stuck" {
  alarm_name          = "${var.name}-queue-stuck"
  alarm_description   = "A job has waited over ${var.queue_age_threshold_seconds} s in ${var.queue_name} and no task takes it: the daemon cannot start (bad image, missing role, no capacity) or is not running. Check the ECS service's events and stopped tasks."
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.queue_age_threshold_seconds
  evaluation_periods  = 3
  datapoints_to_alarm = 3
  treat_missing_data  = "notBreaching" # SQS stops reporting an idle queue
  alarm_actions       = local.actions
  ok_actions          = local.actions

  metric_query {
    id          = "waiting"
    expression  = "IF(FILL(visible, 0) >= 1, FILL(age, 0), 0)"
    label       = "Age of the oldest job while one is waiting (s)"
    return_data = true
  }

  metric_query {
    id = "visible"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateNumberOfMessagesVisible"
      dimensions  = { QueueName = var.queue_name }
      stat        = "Minimum"
      period      = 300
    }
  }

  metric_query {
    id = "age"
    metric {
      namespace   = "AWS/SQS"
      metric_name = "ApproximateAgeOfOldestMessage"
      dimensions  = { QueueName = var.queue_name }
      stat        = "Maximum"
      period      = 300
    }
  }

  tags = var.tags
}

# The daemon logs JobRunningSeconds (EMF, Route=fargate) every heartbeat while it holds
# a job (mirrord/daemon.py). A sync Lambda cannot outlive its timeout; a daemon job can.
resource "aws_cloudwatch_metric_alarm" "job_too_long" {
  alarm_name          = "${var.name}-job-too-long"
  alarm_description   = "A daemon job has run over ${var.max_job_hours} h (EMF JobRunningSeconds): a stalled transfer, a hung upstream, or a first sync larger than expected. Check its Slack progress and the daemon's logs."
  namespace           = var.namespace
  metric_name         = "JobRunningSeconds"
  dimensions          = { Route = "fargate" }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.max_job_hours * 3600
  treat_missing_data  = "notBreaching" # no job running
  alarm_actions       = local.actions
  ok_actions          = local.actions

  tags = var.tags
}

# Every finished run logs StalledRun = 1 when its plan had bottles (the catalog changed
# since the mirror was last complete) and it stored none (mirrord/core/report.py emf).
# A week's job runs several times when it stalls: the sync Lambda's retry and hand-off,
# the daemon's receives and hand-backs. stalled_runs of them within a day is a job that
# goes round without progress. A stall that recurs once a week is no success either, so
# no-recent-sync covers it.
resource "aws_cloudwatch_metric_alarm" "stalled_runs" {
  alarm_name          = "${var.name}-stalled-runs"
  alarm_description   = "${var.stalled_runs} or more runs in a day stored no bottle although the catalog had new ones (EMF StalledRun): the job is retried or handed on without progress. Read the runs' logs and Slack failure messages."
  comparison_operator = "GreaterThanOrEqualToThreshold"
  threshold           = var.stalled_runs
  evaluation_periods  = 1
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions

  metric_query {
    id          = "stalled"
    expression  = join(" + ", [for i, _ in var.routes : "FILL(st${i}, 0)"])
    label       = "Runs that stored nothing while the catalog changed"
    return_data = true
  }

  dynamic "metric_query" {
    for_each = var.routes
    content {
      id = "st${metric_query.key}"
      metric {
        namespace   = var.namespace
        metric_name = "StalledRun"
        dimensions  = { Route = metric_query.value }
        stat        = "Sum"
        period      = 86400
      }
    }
  }

  tags = var.tags
}
