output "bucket_name" {
  description = "The mirror's bucket (MIRRORD_BUCKET)."
  value       = module.s3.bucket_id
}

output "bucket_arn" {
  description = "ARN of the mirror's bucket."
  value       = module.s3.bucket_arn
}

output "queue_url" {
  description = "The job queue (MIRRORD_QUEUE_URL)."
  value       = module.sqs.queue_url
}

output "dlq_url" {
  description = "The dead-letter queue: failed jobs and failed sync invocations, ready to redrive."
  value       = module.sqs.dlq_url
}

output "enqueue_function_name" {
  description = "The enqueue Lambda; invoke it with {\"source\": \"manual\"} for an unscheduled run."
  value       = module.lambda.enqueue_function_name
}

output "sync_function_name" {
  description = "The sync Lambda."
  value       = module.lambda.sync_function_name
}

output "cluster_name" {
  description = "The daemon's ECS cluster."
  value       = module.ecs.cluster_name
}

output "service_name" {
  description = "The daemon's ECS service (desired count 0 at rest)."
  value       = module.ecs.service_name
}

output "task_definition_arn" {
  description = "The daemon's task definition."
  value       = module.ecs.task_definition_arn
}

output "log_group_names" {
  description = "Where the logs are: enqueue, sync, alarm and daemon."
  value = {
    enqueue = module.lambda.log_group_names.enqueue
    sync    = module.lambda.log_group_names.sync
    alarm   = module.lambda.log_group_names.alarm
    daemon  = module.ecs.log_group_name
  }
}

output "slack_secret_arn" {
  description = "Put the Slack webhook URL in this secret (aws secretsmanager put-secret-value)."
  value       = module.notifications.slack_secret_arn
}

output "alarm_topic_arn" {
  description = "SNS topic of the alarms, failed enqueues and budget alerts; the alarm Lambda posts each to Slack."
  value       = module.notifications.topic_arn
}

output "alarm_function_name" {
  description = "The alarm Lambda: subscribed to the alarm topic, posts every message to Slack."
  value       = module.lambda.alarm_function_name
}

output "budget_name" {
  description = "The monthly AWS budget (null without monthly_budget_usd)."
  value       = module.notifications.budget_name
}

output "schedule_rule_name" {
  description = "The EventBridge rule that starts the weekly sync."
  value       = module.eventbridge.rule_name
}

output "vpc_id" {
  description = "The daemon's VPC."
  value       = module.network.vpc_id
}

output "dashboard_name" {
  description = "The CloudWatch dashboard (null without monitoring)."
  value       = one(module.monitoring[*].dashboard_name)
}

output "alarm_names" {
  description = "The alarms that notify the topic (empty without monitoring)."
  value       = try(module.monitoring[0].alarm_names, {})
}

output "mirror_url" {
  description = "HOMEBREW_ARTIFACT_DOMAIN for users (HOMEBREW_API_DOMAIN is this plus /api): https://<mirror_domain>, or the *.cloudfront.net domain; null without CloudFront."
  value       = one(module.cdn[*].url)
}

output "schedule_enabled" {
  description = "Whether the schedule fires (schedule_enabled in config.yaml)."
  value       = module.eventbridge.enabled
}

output "schedule_dlq_url" {
  description = "The schedule's dead-letter queue: events EventBridge could not deliver to the enqueue Lambda."
  value       = module.eventbridge.dlq_url
}

output "mirror_domain_name" {
  description = "The distribution's own domain (*.cloudfront.net): the CNAME target of mirror_domain when its DNS is not in Route 53 here; null without CloudFront."
  value       = one(module.cdn[*].domain_name)
}

output "kms_key_policy_statements" {
  description = "With kms_key_arn and brew_mirror: the statements to add to that key's policy so CloudFront (this distribution only) can decrypt the bucket's objects. Empty otherwise."
  value       = flatten(module.cdn[*].kms_key_policy_statements) # not try(): it hides the known parts while the ARN is unknown
}
