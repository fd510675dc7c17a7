variable "name" {
  description = "Prefix of the role names: <name>-enqueue, <name>-sync, <name>-task, <name>-execution."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,50}$", var.name))
    error_message = "name: at most 50 characters valid in an IAM role name."
  }
}

variable "bucket_arn" {
  description = "ARN of the mirror's bucket."
  type        = string
}

variable "hash_key" {
  description = "Key of the hash file, the one object the enqueue Lambda reads."
  type        = string
  default     = "bottles_hash.json"
}

variable "queue_arn" {
  description = "ARN of the job queue."
  type        = string
}

variable "dlq_arn" {
  description = "ARN of the dead-letter queue (the sync Lambda's dead-letter target)."
  type        = string
}

variable "slack_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the Slack webhook."
  type        = string
}

variable "alarm_topic_arn" {
  description = "ARN of the SNS topic the enqueue Lambda's failed invocations go to."
  type        = string
}

variable "enqueue_function_name" {
  description = "Name of the enqueue Lambda (its log group is /aws/lambda/<name>)."
  type        = string
}

variable "sync_function_name" {
  description = "Name of the sync Lambda, which the enqueue Lambda invokes."
  type        = string
}

variable "alarm_function_name" {
  description = "Name of the alarm Lambda (its log group is /aws/lambda/<name>)."
  type        = string
}

variable "task_log_group_name" {
  description = "CloudWatch log group of the daemon's container."
  type        = string
}

variable "image_uri" {
  description = "The daemon's image. When it is in ECR, the execution role may pull from that repository only."
  type        = string
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key used by the bucket, queues, secret and logs; null when AWS-managed encryption is used."
  type        = string
  default     = null
}

variable "external_hash_url" {
  description = "MIRRORD_EXTERNAL_HASH_URL. When it is s3://BUCKET/KEY, the roles may read that one object."
  type        = string
  default     = null
}

variable "prune" {
  description = "The syncing roles prune (prune_after_sync): s3:DeleteObject on the bottle prefixes only."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
