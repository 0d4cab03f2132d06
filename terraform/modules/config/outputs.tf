output "bucket_name" {
  description = "Name of the S3 bucket."
  value       = local.bucket_name
}

output "bucket_arn" {
  description = "ARN of the S3 bucket."
  value       = local.bucket_arn
}

output "bucket_prefix" {
  description = "Key prefix of this cluster inside the bucket."
  value       = var.bucket_prefix
}

output "object_store_url" {
  description = "The brokers' --object-store URL."
  value       = "s3://${local.bucket_name}/${var.bucket_prefix}"
}

output "role_name" {
  description = "Name of the brokers' IAM role."
  value       = local.role_name
}

output "role_arn" {
  description = "ARN of the brokers' IAM role (known before the role exists, so the chart and the role do not depend on each other)."
  value       = local.role_arn
}

output "service_account_subject" {
  description = "The Kubernetes subject (system:serviceaccount:NAMESPACE:NAME) the IAM role trusts."
  value       = local.service_account
}

output "broker_policy_json" {
  description = "Least-privilege IAM policy of the brokers (JSON)."
  value       = local.broker_policy_json
}

output "trust_policy_json" {
  description = "Trust policy of the brokers' role (JSON): IRSA (null without an OIDC provider) or EKS Pod Identity, by pod_credentials."
  value       = local.trust_policy_json
}

output "bucket_policy_json" {
  description = "Bucket policy denying non-TLS and pre-TLS-1.2 requests (JSON)."
  value       = local.bucket_policy_json
}

output "ami_type" {
  description = "EKS AMI type matching the node instance types' architecture."
  value       = local.ami_type
}

output "node_labels" {
  description = "Kubernetes labels of the broker nodes."
  value       = local.node_labels
}

output "node_taint" {
  description = "Taint reserving the broker nodes for brokers."
  value       = local.node_taint
}

output "helm_values" {
  description = "Values for helm/sediment wiring the release to the bucket, the role and the node group."
  value       = local.helm_values
}

output "bootstrap_servers" {
  description = "Kafka bootstrap.servers for clients."
  value       = local.bootstrap_servers
}

output "tags" {
  description = "Tags for every AWS resource."
  value       = local.tags
}

output "initial_voters" {
  description = "Brokers that form the cluster at its first start (the chart's broker.initialVoters)."
  value       = local.initial_voters

  precondition {
    condition     = local.scale_in_ok
    error_message = "initial_voters is more than replicas: remove brokers with `sediment cluster remove-broker`, then lower both."
  }
}
