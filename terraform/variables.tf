# ---------------------------------------------------------------- deployment

variable "name" {
  description = "Name of this Sediment deployment: prefixes the bucket, IAM role, VPC and (new) EKS cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every AWS resource."
  type        = map(string)
  default     = {}
}

# ---------------------------------------------------------------- bucket

variable "bucket_name" {
  description = "Name of the S3 bucket; null derives <name>-<account id>-<region>."
  type        = string
  default     = null

  validation {
    condition     = var.bucket_name == null || can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name."
  }
}

variable "bucket_prefix" {
  description = "Key prefix of this cluster inside the bucket; the brokers' IAM policy is scoped to it."
  type        = string
  default     = "sediment"

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9_.=-]*(/[A-Za-z0-9_.=-]+)*$", var.bucket_prefix))
    error_message = "bucket_prefix must be a non-empty S3 key prefix without leading or trailing '/'."
  }
}

variable "bucket_encryption" {
  description = "Default bucket encryption: SSE-KMS (a dedicated key with rotation, or kms_key_arn) or SSE-S3."
  type        = string
  default     = "SSE-KMS"

  validation {
    condition     = contains(["SSE-KMS", "SSE-S3"], var.bucket_encryption)
    error_message = "bucket_encryption must be SSE-KMS or SSE-S3."
  }
}

variable "kms_key_arn" {
  description = "Existing KMS key for SSE-KMS; null creates one."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "object_lock" {
  description = "S3 Object Lock default retention ({ mode = GOVERNANCE|COMPLIANCE, days = N }); null disables. Only settable when the bucket is created."
  type = object({
    mode = string
    days = number
  })
  default = null

  validation {
    condition     = var.object_lock == null || try(contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock.mode) && var.object_lock.days >= 1, false)
    error_message = "object_lock.mode must be GOVERNANCE or COMPLIANCE and object_lock.days at least 1."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which incomplete multipart uploads are aborted by the bucket's lifecycle rule."
  type        = number
  default     = 1

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1 && var.abort_incomplete_multipart_days <= 30
    error_message = "abort_incomplete_multipart_days must be between 1 and 30."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a deleted object version is kept before it expires (recovery window)."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "access_log_bucket" {
  description = "Existing bucket for S3 server access logs of the Sediment bucket; null disables them."
  type        = string
  default     = null
}

variable "bucket_force_destroy" {
  description = "Let Terraform delete a non-empty bucket (only once the bucket's prevent_destroy is lifted). Keep false: the bucket is the source of truth."
  type        = bool
  default     = false
}

# ---------------------------------------------------------------- network

variable "create_vpc" {
  description = "Create a VPC across three availability zones; false uses vpc_id and private_subnet_ids."
  type        = bool
  default     = true
}

variable "vpc_cidr" {
  description = "CIDR block of the new VPC."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.vpc_cidr, 0)) && tonumber(split("/", var.vpc_cidr)[1]) <= 20
    error_message = "vpc_cidr must be an IPv4 CIDR block of /20 or larger."
  }
}

variable "availability_zones" {
  description = "Three availability zones; empty picks the region's first three."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || (length(var.availability_zones) == 3 && length(distinct(var.availability_zones)) == 3)
    error_message = "availability_zones must be empty or list three distinct zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for all zones (cheaper) instead of one per zone."
  type        = bool
  default     = false
}

variable "vpc_id" {
  description = "Existing VPC when create_vpc is false."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_id == null || can(regex("^vpc-[0-9a-f]+$", var.vpc_id))
    error_message = "vpc_id must look like vpc-0123abcd."
  }
}

variable "private_subnet_ids" {
  description = "Existing private subnets (one per zone) when create_vpc is false."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.private_subnet_ids : can(regex("^subnet-[0-9a-f]+$", s))])
    error_message = "private_subnet_ids must look like subnet-0123abcd."
  }
}

# ---------------------------------------------------------------- cluster

variable "existing_cluster_name" {
  description = "Deploy into this existing EKS cluster (which must have an IAM OIDC provider) instead of creating a VPC and cluster."
  type        = string
  default     = null

  validation {
    condition     = var.existing_cluster_name == null || can(regex("^[a-zA-Z][a-zA-Z0-9-]{0,99}$", var.existing_cluster_name))
    error_message = "existing_cluster_name must be an EKS cluster name."
  }
}

variable "kubernetes_version" {
  description = "Kubernetes version of a new cluster (1.29 or newer)."
  type        = string
  default     = "1.33"

  validation {
    condition     = can(regex("^1\\.(29|[3-9][0-9])$", var.kubernetes_version))
    error_message = "kubernetes_version must be 1.29 or newer, as MAJOR.MINOR."
  }
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "CIDRs that may reach a new cluster's public API endpoint (where `terraform apply` and kubectl run); empty keeps the endpoint private."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.cluster_endpoint_public_access_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "cluster_endpoint_public_access_cidrs must be CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "node_instance_types" {
  description = "Storage-optimized instance types with local NVMe for the broker node group (i4i, i7ie, im4gn ...), one architecture."
  type        = list(string)
  default     = ["i4i.2xlarge"]

  validation {
    condition     = length(var.node_instance_types) > 0 && alltrue([for t in var.node_instance_types : can(regex("^(i3|i3en|i4i|i4g|i7i|i7ie|i8g|i8ge|im4gn|is4gen)\\.[0-9a-z]+$", t))])
    error_message = "node_instance_types must be storage-optimized types with instance NVMe (i3, i3en, i4i, i4g, i7i, i7ie, i8g, i8ge, im4gn, is4gen)."
  }
}

