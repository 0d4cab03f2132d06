# Everything from nothing: bucket, IAM, a 3-AZ VPC, an EKS cluster with an NVMe
# node group, and three brokers. See docs/deploy.md for the walkthrough.
#
#   terraform init
#   terraform apply -var image_repository=registry.example.com/sediment \
#                   -var 'cluster_endpoint_public_access_cidrs=["203.0.113.10/32"]'

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
  description = "AWS region to deploy into."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = can(regex("^[a-z]{2}(-gov)?-[a-z]+-[0-9]$", var.region))
    error_message = "region must look like us-east-1."
  }
}

variable "image_repository" {
  description = "Repository of the sediment image you pushed (e.g. an ECR repository URL)."
  type        = string
}

variable "image_tag" {
  description = "Tag of the sediment image; empty uses the chart's appVersion."
  type        = string
  default     = ""
}

variable "cluster_endpoint_public_access_cidrs" {
  description = "Your workstation's or CI's CIDR, so terraform and kubectl can reach the Kubernetes API."
  type        = list(string)
}

variable "external_domain" {
  description = "Optional DNS suffix for per-broker NLBs (needs external-dns in the cluster); null keeps clients in-cluster."
  type        = string
  default     = null
}

variable "external_source_cidrs" {
  description = "CIDRs allowed through the per-broker NLBs (makes them internet-facing); empty keeps them internal."
  type        = list(string)
  default     = []
}

variable "replicas" {
  description = "Number of brokers (3 or 5)."
  type        = number
  default     = 3
}

provider "aws" {
  region = var.region

  default_tags {
    tags = { project = "sediment", example = "complete" }
  }
}

module "sediment" {
  source = "../.."

  name                                 = "sediment-demo"
  image_repository                     = var.image_repository
  image_tag                            = var.image_tag
  cluster_endpoint_public_access_cidrs = var.cluster_endpoint_public_access_cidrs
  node_instance_types                  = ["i4i.2xlarge"]
  replicas                             = var.replicas
  broker_nodes                         = { min = 3, max = 6 }
  bucket_encryption                    = "SSE-KMS"
  external_domain                      = var.external_domain
  external_source_cidrs                = var.external_source_cidrs
  extra_values_yaml = [yamlencode({
    broker = {
      topicDefaults = {
        # Keep every topic forever by default: sealed segments live in the bucket.
        "retention.ms" = "-1"
      }
    }
  })]
}

# The Helm provider talks to the cluster the module creates, authenticating
# with the caller's AWS credentials (the cluster creator is a cluster admin).
provider "helm" {
  kubernetes = {
    host                   = module.sediment.cluster_endpoint
    cluster_ca_certificate = base64decode(module.sediment.cluster_certificate_authority_data)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "aws"
      args        = ["eks", "get-token", "--region", var.region, "--cluster-name", module.sediment.cluster_name]
    }
  }
}

output "bootstrap_servers" {
  description = "Kafka bootstrap.servers."
  value       = module.sediment.bootstrap_servers
}

output "bucket_name" {
  description = "The bucket holding the archive; keep it when tearing down."
  value       = module.sediment.bucket_name
}

output "broker_role_arn" {
  description = "IAM role of the brokers."
  value       = module.sediment.broker_role_arn
}

output "kubeconfig_command" {
  description = "Writes a kubeconfig entry for the cluster."
  value       = module.sediment.kubeconfig_command
}
