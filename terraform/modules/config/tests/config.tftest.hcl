# Runs offline: the config module uses no provider.
#   cd terraform/modules/config && terraform init -backend=false && terraform test

variables {
  name                = "acme-prod"
  region              = "us-east-1"
  account_id          = "123456789012"
  oidc_provider_arn   = "arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789"
  availability_zones  = ["us-east-1a", "us-east-1b", "us-east-1c"]
  node_instance_types = ["i4i.2xlarge", "i7ie.2xlarge"]
}

run "derives_names" {
  command = plan

  assert {
    condition     = output.bucket_name == "acme-prod-123456789012-us-east-1"
    error_message = "bucket name is derived from name, account and region"
  }
  assert {
    condition     = output.role_arn == "arn:aws:iam::123456789012:role/acme-prod-broker"
    error_message = "role ARN is computed from the role name"
  }
  assert {
    condition     = output.object_store_url == "s3://acme-prod-123456789012-us-east-1/sediment"
    error_message = "object store URL is s3://BUCKET/PREFIX"
  }
  assert {
    condition     = output.ami_type == "AL2023_x86_64_STANDARD"
    error_message = "i4i/i7ie are x86_64"
  }
}

run "broker_policy_is_scoped_to_the_prefix" {
  command = plan

  variables {
    bucket_prefix = "clusters/prod"
  }

  assert {
    condition = alltrue([
      for s in jsondecode(output.broker_policy_json).Statement :
      alltrue([for a in s.Action : a != "*" && a != "s3:*" && !endswith(a, ":*")])
    ])
    error_message = "no wildcard actions"
  }
  assert {
    condition = alltrue([
      for s in jsondecode(output.broker_policy_json).Statement :
      alltrue([for r in s.Resource : r == "arn:aws:s3:::acme-prod-123456789012-us-east-1" || r == "arn:aws:s3:::acme-prod-123456789012-us-east-1/clusters/prod/*"])
    ])
    error_message = "every resource is the bucket or the cluster's prefix"
  }
  assert {
    condition = one([
      for s in jsondecode(output.broker_policy_json).Statement : s.Condition.StringLike["s3:prefix"]
      if contains(s.Action, "s3:ListBucket")
    ]) == ["clusters/prod", "clusters/prod/*"]
    error_message = "ListBucket is limited to the prefix"
  }
  assert {
    condition = alltrue([
      for s in jsondecode(output.broker_policy_json).Statement :
      !anytrue([for a in s.Action : contains(["s3:PutBucketPolicy", "s3:DeleteBucket", "s3:PutLifecycleConfiguration", "s3:CreateBucket"], a)])
    ])
    error_message = "brokers cannot change the bucket itself"
  }
  assert {
    condition     = length([for s in jsondecode(output.broker_policy_json).Statement : s if startswith(s.Action[0], "kms:")]) == 0
    error_message = "no KMS statement without a KMS key (SSE-S3)"
  }
}

run "kms_statement_with_sse_kms" {
  command = plan

  variables {
    kms_key_arn = "arn:aws:kms:us-east-1:123456789012:key/0b1c2d3e-0000-1111-2222-333344445555"
  }

  assert {
    condition = one([
      for s in jsondecode(output.broker_policy_json).Statement : s.Condition.StringEquals["kms:ViaService"]
      if startswith(s.Action[0], "kms:")
    ]) == "s3.us-east-1.amazonaws.com"
    error_message = "the key is usable only through S3"
  }
}

run "trust_policy_binds_the_service_account" {
  command = plan

  variables {
    namespace            = "streaming"
    service_account_name = "brokers"
  }

  assert {
    condition     = jsondecode(output.trust_policy_json).Statement[0].Condition.StringEquals["oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789:sub"] == "system:serviceaccount:streaming:brokers"
    error_message = "trust is limited to the chart's ServiceAccount"
  }
  assert {
    condition     = jsondecode(output.trust_policy_json).Statement[0].Condition.StringEquals["oidc.eks.us-east-1.amazonaws.com/id/ABCDEF0123456789:aud"] == "sts.amazonaws.com"
    error_message = "audience is STS"
  }
  assert {
    condition     = output.helm_values.serviceAccount.name == "brokers" && output.helm_values.serviceAccount.awsRoleArn == output.role_arn
    error_message = "the chart's ServiceAccount carries the role ARN"
  }
}

run "bucket_policy_is_tls_only" {
  command = plan

  assert {
    condition = anytrue([
      for s in jsondecode(output.bucket_policy_json).Statement :
      s.Effect == "Deny" && try(s.Condition.Bool["aws:SecureTransport"], "") == "false"
    ])
    error_message = "plain-HTTP requests are denied"
  }
}

run "helm_values_wire_bucket_and_nodes" {
  command = plan

  assert {
    condition     = output.helm_values.objectStore.s3.bucket == output.bucket_name && output.helm_values.objectStore.s3.prefix == "sediment"
    error_message = "release points at the bucket and prefix"
  }
  assert {
    condition     = output.helm_values.scheduling.zoneSpread == "hard" && output.helm_values.scheduling.hostAntiAffinity == "hard"
    error_message = "three zones: hard zone spread, one broker per node"
  }
  assert {
    condition     = output.helm_values.scheduling.nodeSelector["sediment.io/node-pool"] == "brokers"
    error_message = "brokers land on the NVMe node group"
  }
  assert {
    condition     = output.helm_values.cache.volume.size == "111Gi"
    error_message = "cache volume leaves 10% headroom over the cache size"
  }
  assert {
    condition     = output.bootstrap_servers == "sediment.sediment.svc.cluster.local:9092"
    error_message = "without an external domain the bootstrap address is the in-cluster Service"
  }
}

