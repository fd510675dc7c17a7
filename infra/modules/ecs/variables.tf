variable "name" {
  description = "Name of the cluster, task family, service and container log group (/ecs/<name>)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_-]{1,200}$", var.name))
    error_message = "name: letters, digits, dashes and underscores."
  }
}

variable "image_uri" {
  description = "The daemon's container image (docker/Dockerfile), by tag or digest."
  type        = string

  validation {
    condition     = length(var.image_uri) > 0 && !can(regex("\\s", var.image_uri))
    error_message = "image_uri: a non-empty image reference without spaces."
  }
}

variable "cpu" {
  description = "Task CPU units (1024 = 1 vCPU)."
  type        = number
  default     = 2048

  validation {
    condition     = contains([256, 512, 1024, 2048, 4096, 8192, 16384], var.cpu)
    error_message = "cpu: one of Fargate's sizes 256, 512, 1024, 2048, 4096, 8192, 16384."
  }
}

variable "memory" {
  description = "Task memory in MiB; it must be a combination Fargate offers for cpu."
  type        = number
  default     = 8192

  validation {
    condition     = var.memory >= 512 && var.memory <= 122880 && var.memory % 512 == 0
    error_message = "memory: 512 to 122880 MiB, in steps of 512."
  }
}

variable "cpu_architecture" {
  description = "CPU architecture of the image: X86_64 or ARM64."
  type        = string
  default     = "X86_64"

  validation {
    condition     = contains(["X86_64", "ARM64"], var.cpu_architecture)
    error_message = "cpu_architecture: X86_64 or ARM64."
  }
}

variable "container_user" {
  description = "User the container runs as (the image's non-root mirrord user)."
  type        = string
  default     = "10001"

  validation {
    condition     = !contains(["0", "root", "0:0", "root:root"], var.container_user)
    error_message = "container_user: the daemon must not run as root."
  }
}

variable "stop_timeout" {
  description = "Seconds between SIGTERM and SIGKILL (Fargate allows 120 at most). MIRRORD_STOP_GRACE must leave time to checkpoint and hand the message back within it."
  type        = number
  default     = 120

  validation {
    condition     = var.stop_timeout >= 2 && var.stop_timeout <= 120
    error_message = "stop_timeout: 2 to 120 seconds."
  }
}

variable "stop_grace" {
  description = "MIRRORD_STOP_GRACE: seconds in-flight transfers get after SIGTERM."
  type        = number
  default     = 90
}

variable "heartbeat_seconds" {
  description = "MIRRORD_HEARTBEAT_SECONDS: the daemon's heartbeat (message visibility is 3 heartbeats)."
  type        = number
  default     = 60
}

variable "health_file" {
  description = "MIRRORD_HEALTH_FILE: touched every heartbeat, checked by `mirrord health`. Must be under /tmp, the task's only writable path."
  type        = string
  default     = "/tmp/mirrord-healthy"

  validation {
    condition     = startswith(var.health_file, "/tmp/")
    error_message = "health_file: a path under /tmp (the root filesystem is read-only)."
  }
}

variable "environment" {
  description = "MIRRORD_* variables shared with the Lambdas (bucket, queue, platforms, tuning, Slack secret)."
  type        = map(string)
}

variable "task_role_arn" {
  description = "Role the daemon's code runs with."
  type        = string
}

variable "execution_role_arn" {
  description = "Role ECS uses to pull the image and ship logs."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets the tasks run in."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) > 0
    error_message = "subnet_ids: at least one subnet."
  }
}

variable "security_group_ids" {
  description = "Security groups of the tasks (egress only)."
  type        = list(string)
}

variable "assign_public_ip" {
  description = "Give each task a public IP (public subnets without a NAT gateway)."
  type        = bool
  default     = false
}

variable "log_retention_days" {
  description = "Retention of the container's log group."
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "KMS key for the log group. null: CloudWatch Logs' own encryption."
  type        = string
  default     = null
}

variable "queue_name" {
  description = "Name of the job queue whose messages wake the service."
  type        = string
}

variable "enable_autoscaling" {
  description = "Scale the service on the job queue: while a message is visible, one task per message visible or in flight (at most max_tasks), 0 once the queue (visible and in flight) has been empty for scale_in_minutes. Without it the service stays at desired count 0 and must be scaled by hand."
  type        = bool
  default     = true
}

variable "max_tasks" {
  description = "Most tasks the queue may wake: one per message waiting or in flight (a task runs one message at a time), up to this. 1 for whole jobs (a second would wait on the bucket lock); more for a job sent as shards."
  type        = number
  default     = 1

  validation {
    condition     = var.max_tasks >= 1 && var.max_tasks <= 16 && floor(var.max_tasks) == var.max_tasks
    error_message = "max_tasks: a whole number from 1 to 16."
  }
}

variable "scale_in_minutes" {
  description = "Minutes the queue must stay empty (no visible and no in-flight message) before the service goes back to 0."
  type        = number
  default     = 15

  validation {
    condition     = var.scale_in_minutes >= 5 && var.scale_in_minutes % 5 == 0 && var.scale_in_minutes <= 1440
    error_message = "scale_in_minutes: a multiple of 5, from 5 to 1440."
  }
}

variable "container_insights" {
  description = "Enable CloudWatch Container Insights on the cluster (metrics only while a task runs)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
