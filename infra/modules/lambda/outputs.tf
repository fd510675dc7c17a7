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

output "log_group_names" {
  description = "Log groups of the two functions, by purpose."
  value       = { for k, g in aws_cloudwatch_log_group.this : k => g.name }
}
