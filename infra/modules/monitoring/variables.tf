variable "name" {
  description = "Prefix of the alarm and dashboard names."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,200}$", var.name))
    error_message = "name: letters, digits, dashes and underscores."
  }
}

variable "topic_arn" {
  description = "SNS topic that receives every alarm (and its return to OK)."
  type        = string
}

variable "namespace" {
  description = "CloudWatch namespace of mirrord's EMF metrics (dimension Route)."
  type        = string
  default     = "mirrord"
}

variable "routes" {
  description = "Values of the Route dimension the deployed jobs report: the sync Lambda and the daemon."
  type        = list(string)
  default     = ["lambda", "fargate"]
}

variable "queue_name" {
  description = "Name of the job queue."
  type        = string
}

variable "dlq_name" {
  description = "Name of the dead-letter queue."
  type        = string
}

variable "schedule_dlq_name" {
  description = "Name of the schedule's dead-letter queue (events EventBridge could not deliver)."
  type        = string
}

variable "enqueue_function_name" {
  description = "Name of the enqueue Lambda."
  type        = string
}

variable "sync_function_name" {
  description = "Name of the sync Lambda."
  type        = string
}

variable "log_group_names" {
  description = "Log groups of the enqueue Lambda, the sync Lambda and the daemon, keyed enqueue, sync and daemon."
  type        = map(string)

  validation {
    condition     = alltrue([for k in ["enqueue", "sync", "daemon"] : contains(keys(var.log_group_names), k)])
    error_message = "log_group_names: needs the keys enqueue, sync and daemon."
  }
}

variable "cluster_name" {
  description = "Name of the ECS cluster."
  type        = string
}

variable "service_name" {
  description = "Name of the daemon's ECS service."
  type        = string
}

variable "success_window_days" {
  description = "Days without a successful job (or a 'nothing to do' enqueue) before the staleness alarm may fire. CloudWatch evaluates 7 days at most."
  type        = number
  default     = 7

  validation {
    condition     = var.success_window_days >= 1 && var.success_window_days <= 7 && floor(var.success_window_days) == var.success_window_days
    error_message = "success_window_days: a whole number from 1 to 7 (CloudWatch's longest evaluation range)."
  }
}

variable "queue_age_threshold_seconds" {
  description = "queue-stuck: how old the oldest waiting job may get while none is taken. A healthy daemon start takes under 10 minutes (see main.tf)."
  type        = number
  default     = 1800

  validation {
    condition     = var.queue_age_threshold_seconds >= 600
    error_message = "queue_age_threshold_seconds: at least 600 (a daemon start takes minutes)."
  }
}

variable "max_job_hours" {
  description = "job-too-long: hours a daemon job may run before the alarm fires."
  type        = number
  default     = 12

  validation {
    condition     = var.max_job_hours >= 1 && var.max_job_hours <= 168
    error_message = "max_job_hours: 1 to 168."
  }
}

variable "stalled_runs" {
  description = "stalled-runs: runs in a day that stored nothing while the catalog changed before the alarm fires."
  type        = number
  default     = 3

  validation {
    condition     = var.stalled_runs >= 1 && floor(var.stalled_runs) == var.stalled_runs
    error_message = "stalled_runs: a whole number, at least 1."
  }
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
