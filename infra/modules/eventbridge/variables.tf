variable "name" {
  description = "Name of the schedule rule."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,64}$", var.name))
    error_message = "name: 1-64 letters, digits, dots, dashes or underscores."
  }
}

variable "schedule_expression" {
  description = "When the enqueue Lambda runs, as an EventBridge cron() or rate() expression (UTC)."
  type        = string
  default     = "cron(0 3 ? * SUN *)"

  validation {
    condition     = can(regex("^(cron\\([^)]+\\)|rate\\([1-9][0-9]* (minute|minutes|hour|hours|day|days)\\))$", var.schedule_expression))
    error_message = "schedule_expression: cron(...) with six fields or rate(N unit), e.g. cron(0 3 ? * SUN *)."
  }
}

variable "enabled" {
  description = "Whether the schedule fires (false: the rule stays, DISABLED)."
  type        = bool
  default     = true
}

variable "function_arn" {
  description = "ARN of the enqueue Lambda."
  type        = string
}

variable "function_name" {
  description = "Name of the enqueue Lambda (for the invoke permission)."
  type        = string
}

variable "kms_key_arn" {
  description = "KMS key of the schedule's dead-letter queue; null: SSE-SQS."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
