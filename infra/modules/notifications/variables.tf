variable "name" {
  description = "Name of the SNS topic (<name>-alarms) and prefix of the secret (<name>/slack-webhook)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,200}$", var.name))
    error_message = "name: letters, digits, dashes and underscores."
  }
}

variable "alarm_emails" {
  description = "Addresses subscribed to the alarm topic; each must confirm the subscription mail."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for e in var.alarm_emails : can(regex("^[^@\\s]+@[^@\\s]+\\.[^@\\s]+$", e))])
    error_message = "alarm_emails: every entry must be an e-mail address."
  }
}

variable "kms_key_arn" {
  description = "KMS key for the secret and the topic. null: the AWS-managed Secrets Manager key and an unencrypted topic (alarm texts only)."
  type        = string
  default     = null
}

variable "secret_recovery_window_days" {
  description = "Days a deleted secret can be restored (0 deletes it at once)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days: 0, or 7 to 30."
  }
}

variable "monthly_budget_usd" {
  description = "Monthly cost budget of the account in USD: 80 % spent or 100 % forecast notifies the alarm topic. null: no budget."
  type        = number
  default     = null

  validation {
    condition     = var.monthly_budget_usd == null || try(var.monthly_budget_usd > 0, false)
    error_message = "monthly_budget_usd: a positive amount in USD, or null for no budget."
  }
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
