# The Sediment Helm release, wired to the bucket, the IAM role and the node group.

resource "helm_release" "sediment" {
  name             = var.release_name
  namespace        = var.namespace
  create_namespace = true
  chart            = coalesce(var.chart_path, "${path.module}/../../../helm/sediment")

  values = concat([yamlencode(var.values)], var.extra_values_yaml)

  # Wait for every broker's /ready: a release is done when the Raft cluster serves.
  wait          = true
  wait_for_jobs = true
  timeout       = var.timeout_seconds
  atomic        = false
  max_history   = 10
}
