# Everything the AWS modules and the Helm release must agree on, computed in one
# place: names, the S3 location, the IAM policies (as JSON) and the chart values.

locals {
  bucket_name = coalesce(var.bucket_name, "${var.name}-${var.account_id}-${var.region}")
  bucket_arn  = "arn:${var.partition}:s3:::${local.bucket_name}"
  prefix_arn  = "${local.bucket_arn}/${var.bucket_prefix}/*"

  role_name = "${var.name}-broker"
  role_arn  = "arn:${var.partition}:iam::${var.account_id}:role/${local.role_name}"

  # IRSA: the OIDC issuer (without https://) is the part of the provider ARN after "oidc-provider/".
  oidc_issuer     = var.oidc_provider_arn == null ? null : split("oidc-provider/", var.oidc_provider_arn)[1]
  service_account = "system:serviceaccount:${var.namespace}:${var.service_account_name}"

  arm64    = anytrue([for t in var.node_instance_types : can(regex("^(i4g|i8g|i8ge|im4gn|is4gen)\\.", t))])
  ami_type = local.arm64 ? "AL2023_ARM_64_STANDARD" : "AL2023_x86_64_STANDARD"

  node_labels = { "sediment.io/node-pool" = "brokers" }
  node_taint  = { key = "sediment.io/dedicated", value = "brokers", effect = "NO_SCHEDULE" }

  tags = merge({
    "sediment.io/deployment" = var.name
    "managed-by"             = "terraform"
  }, var.tags)

  # ---------------------------------------------------------------- IAM

  # Least privilege for the brokers: objects under the cluster's prefix only,
  # listing restricted to that prefix, and read-only bucket settings for
  # `sediment bucket check`. No bucket creation, policy or lifecycle changes.
  broker_statements = concat([
    {
      Sid      = "ListClusterPrefix"
      Effect   = "Allow"
      Action   = ["s3:ListBucket"]
      Resource = [local.bucket_arn]
      Condition = {
        StringLike = { "s3:prefix" = [var.bucket_prefix, "${var.bucket_prefix}/*"] }
      }
    },
    {
      Sid      = "ReadWriteClusterObjects"
      Effect   = "Allow"
      Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
      Resource = [local.prefix_arn]
    },
    {
      Sid      = "VerifyBucketSettings"
      Effect   = "Allow"
      Action   = ["s3:GetBucketLocation", "s3:GetEncryptionConfiguration", "s3:GetBucketPublicAccessBlock", "s3:GetLifecycleConfiguration", "s3:GetBucketVersioning"]
      Resource = [local.bucket_arn]
    },
    ], var.kms_key_arn == null ? [] : [
    {
      Sid      = "UseBucketKey"
      Effect   = "Allow"
      Action   = ["kms:Decrypt", "kms:GenerateDataKey"]
      Resource = [var.kms_key_arn]
      Condition = {
        StringEquals = { "kms:ViaService" = "s3.${var.region}.amazonaws.com" }
      }
    },
  ])

  broker_policy_json = jsonencode({ Version = "2012-10-17", Statement = local.broker_statements })

  irsa_trust_json = var.oidc_provider_arn == null ? null : jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "ServiceAccountViaIRSA"
      Effect    = "Allow"
      Principal = { Federated = var.oidc_provider_arn }
      Action    = "sts:AssumeRoleWithWebIdentity"
      Condition = {
        StringEquals = {
          "${local.oidc_issuer}:sub" = local.service_account
          "${local.oidc_issuer}:aud" = "sts.amazonaws.com"
        }
      }
    }]
  })

  # EKS Pod Identity: the EKS auth service assumes the role and tags the session with the
  # pod's namespace, ServiceAccount and cluster; the conditions accept only the brokers'.
  pod_identity_trust_json = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "ServiceAccountViaPodIdentity"
      Effect    = "Allow"
      Principal = { Service = "pods.eks.amazonaws.com" }
      Action    = ["sts:AssumeRole", "sts:TagSession"]
      Condition = {
        StringEquals = merge({
          "aws:SourceAccount"                         = var.account_id
          "aws:RequestTag/kubernetes-namespace"       = var.namespace
          "aws:RequestTag/kubernetes-service-account" = var.service_account_name
        }, var.cluster_name == null ? {} : { "aws:RequestTag/eks-cluster-name" = var.cluster_name })
      }
    }]
  })

  trust_policy_json = var.pod_credentials == "pod_identity" ? local.pod_identity_trust_json : local.irsa_trust_json

  # TLS-only access to the bucket, TLS 1.2 or newer.
  bucket_policy_json = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [local.bucket_arn, "${local.bucket_arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "DenyOutdatedTLS"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [local.bucket_arn, "${local.bucket_arn}/*"]
        Condition = { NumericLessThan = { "s3:TlsVersion" = "1.2" } }
      },
    ]
  })

  # ---------------------------------------------------------------- Helm values

  zone_count     = length(var.availability_zones)
  cache_volume   = "${ceil(var.cache_size_bytes * 1.1 / 1073741824) + 1}Gi"
  external       = var.external_domain != null
  bootstrap_host = "${var.release_name}.${var.namespace}.svc.cluster.local"

  initial_voters = coalesce(var.initial_voters, var.replicas)

  helm_values = {
    fullnameOverride = var.release_name
    replicaCount     = var.replicas
    # Pinned, so raising replicas renders joiners instead of changing every broker's peers
    broker = { initialVoters = local.initial_voters }
    image = {
      repository = var.image_repository
      tag        = var.image_tag
      digest     = ""
      pullPolicy = "IfNotPresent"
    }
    objectStore = {
      type = "s3"
      s3 = {
        bucket = local.bucket_name
        prefix = var.bucket_prefix
        region = var.region
      }
    }
    serviceAccount = {
      create = true
      name   = var.service_account_name
      # with Pod Identity the association binds the role; an IRSA annotation would make the
      # SDKs try the web identity exchange first, which this role does not trust
      awsRoleArn = var.pod_credentials == "irsa" ? local.role_arn : ""
    }
    cache = {
      sizeBytes = var.cache_size_bytes
      volume    = { type = "emptyDir", size = local.cache_volume }
    }
    storage = {
      mountPath = "/var/lib/sediment"
      # The node group puts the kubelet's directory on a RAID-0 of the instance
      # NVMe drives, so emptyDir is local NVMe.
      hotLog = { type = "emptyDir", size = var.hot_log_size }
    }
    scheduling = {
      hostAntiAffinity = "hard"
      zoneSpread       = local.zone_count >= 3 ? "hard" : "soft"
      nodeSelector     = var.dedicated_node_group ? local.node_labels : var.node_selector
      tolerations = var.dedicated_node_group ? [{
        key      = local.node_taint.key
        operator = "Equal"
        value    = local.node_taint.value
        effect   = "NoSchedule"
      }] : []
    }
    external = {
      enabled = local.external
      type    = "LoadBalancer"
      port    = 9094
      domain  = local.external ? var.external_domain : ""
      # NLBs from EKS's built-in service controller: internal to the VPC unless
      # source CIDRs are given (then internet-facing, limited to those CIDRs).
      annotations = local.external ? merge(
        { "service.beta.kubernetes.io/aws-load-balancer-type" = "nlb" },
        length(var.external_source_cidrs) > 0 ? {} : { "service.beta.kubernetes.io/aws-load-balancer-internal" = "true" },
      ) : {}
      loadBalancerSourceRanges = var.external_source_cidrs
    }
  }

  # A scale-in below the brokers that formed the cluster needs remove-broker first
  scale_in_ok = local.initial_voters <= var.replicas

  bootstrap_servers = local.external ? join(",", [for i in range(var.replicas) : "${var.release_name}-${i}.${var.external_domain}:9094"]) : "${local.bootstrap_host}:9092"
}
