output "enqueue_function_name" {
  description = "Name of the enqueue Lambda."
  value       = aws_lambda_function.enqueue.function_name
}

output "enqueue_function_arn" {
  description = "ARN of the enqueue Lambda."
  value       = aws_lambda_function.enqueue.arn
}

output "sync_function_name" {
  description = "Name of the sync Lambda (MIRRORD_SYNC_FUNCTION of the enqueue Lambda)."
  value       = aws_lambda_function.sync.function_name
}

output "sync_function_arn" {
  description = "ARN of the sync Lambda."
  value       = aws_lambda_function.sync.arn
}

output "alarm_function_name" {
  description = "Name of the alarm Lambda (the alarm topic to Slack)."
  value       = aws_lambda_function.alarm.function_name
}

output "alarm_subscription_arn" {
  description = "ARN of the alarm Lambda's subscription to the alarm topic."
  value       = aws_sns_topic_subscription.alarm.arn
}

output "log_group_names" {
  description = "Log groups of the three functions, by purpose."
  value       = { for k, g in aws_cloudwatch_log_group.this : k => g.name }
}
