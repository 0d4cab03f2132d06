# The brokers' IAM role, assumable only by the chart's ServiceAccount through
# the cluster's OIDC provider (IRSA), with an inline least-privilege policy.

resource "aws_iam_role" "broker" {
  name                 = var.role_name
  description          = "Sediment brokers: objects under the cluster's prefix in its bucket"
  assume_role_policy   = var.trust_policy_json
  permissions_boundary = var.permissions_boundary_arn
  max_session_duration = var.max_session_duration
  tags                 = var.tags
}

resource "aws_iam_role_policy" "broker" {
  name   = "sediment-object-store"
  role   = aws_iam_role.broker.id
  policy = var.broker_policy_json
}
