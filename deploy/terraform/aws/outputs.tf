output "role_arn" {
  description = "keyledger's role. IRSA: the ServiceAccount annotation eks.amazonaws.com/role-arn; ECS: the task role."
  value       = aws_iam_role.keyledger.arn
}

output "role_name" {
  description = "keyledger's role, by name (to attach more policies, or for an EKS Pod Identity association)."
  value       = aws_iam_role.keyledger.name
}

output "policy_arn" {
  description = "The least-privilege policy attached to the role."
  value       = aws_iam_policy.keyledger.arn
}

output "instance_profile_name" {
  description = "The EC2 instance profile for the systemd route; null unless create_instance_profile."
  value       = var.create_instance_profile ? aws_iam_instance_profile.keyledger[0].name : null
}

output "verifier_policy_arn" {
  description = "The read-only policy for `keyledger audit verify` (attach it to the security team's role); null unless create_verifier_policy."
  value       = var.create_verifier_policy ? aws_iam_policy.verifier[0].arn : null
}

output "bucket_name" {
  description = "The audit bucket: audit.sinks[type=s3].bucket."
  value       = aws_s3_bucket.audit.bucket
}

output "bucket_arn" {
  description = "The audit bucket's ARN."
  value       = aws_s3_bucket.audit.arn
}

output "object_prefix" {
  description = "The key prefix keyledger may write under: audit.sinks[type=s3].prefix."
  value       = local.object_prefix
}

output "log_group_name" {
  description = "The log group: audit.sinks[type=cloudwatch].log_group."
  value       = aws_cloudwatch_log_group.audit.name
}

output "log_group_arn" {
  description = "The log group's ARN."
  value       = aws_cloudwatch_log_group.audit.arn
}

output "keyledger_sinks" {
  description = "The audit.sinks entries for keyledger's config, matching what this module created (yamlencode() it, or copy by hand)."
  value = [
    {
      type   = "s3"
      bucket = aws_s3_bucket.audit.bucket
      prefix = local.object_prefix
      object_lock = {
        mode           = "COMPLIANCE"
        retention_days = var.object_lock_retention_days
      }
    },
    {
      type      = "cloudwatch"
      log_group = aws_cloudwatch_log_group.audit.name
    },
  ]
}