run "external_domain_advertises_per_broker_names" {
  command = plan

  variables {
    external_domain = "kafka.example.com"
    replicas        = 3
  }

  assert {
    condition     = output.bootstrap_servers == "sediment-0.kafka.example.com:9094,sediment-1.kafka.example.com:9094,sediment-2.kafka.example.com:9094"
    error_message = "one address per broker"
  }
  assert {
    condition     = output.helm_values.external.enabled && output.helm_values.external.annotations["service.beta.kubernetes.io/aws-load-balancer-internal"] == "true"
    error_message = "load balancers are internal unless source CIDRs are given"
  }
}

run "source_cidrs_make_internet_facing_load_balancers" {
  command = plan

  variables {
    external_domain       = "kafka.example.com"
    external_source_cidrs = ["198.51.100.0/24"]
  }

  assert {
    condition     = !contains(keys(output.helm_values.external.annotations), "service.beta.kubernetes.io/aws-load-balancer-internal") && one(output.helm_values.external.loadBalancerSourceRanges) == "198.51.100.0/24"
    error_message = "with source CIDRs the NLBs face the internet, restricted to those CIDRs"
  }
}

run "existing_cluster_uses_the_given_node_selector" {
  command = plan

  variables {
    dedicated_node_group = false
    node_selector        = { "node.kubernetes.io/instance-type" = "i4i.4xlarge" }
    availability_zones   = []
  }

  assert {
    condition     = output.helm_values.scheduling.nodeSelector["node.kubernetes.io/instance-type"] == "i4i.4xlarge" && length(keys(output.helm_values.scheduling.nodeSelector)) == 1 && length(output.helm_values.scheduling.tolerations) == 0
    error_message = "no dedicated node group: the user's selector and no toleration"
  }
  assert {
    condition     = output.helm_values.scheduling.zoneSpread == "soft"
    error_message = "unknown zones: zone spread is a preference"
  }
}

run "graviton_nodes_use_the_arm_ami" {
  command = plan

  variables {
    node_instance_types = ["im4gn.4xlarge", "is4gen.2xlarge"]
  }

  assert {
    condition     = output.ami_type == "AL2023_ARM_64_STANDARD"
    error_message = "im4gn/is4gen are arm64"
  }
}

run "rejects_non_nvme_instance_types" {
  command = plan

  variables {
    node_instance_types = ["m7i.2xlarge"]
  }

  expect_failures = [var.node_instance_types]
}

run "rejects_mixed_architectures" {
  command = plan

  variables {
    node_instance_types = ["i4i.2xlarge", "im4gn.2xlarge"]
  }

  expect_failures = [var.node_instance_types]
}

run "rejects_bad_bucket_prefix" {
  command = plan

  variables {
    bucket_prefix = "/leading-slash/"
  }

  expect_failures = [var.bucket_prefix]
}

run "rejects_bad_name" {
  command = plan

  variables {
    name = "Acme_Prod"
  }

  expect_failures = [var.name]
}

run "pod_identity_trusts_the_eks_auth_service_for_the_brokers_only" {
  command = plan

  variables {
    pod_credentials      = "pod_identity"
    cluster_name         = "acme-prod"
    namespace            = "streaming"
    service_account_name = "brokers"
  }

  assert {
    condition     = jsondecode(output.trust_policy_json).Statement[0].Principal.Service == "pods.eks.amazonaws.com" && length(jsondecode(output.trust_policy_json).Statement) == 1
    error_message = "only the EKS auth service may assume the role"
  }
  assert {
    condition     = toset(jsondecode(output.trust_policy_json).Statement[0].Action) == toset(["sts:AssumeRole", "sts:TagSession"])
    error_message = "Pod Identity needs AssumeRole and TagSession"
  }
  assert {
    condition = jsondecode(output.trust_policy_json).Statement[0].Condition.StringEquals == {
      "aws:SourceAccount"                         = "123456789012"
      "aws:RequestTag/kubernetes-namespace"       = "streaming"
      "aws:RequestTag/kubernetes-service-account" = "brokers"
      "aws:RequestTag/eks-cluster-name"           = "acme-prod"
    }
    error_message = "trust is limited to the brokers' ServiceAccount on this cluster"
  }
  assert {
    condition     = output.helm_values.serviceAccount.awsRoleArn == ""
    error_message = "no IRSA annotation with Pod Identity (the SDKs would try web identity first)"
  }
}

run "pod_credentials_is_irsa_or_pod_identity" {
  command = plan

  variables {
    pod_credentials = "static"
  }

  expect_failures = [var.pod_credentials]
}

run "raising_replicas_keeps_the_initial_voters" {
  command = plan

  variables {
    replicas       = 5
    initial_voters = 3
  }

  assert {
    condition     = output.helm_values.replicaCount == 5 && output.helm_values.broker.initialVoters == 3
    error_message = "the two new brokers are joiners; the three that formed the cluster keep their peers"
  }
}

run "initial_voters_default_to_replicas" {
  command = plan

  assert {
    condition     = output.helm_values.broker.initialVoters == 3 && output.initial_voters == 3
    error_message = "a first install forms the cluster from every broker"
  }
}

run "scale_in_below_the_initial_voters_is_refused" {
  command = plan

  variables {
    replicas       = 3
    initial_voters = 5
  }

  expect_failures = [output.initial_voters]
}
