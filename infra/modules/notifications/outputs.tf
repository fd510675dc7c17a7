output "slack_secret_arn" {
  description = "ARN of the Slack webhook secret (MIRRORD_SLACK_SECRET_ID); put the URL in it."
  value       = aws_secretsmanager_secret.this.arn
}

output "slack_secret_name" {
  description = "Name of the Slack webhook secret."
  value       = aws_secretsmanager_secret.this.name
}

output "topic_arn" {
  description = "ARN of the alarm topic."
  value       = aws_sns_topic.this.arn
}

output "topic_name" {
  description = "Name of the alarm topic."
  value       = aws_sns_topic.this.name
}

output "budget_name" {
  description = "Name of the monthly budget, or null when monthly_budget_usd is null."
  value       = one(aws_budgets_budget.this[*].name)
}