variable "broker_nodes" {
  description = "Minimum and maximum size of the broker node group; it starts with one node per broker."
  type = object({
    min = number
    max = number
  })
  default = { min = 3, max = 9 }

  validation {
    condition     = var.broker_nodes.min >= 1 && var.broker_nodes.min <= var.broker_nodes.max
    error_message = "broker_nodes must satisfy 1 <= min <= max."
  }
}

variable "existing_cluster_node_selector" {
  description = "In an existing cluster: node labels that select nodes with local NVMe for the brokers."
  type        = map(string)
  default     = {}
}

variable "log_retention_days" {
  description = "Retention of the EKS control-plane and VPC flow logs."
  type        = number
  default     = 365

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a CloudWatch Logs retention value (e.g. 30, 90, 365)."
  }
}

# ---------------------------------------------------------------- release

variable "deploy_release" {
  description = "Install the Helm release (false: only the AWS resources, e.g. to install the chart with your own tooling)."
  type        = bool
  default     = true
}

variable "namespace" {
  description = "Kubernetes namespace of the release."
  type        = string
  default     = "sediment"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", var.namespace))
    error_message = "namespace must be a DNS-1123 label."
  }
}

variable "release_name" {
  description = "Helm release name; brokers are <release_name>-N."
  type        = string
  default     = "sediment"

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.release_name))
    error_message = "release_name must be a DNS-1123 label of at most 40 characters."
  }
}

variable "service_account_name" {
  description = "Name of the brokers' ServiceAccount, trusted by the IAM role."
  type        = string
  default     = "sediment"

  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$", var.service_account_name))
    error_message = "service_account_name must be a DNS-1123 subdomain."
  }
}

variable "pod_credentials" {
  description = "How the brokers get their IAM role: \"irsa\" (IAM roles for service accounts, through the cluster's OIDC provider) or \"pod_identity\" (EKS Pod Identity: an association of the role with the ServiceAccount; an existing cluster needs the eks-pod-identity-agent add-on)."
  type        = string
  default     = "irsa"

  validation {
    condition     = contains(["irsa", "pod_identity"], var.pod_credentials)
    error_message = "pod_credentials must be \"irsa\" or \"pod_identity\"."
  }
}

variable "replicas" {
  description = "Number of brokers (Raft voters): 3 or 5 for production."
  type        = number
  default     = 3

  validation {
    condition     = var.replicas >= 1 && var.replicas <= 99 && floor(var.replicas) == var.replicas
    error_message = "replicas must be a whole number between 1 and 99."
  }
}

variable "initial_voters" {
  description = "Brokers that formed the cluster at its first install; null remembers the replicas of the first apply. Raising replicas later starts the new brokers as joiners, and `sediment cluster add-broker` makes each a voter (docs/deploy.md, Scale out). Set it only to scale in below the first install, after `sediment cluster remove-broker`."
  type        = number
  default     = null
}

variable "image_repository" {
  description = "Repository of the sediment image (built from the repository's Dockerfile and pushed to e.g. ECR)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]*(:[0-9]+)?(/[a-z0-9][a-z0-9._-]*)*$", var.image_repository))
    error_message = "image_repository must be a repository without a tag (set image_tag)."
  }
}

variable "image_tag" {
  description = "Image tag; empty uses the chart's appVersion."
  type        = string
  default     = ""

  validation {
    condition     = can(regex("^([A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$", var.image_tag))
    error_message = "image_tag must be a valid image tag."
  }
}

variable "cache_size_bytes" {
  description = "Each broker's read-through cache for archived segments, in bytes (on the node's NVMe)."
  type        = number
  default     = 107374182400

  validation {
    condition     = var.cache_size_bytes >= 0 && floor(var.cache_size_bytes) == var.cache_size_bytes
    error_message = "cache_size_bytes must be a non-negative whole number."
  }
}

variable "hot_log_size" {
  description = "Size limit of each broker's hot log (Kubernetes quantity); keep it under the node's NVMe capacity minus the cache."
  type        = string
  default     = "1000Gi"

  validation {
    condition     = can(regex("^[0-9]+(Ki|Mi|Gi|Ti)$", var.hot_log_size))
    error_message = "hot_log_size must be a binary Kubernetes quantity such as 1000Gi."
  }
}

variable "external_domain" {
  description = "DNS suffix for per-broker NLBs (broker N is <release>-N.<domain>:9094; external-dns in the cluster creates the records); null: in-cluster clients only."
  type        = string
  default     = null

  validation {
    condition     = var.external_domain == null || can(regex("^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\.)+[a-z]{2,}$", var.external_domain))
    error_message = "external_domain must be a DNS name such as kafka.example.com."
  }
}

variable "external_source_cidrs" {
  description = "CIDRs allowed through the per-broker NLBs; non-empty makes them internet-facing, empty keeps them internal to the VPC."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.external_source_cidrs : can(cidrhost(c, 0))])
    error_message = "external_source_cidrs must be CIDR blocks."
  }
}

variable "extra_values_yaml" {
  description = "Extra Helm values (YAML documents) applied after the computed ones, e.g. otlp.endpoint or broker.topicDefaults."
  type        = list(string)
  default     = []
}
