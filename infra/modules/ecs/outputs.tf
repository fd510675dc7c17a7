output "cluster_name" {
  description = "Name of the ECS cluster."
  value       = aws_ecs_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the ECS cluster."
  value       = aws_ecs_cluster.this.arn
}

output "service_name" {
  description = "Name of the daemon's ECS service."
  value       = aws_ecs_service.this.name
}

output "task_definition_arn" {
  description = "ARN of the daemon's task definition (with revision)."
  value       = aws_ecs_task_definition.this.arn
}

output "log_group_name" {
  description = "Log group of the daemon's container."
  value       = aws_cloudwatch_log_group.this.name
}

output "autoscaling_enabled" {
  description = "Whether the queue scales the service."
  value       = var.enable_autoscaling
}
