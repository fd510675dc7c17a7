output "rule_name" {
  description = "Name of the schedule rule."
  value       = aws_cloudwatch_event_rule.this.name
}

output "rule_arn" {
  description = "ARN of the schedule rule."
  value       = aws_cloudwatch_event_rule.this.arn
}

output "schedule_expression" {
  description = "The schedule in force."
  value       = aws_cloudwatch_event_rule.this.schedule_expression
}

output "enabled" {
  description = "Whether the schedule fires."
  value       = aws_cloudwatch_event_rule.this.state == "ENABLED"
}

output "dlq_name" {
  description = "Name of the schedule's dead-letter queue (events EventBridge could not deliver)."
  value       = aws_sqs_queue.dlq.name
}

output "dlq_url" {
  description = "URL of the schedule's dead-letter queue."
  value       = aws_sqs_queue.dlq.url
}

output "dlq_arn" {
  description = "ARN of the schedule's dead-letter queue."
  value       = aws_sqs_queue.dlq.arn
}
