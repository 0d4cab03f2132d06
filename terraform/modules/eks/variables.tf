variable "cluster_name" {
  description = "Name of the EKS cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,99}$", var.cluster_name))
    error_message = "cluster_name must start with a letter and contain only letters, digits and hyphens (at most 100)."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes version of the control plane and nodes (the chart needs 1.29 or newer)."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.(29|[3-9][0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be 1.29 or newer, as MAJOR.MINOR."
  }
}

variable "subnet_ids" {
  description = "Private subnets (one per availability zone) for the control plane ENIs and the nodes."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must list at least two subnets in different availability zones (three for a 3-AZ cluster)."
  }
}

variable "endpoint_public_access_cidrs" {
  description = "CIDRs allowed to reach the public Kubernetes API endpoint; empty makes the endpoint private-only (reach it from inside the VPC)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.endpoint_public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "endpoint_public_access_cidrs must be CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "log_retention_days" {
  description = "Retention of the control plane logs in CloudWatch Logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value (e.g. 30, 90, 365)."
  }
}

variable "node_instance_types" {
  description = "Instance types of the broker node group (local NVMe; from the config module's validation)."
  type        = list(string)
}

variable "node_ami_type" {
  description = "EKS AMI type of the broker node group (AL2023, matching the instance architecture)."
  type        = string

  validation {
    condition     = contains(["AL2023_x86_64_STANDARD", "AL2023_ARM_64_STANDARD"], var.node_ami_type)
    error_message = "node_ami_type must be an AL2023 AMI type: the NVMe RAID-0 set-up uses nodeadm."
  }
}

variable "node_count" {
  description = "Desired, minimum and maximum size of the broker node group (one broker per node)."
  type = object({
    desired = number
    min     = number
    max     = number
  })
  default = { desired = 3, min = 3, max = 9 }

  validation {
    condition     = var.node_count.min >= 1 && var.node_count.min <= var.node_count.desired && var.node_count.desired <= var.node_count.max
    error_message = "node_count must satisfy 1 <= min <= desired <= max."
  }
}

variable "node_labels" {
  description = "Kubernetes labels of the broker nodes."
  type        = map(string)
}

variable "node_taint" {
  description = "Taint reserving the broker nodes for brokers."
  type = object({
    key    = string
    value  = string
    effect = string
  })
}

variable "node_root_volume_gib" {
  description = "Size of each node's EBS root volume (OS and images; the broker data is on instance NVMe)."
  type        = number
  default     = 50

  validation {
    condition     = var.node_root_volume_gib >= 20
    error_message = "node_root_volume_gib must be at least 20."
  }
}

variable "system_node_instance_types" {
  description = "Instance types of the small node group for cluster add-ons (CoreDNS ...), which do not tolerate the broker taint."
  type        = list(string)
  default     = ["m7i.large"]
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
