output "bootstrap_servers" {
  description = "Kafka bootstrap.servers: the in-cluster bootstrap Service, or the per-broker external names when external_domain is set."
  value       = module.config.bootstrap_servers
}

output "bucket_name" {
  description = "S3 bucket holding the sealed segments and the cluster manifest."
  value       = module.bucket.bucket_name
}

output "bucket_arn" {
  description = "ARN of the bucket."
  value       = module.bucket.bucket_arn
}

output "object_store_url" {
  description = "The brokers' object store URL (s3://BUCKET/PREFIX)."
  value       = module.config.object_store_url
}

output "kms_key_arn" {
  description = "KMS key encrypting the bucket (null with SSE-S3)."
  value       = module.bucket.kms_key_arn
}

output "broker_role_arn" {
  description = "IAM role of the brokers (IRSA)."
  value       = module.iam.role_arn
}

output "cluster_name" {
  description = "EKS cluster running the brokers."
  value       = local.cluster_name
}

output "cluster_endpoint" {
  description = "Kubernetes API endpoint of the cluster."
  value       = local.create_cluster ? module.eks[0].cluster_endpoint : data.aws_eks_cluster.existing[0].endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the Kubernetes API."
  value       = local.create_cluster ? module.eks[0].cluster_certificate_authority_data : data.aws_eks_cluster.existing[0].certificate_authority[0].data
}

output "vpc_id" {
  description = "VPC of the cluster (null for an existing cluster)."
  value       = local.create_vpc ? module.network[0].vpc_id : var.vpc_id
}

output "namespace" {
  description = "Kubernetes namespace of the release."
  value       = var.namespace
}

output "kubeconfig_command" {
  description = "Command that writes a kubeconfig entry for the cluster."
  value       = "aws eks update-kubeconfig --region ${data.aws_region.current.region} --name ${local.cluster_name}"
}
