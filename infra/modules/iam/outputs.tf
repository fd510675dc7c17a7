output "enqueue_role_arn" {
  description = "ARN of the enqueue Lambda's role."
  value       = aws_iam_role.enqueue.arn

  # Consumers (Lambda checks its dead-letter target) need the permissions, not just the role.
  depends_on = [aws_iam_role_policy.enqueue]
}

output "sync_role_arn" {
  description = "ARN of the sync Lambda's role."
  value       = aws_iam_role.sync.arn

  # Consumers (Lambda checks its dead-letter target) need the permissions, not just the role.
  depends_on = [aws_iam_role_policy.sync]
}

output "task_role_arn" {
  description = "ARN of the daemon's task role."
  value       = aws_iam_role.task.arn

  # Consumers (Lambda checks its dead-letter target) need the permissions, not just the role.
  depends_on = [aws_iam_role_policy.task]
}

output "execution_role_arn" {
  description = "ARN of the ECS execution role."
  value       = aws_iam_role.execution.arn

  # Consumers (Lambda checks its dead-letter target) need the permissions, not just the role.
  depends_on = [aws_iam_role_policy.execution]
}

output "alarm_role_arn" {
  description = "ARN of the alarm Lambda's role."
  value       = aws_iam_role.alarm.arn

  depends_on = [aws_iam_role_policy.alarm]
}

output "role_names" {
  description = "Names of the five roles, by purpose."
  value = {
    enqueue   = aws_iam_role.enqueue.name
    sync      = aws_iam_role.sync.name
    task      = aws_iam_role.task.name
    execution = aws_iam_role.execution.name
    alarm     = aws_iam_role.alarm.name
  }
}
