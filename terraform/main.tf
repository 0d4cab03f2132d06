# Sediment on AWS: an S3 bucket (the durable archive and the cluster manifest),
# a least-privilege IAM role for the brokers bound to their ServiceAccount
# (IRSA or EKS Pod Identity), a VPC across three zones and an EKS cluster with an NVMe node group
# (or an existing cluster), and the Helm release of helm/sediment wired to them.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

data "aws_availability_zones" "available" {
  #checkov:skip=CKV_AWS_394:Only the first three zones in sorted order are used, and only when availability_zones is empty; set availability_zones to pin zone names explicitly.
  state = "available"

  filter {
    name   = "opt-in-status"
    values = ["opt-in-not-required"]
  }
}

locals {
  create_cluster = var.existing_cluster_name == null
  create_vpc     = local.create_cluster && var.create_vpc
  cluster_name   = local.create_cluster ? var.name : var.existing_cluster_name

  availability_zones = length(var.availability_zones) > 0 ? var.availability_zones : slice(sort(data.aws_availability_zones.available.names), 0, 3)

  private_subnet_ids = local.create_vpc ? module.network[0].private_subnet_ids : var.private_subnet_ids

  # IRSA only: Pod Identity needs no OIDC provider (an existing cluster may have none)
  oidc_provider_arn = var.pod_credentials != "irsa" ? null : (local.create_cluster ? module.eks[0].oidc_provider_arn : data.aws_iam_openid_connect_provider.existing[0].arn)

  kms_key_arn = var.bucket_encryption == "SSE-KMS" ? module.bucket.kms_key_arn : null
}

# The brokers that formed the cluster: the first apply's replicas, remembered, so that raising
# replicas later renders joiners instead of changing every running broker's peers.
resource "terraform_data" "initial_voters" {
  input = var.replicas

  lifecycle {
    ignore_changes = [input]
  }
}

module "config" {
  source = "./modules/config"

  name                  = var.name
  partition             = data.aws_partition.current.partition
  region                = data.aws_region.current.region
  account_id            = data.aws_caller_identity.current.account_id
  bucket_name           = var.bucket_name
  bucket_prefix         = var.bucket_prefix
  kms_key_arn           = local.kms_key_arn
  namespace             = var.namespace
  service_account_name  = var.service_account_name
  pod_credentials       = var.pod_credentials
  cluster_name          = local.cluster_name
  oidc_provider_arn     = local.oidc_provider_arn
  node_instance_types   = var.node_instance_types
  dedicated_node_group  = local.create_cluster
  node_selector         = var.existing_cluster_node_selector
  replicas              = var.replicas
  initial_voters        = coalesce(var.initial_voters, terraform_data.initial_voters.output)
  availability_zones    = local.create_cluster ? local.availability_zones : []
  image_repository      = var.image_repository
  image_tag             = var.image_tag
  cache_size_bytes      = var.cache_size_bytes
  hot_log_size          = var.hot_log_size
  external_domain       = var.external_domain
  external_source_cidrs = var.external_source_cidrs
  release_name          = var.release_name
  tags                  = var.tags
}

# ---------------------------------------------------------------- storage + IAM

module "bucket" {
  source = "./modules/bucket"

  bucket_name                        = module.config.bucket_name
  bucket_policy_json                 = module.config.bucket_policy_json
  sse_algorithm                      = var.bucket_encryption == "SSE-KMS" ? "aws:kms" : "AES256"
  kms_key_arn                        = var.kms_key_arn
  abort_incomplete_multipart_days    = var.abort_incomplete_multipart_days
  noncurrent_version_expiration_days = var.noncurrent_version_expiration_days
  object_lock                        = var.object_lock
  access_log_bucket                  = var.access_log_bucket
  force_destroy                      = var.bucket_force_destroy
  tags                               = module.config.tags
}

module "iam" {
  source = "./modules/iam"

  role_name          = module.config.role_name
  trust_policy_json  = module.config.trust_policy_json
  broker_policy_json = module.config.broker_policy_json
  tags               = module.config.tags
}

# EKS Pod Identity: the association hands the role to the brokers' ServiceAccount (the
# eks-pod-identity-agent add-on on the node serves the credentials).
resource "aws_eks_pod_identity_association" "brokers" {
  count = var.pod_credentials == "pod_identity" ? 1 : 0

  cluster_name    = local.create_cluster ? module.eks[0].cluster_name : var.existing_cluster_name
  namespace       = var.namespace
  service_account = var.service_account_name
  role_arn        = module.iam.role_arn
  tags            = module.config.tags
}

# ---------------------------------------------------------------- network + cluster

module "network" {
  source = "./modules/network"
  count  = local.create_vpc ? 1 : 0

  name                    = var.name
  cidr_block              = var.vpc_cidr
  availability_zones      = local.availability_zones
  single_nat_gateway      = var.single_nat_gateway
  cluster_name            = local.cluster_name
  flow_log_retention_days = var.log_retention_days
  tags                    = module.config.tags
}

module "eks" {
  source = "./modules/eks"
  count  = local.create_cluster ? 1 : 0

  cluster_name                 = local.cluster_name
  kubernetes_version           = var.kubernetes_version
  subnet_ids                   = local.private_subnet_ids
  endpoint_public_access_cidrs = var.cluster_endpoint_public_access_cidrs
  log_retention_days           = var.log_retention_days
  node_instance_types          = var.node_instance_types
  node_ami_type                = module.config.ami_type
  node_count                   = { desired = max(var.replicas, var.broker_nodes.min), min = var.broker_nodes.min, max = max(var.broker_nodes.max, var.replicas) }
  node_labels                  = module.config.node_labels
  node_taint                   = module.config.node_taint
  tags                         = module.config.tags
}

data "aws_eks_cluster" "existing" {
  count = local.create_cluster ? 0 : 1
  name  = var.existing_cluster_name
}

data "aws_iam_openid_connect_provider" "existing" {
  count = local.create_cluster || var.pod_credentials != "irsa" ? 0 : 1
  url   = data.aws_eks_cluster.existing[0].identity[0].oidc[0].issuer
}

# ---------------------------------------------------------------- release

module "release" {
  source = "./modules/release"
  count  = var.deploy_release ? 1 : 0

  release_name      = var.release_name
  namespace         = var.namespace
  values            = module.config.helm_values
  extra_values_yaml = var.extra_values_yaml

  # The brokers need the role (to reach the bucket) and nodes to run on. With Pod Identity
  # the association must exist before the pods: its credentials are wired in at pod creation.
  depends_on = [module.bucket, module.iam, module.eks, aws_eks_pod_identity_association.brokers]
}
