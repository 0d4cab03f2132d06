variable "release_name" {
  description = "Helm release name (also the chart's fullnameOverride: broker pods are <release_name>-N)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.release_name))
    error_message = "release_name must be a DNS-1123 label of at most 40 characters."
  }
}

variable "namespace" {
  description = "Namespace of the release (created if missing)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label."
  }
}

variable "chart_path" {
  description = "Path of the Sediment chart; defaults to the chart in this repository."
  type        = string
  default     = null
}

variable "values" {
  description = "Chart values computed by the config module (bucket, role, scheduling)."
  type        = any
}

variable "extra_values_yaml" {
  description = "Additional values (YAML documents) applied after the computed ones."
  type        = list(string)
  default     = []
}

variable "timeout_seconds" {
  description = "How long Helm waits for every broker to become ready."
  type        = number
  default     = 900

  validation {
    condition     = var.timeout_seconds >= 60
    error_message = "timeout_seconds must be at least 60."
  }
}
