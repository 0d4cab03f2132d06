output "role_arn" {
  description = "ARN of the brokers' IAM role."
  value       = aws_iam_role.broker.arn
}

output "role_name" {
  description = "Name of the brokers' IAM role."
  value       = aws_iam_role.broker.name
}
