variable "enqueue_function_name" {
  description = "Name of the enqueue Lambda (handler mirrord.lambdas.enqueue.handler)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,64}$", var.enqueue_function_name))
    error_message = "enqueue_function_name: 1-64 letters, digits, dashes or underscores."
  }
}

variable "sync_function_name" {
  description = "Name of the sync Lambda (handler mirrord.lambdas.sync.handler)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,64}$", var.sync_function_name))
    error_message = "sync_function_name: 1-64 letters, digits, dashes or underscores."
  }
}

variable "alarm_function_name" {
  description = "Name of the alarm Lambda (handler mirrord.lambdas.alarm.handler): the alarm topic to Slack."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,64}$", var.alarm_function_name))
    error_message = "alarm_function_name: 1-64 letters, digits, dashes or underscores."
  }
}

variable "alarm_role_arn" {
  description = "Execution role of the alarm Lambda (read the Slack secret, write its logs)."
  type        = string
}

variable "alarm_topic_arn" {
  description = "SNS topic the alarm Lambda is subscribed to (every alarm, the enqueue's failures, budget alerts)."
  type        = string
}

variable "package_path" {
  description = "Path of the deployment zip holding the mirrord package and its dependencies; every function uses it."
  type        = string

  validation {
    condition     = endswith(var.package_path, ".zip")
    error_message = "package_path: a .zip file."
  }
}

variable "runtime" {
  description = "Lambda runtime of the functions: the Python the zip's wheels were built for (make package, LAMBDA_PYTHON) and the image's (docker/Dockerfile)."
  type        = string
  default     = "python3.13"

  # python3.11 is deprecated by AWS (2026-06-30; no updates from 2026-08-31). A newer
  # runtime needs a zip built for it: make package LAMBDA_PYTHON=3.14.
  validation {
    condition     = can(regex("^python3\\.(1[3-9])$", var.runtime))
    error_message = "runtime: python3.13 or newer (python3.11 is deprecated; the zip's compiled wheels must match it)."
  }
}

variable "architecture" {
  description = "Instruction set the zip's compiled wheels (orjson, aiohttp, uvloop) were built for: make package LAMBDA_PLATFORM=manylinux2014_x86_64 (the default) or manylinux2014_aarch64 for arm64."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture: x86_64 or arm64."
  }
}

variable "enqueue_role_arn" {
  description = "Execution role of the enqueue Lambda."
  type        = string
}

variable "sync_role_arn" {
  description = "Execution role of the sync Lambda."
  type        = string
}

variable "environment" {
  description = "MIRRORD_* variables shared by the enqueue and sync functions (bucket, queue, platforms, tuning, Slack secret, environment name); the alarm function gets MIRRORD_SLACK_SECRET_ID, MIRRORD_ENVIRONMENT and MIRRORD_LOG_LEVEL of them."
  type        = map(string)
}

variable "lambda_margin_seconds" {
  description = "MIRRORD_LAMBDA_MARGIN_SECONDS of the sync Lambda: it stops starting transfers and hands the job to SQS when less time is left."
  type        = number
  default     = 120
}

variable "sync_timeout" {
  description = "Timeout of the sync Lambda in seconds (it hands off lambda_margin_seconds before)."
  type        = number
  default     = 900

  validation {
    condition     = var.sync_timeout >= 300 && var.sync_timeout <= 900
    error_message = "sync_timeout: 300 to 900 seconds."
  }
}

variable "sync_memory_size" {
  description = "Memory of the sync Lambda in MB; a sync holds about concurrency x 3 x part size, and CPU and network scale with it."
  type        = number
  default     = 2048

  validation {
    condition     = var.sync_memory_size >= 512 && var.sync_memory_size <= 10240
    error_message = "sync_memory_size: 512 to 10240 MB."
  }
}

variable "enqueue_timeout" {
  description = "Timeout of the enqueue Lambda in seconds (catalog, hash file, one image index per new formula version)."
  type        = number
  default     = 300

  validation {
    condition     = var.enqueue_timeout >= 30 && var.enqueue_timeout <= 900
    error_message = "enqueue_timeout: 30 to 900 seconds."
  }
}

variable "enqueue_memory_size" {
  description = "Memory of the enqueue Lambda in MB (it parses the whole formula.json)."
  type        = number
  default     = 1024

  validation {
    condition     = var.enqueue_memory_size >= 256 && var.enqueue_memory_size <= 10240
    error_message = "enqueue_memory_size: 256 to 10240 MB."
  }
}

variable "sync_dead_letter_arn" {
  description = "Where a sync invocation that failed every attempt goes, as the job message itself: the job queue's DLQ, from which it can be redriven to the daemon."
  type        = string
}

variable "enqueue_failure_destination_arn" {
  description = "SNS topic (or SQS queue) that receives the record of an enqueue invocation that failed every attempt, error included."
  type        = string
}

variable "log_retention_days" {
  description = "Retention of the functions' log groups."
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "KMS key for the log groups and the functions' environment. null: AWS-managed keys."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
