output "dashboard_name" {
  description = "Name of the CloudWatch dashboard."
  value       = aws_cloudwatch_dashboard.this.dashboard_name
}

output "alarm_names" {
  description = "The alarms that notify the topic, by purpose."
  value = {
    dlq_not_empty          = aws_cloudwatch_metric_alarm.dlq_not_empty.alarm_name
    schedule_dlq_not_empty = aws_cloudwatch_metric_alarm.schedule_dlq_not_empty.alarm_name
    sync_failed            = aws_cloudwatch_metric_alarm.sync_failed.alarm_name
    lambda_errors          = aws_cloudwatch_metric_alarm.lambda_errors.alarm_name
    no_recent_sync         = aws_cloudwatch_composite_alarm.no_recent_sync.alarm_name
    queue_stuck            = aws_cloudwatch_metric_alarm.queue_stuck.alarm_name
    job_too_long           = aws_cloudwatch_metric_alarm.job_too_long.alarm_name
    stalled_runs           = aws_cloudwatch_metric_alarm.stalled_runs.alarm_name
  }
}

output "success_metric" {
  description = "Namespace and name of the metric counting successful jobs (from the log metric filters)."
  value       = { namespace = var.namespace, name = local.success_metric }
}
