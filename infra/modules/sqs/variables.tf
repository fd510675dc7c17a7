variable "name" {
  description = "Name of the job queue; the dead-letter queue is named <name>-dlq."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,76}$", var.name))
    error_message = "name: letters, digits, dashes and underscores, at most 76 characters (so <name>-dlq fits SQS's 80)."
  }
}

variable "heartbeat_seconds" {
  description = "The daemon's MIRRORD_HEARTBEAT_SECONDS. The daemon keeps a message invisible for 3 heartbeats, so the queue's visibility timeout is set to the same 3 heartbeats: a message whose task died comes back after that."
  type        = number
  default     = 60

  validation {
    condition     = var.heartbeat_seconds >= 1 && var.heartbeat_seconds * 3 <= 43200
    error_message = "heartbeat_seconds: at least 1, and 3 heartbeats within SQS's 12-hour visibility limit."
  }
}

variable "max_receive_count" {
  description = "Receives before a message moves to the dead-letter queue."
  type        = number
  default     = 3

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count: 1 to 1000."
  }
}

variable "message_retention_seconds" {
  description = "How long a job waits in the queue. A weekly job that waited longer is stale anyway."
  type        = number
  default     = 345600 # 4 days

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds: 60 to 1209600 (14 days)."
  }
}

variable "kms_key_arn" {
  description = "KMS key for both queues. null: SQS-managed encryption (SSE-SQS)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
