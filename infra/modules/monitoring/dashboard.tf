locals {
  region = data.aws_region.current.name

  route_metrics = {
    for metric in ["BytesDownloaded", "BottlesDownloaded", "BottlesFailed", "BottlesRemaining", "DurationSeconds", "EstimateErrorPercent"] :
    metric => [for r in var.routes : [var.namespace, metric, "Route", r]]
  }

  widgets = [
    {
      type = "metric", x = 0, y = 0, width = 12, height = 6
      properties = {
        title = "Bytes downloaded per day", region = local.region, view = "timeSeries", stacked = true
        stat  = "Sum", period = 86400, metrics = local.route_metrics.BytesDownloaded
      }
    },
    {
      type = "metric", x = 12, y = 0, width = 12, height = 6
      properties = {
        title   = "Bottles per day", region = local.region, view = "timeSeries", stat = "Sum", period = 86400
        metrics = concat(local.route_metrics.BottlesDownloaded, local.route_metrics.BottlesRemaining)
      }
    },
    {
      type = "metric", x = 0, y = 6, width = 8, height = 6
      properties = {
        title = "Job duration (s)", region = local.region, view = "timeSeries"
        stat  = "Maximum", period = 86400, metrics = local.route_metrics.DurationSeconds
      }
    },
    {
      type = "metric", x = 8, y = 6, width = 8, height = 6
      properties = {
        title = "Failures", region = local.region, view = "timeSeries", stat = "Sum", period = 86400
        metrics = concat(local.route_metrics.BottlesFailed, [
          ["AWS/Lambda", "Errors", "FunctionName", var.enqueue_function_name],
          ["AWS/Lambda", "Errors", "FunctionName", var.sync_function_name],
        ])
      }
    },
    {
      type = "metric", x = 16, y = 6, width = 8, height = 6
      properties = {
        title = "Estimate error (%)", region = local.region, view = "timeSeries"
        stat  = "Average", period = 86400, metrics = local.route_metrics.EstimateErrorPercent
      }
    },
    {
      type = "metric", x = 0, y = 12, width = 12, height = 6
      properties = {
        title = "Queue depth", region = local.region, view = "timeSeries", stat = "Maximum", period = 300
        metrics = [
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.queue_name, { label = "waiting" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesNotVisible", "QueueName", var.queue_name, { label = "in flight" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.dlq_name, { label = "dead letters" }],
          ["AWS/SQS", "ApproximateNumberOfMessagesVisible", "QueueName", var.schedule_dlq_name, { label = "undelivered schedule events" }],
        ]
      }
    },
    {
      type = "metric", x = 12, y = 12, width = 12, height = 6
      properties = {
        title = "Daemon tasks and successful jobs", region = local.region, view = "timeSeries", period = 3600
        metrics = [
          ["ECS/ContainerInsights", "RunningTaskCount", "ClusterName", var.cluster_name, "ServiceName", var.service_name, { stat = "Maximum", label = "running tasks" }],
          [var.namespace, local.success_metric, { stat = "Sum", label = "successful jobs" }],
        ]
      }
    },
    {
      type = "alarm", x = 0, y = 18, width = 24, height = 3
      properties = {
        title = "Alarms"
        alarms = [
          aws_cloudwatch_metric_alarm.dlq_not_empty.arn,
          aws_cloudwatch_metric_alarm.schedule_dlq_not_empty.arn,
          aws_cloudwatch_metric_alarm.sync_failed.arn,
          aws_cloudwatch_metric_alarm.lambda_errors.arn,
          aws_cloudwatch_composite_alarm.no_recent_sync.arn,
          aws_cloudwatch_metric_alarm.queue_stuck.arn,
          aws_cloudwatch_metric_alarm.job_too_long.arn,
          aws_cloudwatch_metric_alarm.stalled_runs.arn,
        ]
      }
    },
  ]
}

resource "aws_cloudwatch_dashboard" "this" {
  dashboard_name = var.name
  dashboard_body = jsonencode({ start = "-P12W", periodOverride = "inherit", widgets = local.widgets })
}
