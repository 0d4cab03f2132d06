variable "name" {
  description = "Name of this Sediment deployment; prefixes every resource name."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "partition" {
  description = "AWS partition of the account (aws, aws-cn, aws-us-gov)."
  type        = string
  default     = "aws"

  validation {
    condition     = contains(["aws", "aws-cn", "aws-us-gov"], var.partition)
    error_message = "partition must be aws, aws-cn or aws-us-gov."
  }
}

variable "region" {
  description = "AWS region of the bucket and the cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "account_id" {
  description = "AWS account id that owns the bucket and the IAM role."
  type        = string

  validation {
    condition     = can(regex("^[0-9]{12}$", var.account_id))
    error_message = "account_id must be 12 digits."
  }
}

variable "bucket_name" {
  description = "Name of the S3 bucket; null derives <name>-<account_id>-<region>."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 characters of a-z, 0-9, '.', '-')."
  }
}

variable "bucket_prefix" {
  description = "Key prefix of this cluster inside the bucket (no leading or trailing slash); the broker's IAM policy is scoped to it."
  type        = string
  default     = "sediment"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.=-]*(/[A-Za-z0-9_.=-]+)*$", var.bucket_prefix))
    error_message = "bucket_prefix must be a non-empty S3 key prefix without leading or trailing '/'."
  }
}

variable "kms_key_arn" {
  description = "ARN of the KMS key encrypting the bucket (SSE-KMS); null for SSE-S3. The broker role gets kms:Decrypt/GenerateDataKey on it."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:(key|alias)/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key or alias ARN."
  }
}

variable "namespace" {
  description = "Kubernetes namespace of the Helm release."
  type        = string
  default     = "sediment"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label."
  }
}

variable "service_account_name" {
  description = "Name of the brokers' Kubernetes ServiceAccount (bound to the IAM role through IRSA)."
  type        = string
  default     = "sediment"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.service_account_name))
    error_message = "service_account_name must be a DNS-1123 subdomain."
  }
}

variable "pod_credentials" {
  description = "How the brokers' pods get the IAM role: \"irsa\" (the ServiceAccount's role-arn annotation, exchanged through the cluster's OIDC provider) or \"pod_identity\" (an EKS Pod Identity association; needs the eks-pod-identity-agent add-on)."
  type        = string
  default     = "irsa"

  validation {
    condition     = contains(["irsa", "pod_identity"], var.pod_credentials)
    error_message = "pod_credentials must be \"irsa\" or \"pod_identity\"."
  }
}

variable "cluster_name" {
  description = "Name of the EKS cluster the brokers run on (the Pod Identity trust policy names it); null trusts any cluster of the account."
  type        = string
  default     = null
}

variable "oidc_provider_arn" {
  description = "ARN of the cluster's IAM OIDC identity provider (IRSA); null renders no trust policy."
  type        = string
  default     = null

  validation {
    condition     = var.oidc_provider_arn == null || can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:oidc-provider/.+$", var.oidc_provider_arn))
    error_message = "oidc_provider_arn must be an IAM OIDC provider ARN."
  }
}

variable "node_instance_types" {
  description = "Instance types of the broker node group: storage-optimized types with local NVMe (i4i, i7ie, i8g, im4gn, is4gen, i4g ...), one CPU architecture."
  type        = list(string)
  default     = ["i4i.2xlarge"]

  validation {
    condition     = length(var.node_instance_types) > 0 && alltrue([for t in var.node_instance_types : can(regex("^(i3|i3en|i4i|i4g|i7i|i7ie|i8g|i8ge|im4gn|is4gen)\\.[0-9a-z]+$", t))])
    error_message = "node_instance_types must be storage-optimized types with instance NVMe (i3, i3en, i4i, i4g, i7i, i7ie, i8g, i8ge, im4gn, is4gen)."
  }

  validation {
    condition     = length(distinct([for t in var.node_instance_types : can(regex("^(i4g|i8g|i8ge|im4gn|is4gen)\\.", t))])) == 1
    error_message = "node_instance_types must all be Graviton (arm64) or all x86_64: one node group has one AMI type."
  }
}

variable "dedicated_node_group" {
  description = "Brokers run on the module's tainted NVMe node group (true), or on any node matching node_selector in an existing cluster (false)."
  type        = bool
  default     = true
}

variable "node_selector" {
  description = "Node labels the brokers require when dedicated_node_group is false (e.g. your NVMe node group's label)."
  type        = map(string)
  default     = {}
}

variable "replicas" {
  description = "Number of brokers (Raft voters); odd numbers tolerate the most failures."
  type        = number
  default     = 3

  validation {
    condition     = var.replicas >= 1 && var.replicas <= 99 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number between 1 and 99."
  }
}

variable "initial_voters" {
  description = "Brokers that formed the cluster at its first install (the chart's broker.initialVoters); null uses replicas. Keep it when raising replicas: the new brokers start as joiners and wait for `sediment cluster add-broker`."
  type        = number
  default     = null

  validation {
    condition     = var.initial_voters == null || (try(var.initial_voters >= 1 && floor(var.initial_voters) == var.initial_voters, false))
    error_message = "initial_voters must be a whole number of at least 1."
  }
}

variable "availability_zones" {
  description = "Availability zones the brokers spread across (zone topology spread is hard when there are 3 or more)."
  type        = list(string)
  default     = []
}

variable "image_repository" {
  description = "Container image repository of the sediment image."
  type        = string
  default     = "sediment"
}

variable "image_tag" {
  description = "Container image tag; empty uses the chart's appVersion."
  type        = string
  default     = ""
}

variable "cache_size_bytes" {
  description = "Size of each broker's read-through cache for archived segments, in bytes."
  type        = number
  default     = 107374182400

  validation {
    condition     = var.cache_size_bytes >= 0 && floor(var.cache_size_bytes) == var.cache_size_bytes
    error_message = "cache_size_bytes must be a non-negative whole number."
  }
}

variable "hot_log_size" {
  description = "Size limit of each broker's hot log volume (Kubernetes quantity, e.g. 1500Gi); keep it below the node's NVMe capacity minus the cache."
  type        = string
  default     = "1000Gi"

  validation {
    condition     = can(regex("^[0-9]+(Ki|Mi|Gi|Ti)$", var.hot_log_size))
    error_message = "hot_log_size must be a binary Kubernetes quantity such as 1000Gi."
  }
}

variable "external_domain" {
  description = "DNS suffix for per-broker load balancers (broker N is <release>-N.<domain>, records made by external-dns); null keeps brokers reachable inside the cluster only."
  type        = string
  default     = null

  validation {
    condition     = var.external_domain == null || can(regex("^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\.)+[a-z]{2,}$", var.external_domain))
    error_message = "external_domain must be a DNS name such as kafka.example.com."
  }
}

variable "external_source_cidrs" {
  description = "CIDRs allowed to reach the per-broker load balancers."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.external_source_cidrs : can(cidrhost(c, 0))])
    error_message = "external_source_cidrs must be CIDR blocks."
  }
}

variable "release_name" {
  description = "Helm release name; broker pods are <release_name>-N."
  type        = string
  default     = "sediment"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.release_name))
    error_message = "release_name must be a DNS-1123 label of at most 40 characters."
  }
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}
