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
