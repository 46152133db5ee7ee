# An example of every input, for an EKS cluster with IRSA: copy it, replace the account,
# region, cluster OIDC provider and names, then `terraform apply -var-file=...`.
# (The tests also scan the module with these values, so checkov sees a complete policy.)

name        = "keyledger"
bucket_name = "example-keyledger-audit"
tags        = { service = "keyledger" }

object_prefix                      = "audit"
object_lock_retention_days         = 2555
kms_key_arn                        = "arn:aws:kms:eu-central-1:111122223333:key/00000000-0000-0000-0000-000000000001"
access_log_bucket                  = "example-s3-access-logs"
noncurrent_version_expiration_days = 2920

log_group_name     = "/keyledger/audit"
log_retention_days = 3653
log_kms_key_arn    = "arn:aws:kms:eu-central-1:111122223333:key/00000000-0000-0000-0000-000000000002"

# IRSA: pods of the ServiceAccount keyledger in the namespace keyledger.
assume_role_policy = <<-JSON
  {
    "Version": "2012-10-17",
    "Statement": [{
      "Effect": "Allow",
      "Principal": {"Federated": "arn:aws:iam::111122223333:oidc-provider/oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE"},
      "Action": "sts:AssumeRoleWithWebIdentity",
      "Condition": {"StringEquals": {
        "oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE:sub": "system:serviceaccount:keyledger:keyledger",
        "oidc.eks.eu-central-1.amazonaws.com/id/EXAMPLED539D4633E53DE1B71EXAMPLE:aud": "sts.amazonaws.com"
      }}
    }]
  }
JSON

permissions_boundary_arn = null   # or your organisation's boundary policy

secret_arns          = ["arn:aws:secretsmanager:eu-central-1:111122223333:secret:apps/*"]
secret_write_actions = ["secretsmanager:PutSecretValue", "secretsmanager:UpdateSecretVersionStage", "secretsmanager:RotateSecret"]
secrets_kms_key_arns = ["arn:aws:kms:eu-central-1:111122223333:key/00000000-0000-0000-0000-000000000003"]

create_instance_profile = false
create_verifier_policy  = true
