# -- names ------------------------------------------------------------------------------

variable "name" {
  description = "Prefix of the IAM role and policies this module creates."
  type        = string
  default     = "keyledger"

  validation {
    condition     = can(regex("^[A-Za-z0-9+=,.@_-]{1,40}$", var.name))
    error_message = "name: 1-40 characters allowed in IAM names."
  }
}

variable "tags" {
  description = "Tags for every resource that takes them."
  type        = map(string)
  default     = {}
}

# -- the S3 copy: Object Lock in COMPLIANCE mode ------------------------------------------

variable "bucket_name" {
  description = "The audit bucket (created here, with Object Lock). keyledger's config: audit.sinks[type=s3].bucket."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name: an S3 bucket name (3-63 lowercase letters, digits, '.' or '-')."
  }
}

variable "object_prefix" {
  description = "The key prefix keyledger writes under, without slashes at either end. keyledger's config: audit.sinks[type=s3].prefix. The role may write only below it."
  type        = string
  default     = "audit"

  validation {
    condition     = can(regex("^[A-Za-z0-9!_.*'()-]+(/[A-Za-z0-9!_.*'()-]+)*$", var.object_prefix))
    error_message = "object_prefix: one or more path segments, no leading or trailing '/'."
  }
}

variable "object_lock_retention_days" {
  description = "Default retention of every object, in COMPLIANCE mode: nobody, not even the account root, can delete or overwrite an object before it ends. keyledger also sets it per object (audit.sinks[type=s3].object_lock.retention_days); keep the two equal."
  type        = number
  default     = 2555

  validation {
    condition     = var.object_lock_retention_days >= 1 && var.object_lock_retention_days <= 36500 && floor(var.object_lock_retention_days) == var.object_lock_retention_days
    error_message = "object_lock_retention_days: a whole number of days, 1 to 36500."
  }
}

variable "kms_key_arn" {
  description = "A customer-managed KMS key for the bucket (SSE-KMS, with an S3 Bucket Key); null: SSE-S3 (AES256). With a key, keyledger's role gets kms:GenerateDataKey on it."
  type        = string
  default     = null
}

variable "access_log_bucket" {
  description = "A bucket for S3 server access logs of the audit bucket (who read or tried to change it); null: none."
  type        = string
  default     = null
}

variable "noncurrent_version_expiration_days" {
  description = "Delete noncurrent object versions this many days after they stop being current, once Object Lock allows; null: keep them. keyledger never overwrites an object, so versions appear only if something else writes."
  type        = number
  default     = null
}

# -- the CloudWatch Logs copy -------------------------------------------------------------

variable "log_group_name" {
  description = "The log group (created here). keyledger's config: audit.sinks[type=cloudwatch].log_group; leave its retention_days unset, this module owns the retention."
  type        = string
  default     = "/keyledger/audit"
}

variable "log_retention_days" {
  description = "Retention of the log group, one of CloudWatch's values (365 and up)."
  type        = number
  default     = 3653

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days: one of 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653."
  }
}

variable "log_kms_key_arn" {
  description = "A KMS key to encrypt the log group with (its key policy must allow logs.<region>.amazonaws.com); null: CloudWatch's own encryption."
  type        = string
  default     = null
}

# -- keyledger's role ---------------------------------------------------------------------

variable "assume_role_policy" {
  description = "The role's trust policy (JSON): who may be keyledger. IRSA: the cluster's OIDC provider for system:serviceaccount:keyledger:keyledger; EKS Pod Identity: pods.eks.amazonaws.com; EC2: ec2.amazonaws.com; ECS: ecs-tasks.amazonaws.com. README.md has each."
  type        = string

  validation {
    condition     = can(jsondecode(var.assume_role_policy).Statement)
    error_message = "assume_role_policy: a JSON policy document with a Statement."
  }
}

variable "permissions_boundary_arn" {
  description = "A permissions boundary for the role; null: none."
  type        = string
  default     = null
}

variable "create_instance_profile" {
  description = "Also create an EC2 instance profile for the role (the systemd route)."
  type        = bool
  default     = false
}

variable "secret_arns" {
  description = "The Secrets Manager secrets keyledger serves, as ARNs or ARN patterns (arn:aws:secretsmanager:REGION:ACCOUNT:secret:apps/*). The role reads only these."
  type        = list(string)

  validation {
    condition     = length(var.secret_arns) > 0 && alltrue([for arn in var.secret_arns : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", arn))])
    error_message = "secret_arns: one or more Secrets Manager secret ARNs (patterns with * allowed), each with its region and account."
  }
}

variable "secret_write_actions" {
  description = "Write actions keyledger may forward on secret_arns (its policies decide who may ask); empty: read-only. Any of the operations keyledger serves: secretsmanager:CreateSecret, PutSecretValue, UpdateSecret, UpdateSecretVersionStage, RestoreSecret, TagResource, UntagResource, PutResourcePolicy, DeleteResourcePolicy, ReplicateSecretToRegions, RemoveRegionsFromReplication, StopReplicationToReplica, RotateSecret, CancelRotateSecret, DeleteSecret."
  type        = list(string)
  default     = []

  validation {
    condition = alltrue([for action in var.secret_write_actions : contains([
      "secretsmanager:CreateSecret",
      "secretsmanager:PutSecretValue",
      "secretsmanager:UpdateSecret",
      "secretsmanager:UpdateSecretVersionStage",
      "secretsmanager:RestoreSecret",
      "secretsmanager:TagResource",
      "secretsmanager:UntagResource",
      "secretsmanager:PutResourcePolicy",
      "secretsmanager:DeleteResourcePolicy",
      "secretsmanager:ReplicateSecretToRegions",
      "secretsmanager:RemoveRegionsFromReplication",
      "secretsmanager:StopReplicationToReplica",
      "secretsmanager:RotateSecret",
      "secretsmanager:CancelRotateSecret",
      "secretsmanager:DeleteSecret",
    ], action)])
    error_message = "secret_write_actions: only the write operations keyledger forwards, spelled secretsmanager:Name."
  }
}

variable "secrets_kms_key_arns" {
  description = "Customer-managed KMS keys the secrets are encrypted with: kms:Decrypt through Secrets Manager only (and kms:GenerateDataKey when secret_write_actions is not empty). Secrets under the AWS-managed aws/secretsmanager key need nothing."
  type        = list(string)
  default     = []
}

variable "create_verifier_policy" {
  description = "Also create a read-only policy for `keyledger audit verify s3://... / cloudwatch://...` (the security team's role, never keyledger's)."
  type        = bool
  default     = true
}
