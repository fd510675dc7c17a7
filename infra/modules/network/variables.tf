variable "name" {
  description = "Name given to the VPC and prefixed to its parts."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,40}$", var.name))
    error_message = "name: lower-case letters, digits and dashes, 2-41 characters, starting with a letter."
  }
}

variable "cidr_block" {
  description = "IPv4 range of the VPC; each subnet takes a /24 of it."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrnetmask(var.cidr_block)) && tonumber(split("/", var.cidr_block)[1]) <= 20
    error_message = "cidr_block: an IPv4 CIDR of /20 or larger."
  }
}

variable "az_count" {
  description = "Availability zones to spread the subnets over (Fargate picks one per task)."
  type        = number
  default     = 2

  validation {
    condition     = var.az_count >= 1 && var.az_count <= 4 && floor(var.az_count) == var.az_count
    error_message = "az_count: a whole number from 1 to 4."
  }
}

variable "use_nat_gateway" {
  description = "false (default): tasks run in public subnets with a public IP and an egress-only security group, at no fixed cost. true: private subnets behind one NAT gateway (about 33 USD a month before traffic)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags added to every resource of the module."
  type        = map(string)
  default     = {}
}
