variable "role_name" {
  description = "Name of the brokers' IAM role (from the config module)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,64}$", var.role_name))
    error_message = "role_name must be a valid IAM role name (at most 64 characters)."
  }
}

variable "trust_policy_json" {
  description = "IRSA trust policy (JSON) binding the role to the chart's ServiceAccount."
  type        = string

  validation {
    condition     = can(jsondecode(var.trust_policy_json).Statement[0].Condition.StringEquals)
    error_message = "trust_policy_json must be a trust policy with a StringEquals condition on the service account."
  }
}

variable "broker_policy_json" {
  description = "Least-privilege S3 (and KMS) policy of the brokers (JSON)."
  type        = string

  validation {
    condition     = can(jsondecode(var.broker_policy_json).Statement)
    error_message = "broker_policy_json must be an IAM policy document."
  }
}

variable "permissions_boundary_arn" {
  description = "Permissions boundary attached to the role, if the account requires one."
  type        = string
  default     = null
}

variable "max_session_duration" {
  description = "Maximum session duration of the role, in seconds."
  type        = number
  default     = 3600

  validation {
    condition     = var.max_session_duration >= 3600 && var.max_session_duration <= 43200
    error_message = "max_session_duration must be between 3600 and 43200 seconds."
  }
}

variable "tags" {
  description = "Tags for the role."
  type        = map(string)
  default     = {}
}
