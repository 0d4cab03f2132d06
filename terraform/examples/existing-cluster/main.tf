# Sediment in an EKS cluster you already run: only the bucket, the brokers' IAM
# role (IRSA, trusted by the cluster's existing OIDC provider) and the release.
# The cluster needs nodes with local NVMe (label them and pass the label as
# node_selector) and an IAM OIDC provider (`eksctl utils associate-iam-oidc-provider`).

terraform {
  required_version = ">= 1.6.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 6.0, < 7.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = ">= 3.0, < 4.0"
    }
  }
}

variable "region" {
  description = "AWS region of the cluster."
  type        = string

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "cluster_name" {
  description = "Name of the existing EKS cluster."
  type        = string
}

variable "name" {
  description = "Name of this Sediment deployment (bucket, role)."
  type        = string
  default     = "sediment"
}

variable "image_repository" {
  description = "Repository of the sediment image."
  type        = string
}

variable "node_selector" {
  description = "Labels of the nodes with local NVMe that should run brokers."
  type        = map(string)
  default     = { "node.kubernetes.io/instance-type" = "i4i.2xlarge" }
}

provider "aws" {
  region = var.region
}

data "aws_eks_cluster" "this" {
  name = var.cluster_name
}

module "sediment" {
  source = "../.."

  name                           = var.name
  existing_cluster_name          = var.cluster_name
  existing_cluster_node_selector = var.node_selector
  image_repository               = var.image_repository
  bucket_encryption              = "SSE-S3"
  replicas                       = 3
}

provider "helm" {
  kubernetes = {
    host                   = data.aws_eks_cluster.this.endpoint
    cluster_ca_certificate = base64decode(data.aws_eks_cluster.this.certificate_authority[0].data)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--region", var.region, "--cluster-name", var.cluster_name]
    }
  }
}

output "bootstrap_servers" {
  description = "Kafka bootstrap.servers (inside the cluster)."
  value       = module.sediment.bootstrap_servers
}

output "bucket_name" {
  description = "The bucket holding the archive."
  value       = module.sediment.bucket_name
}

output "broker_role_arn" {
  description = "IAM role of the brokers."
  value       = module.sediment.broker_role_arn
}
