# The AWS side of keyledger: where its audit copies go (an S3 bucket with Object Lock in
# COMPLIANCE mode, a CloudWatch Logs group) and the role it runs as, allowed exactly the
# calls keyledger makes. README.md beside this file explains every input and output.

locals {
  object_prefix = trim(var.object_prefix, "/")
  # Secrets Manager operations keyledger forwards that read: GetSecretValue and
  # BatchGetSecretValue (read), DescribeSecret, ListSecretVersionIds and GetResourcePolicy
  # (describe), ListSecrets (list; also keyledger's readiness check of the store).
  secret_read_actions = [
    "secretsmanager:GetSecretValue",
    "secretsmanager:DescribeSecret",
    "secretsmanager:ListSecretVersionIds",
    "secretsmanager:GetResourcePolicy",
  ]
  # These two take no resource: AWS checks GetSecretValue on each secret of a batch.
  secret_list_actions = [
    "secretsmanager:ListSecrets",
    "secretsmanager:BatchGetSecretValue",
  ]
  # The s3 sink: PutObject with a per-object retention (ObjectLockMode/RetainUntilDate),
  # and at start-up GetObjectLockConfiguration (refuses a bucket without Object Lock).
  s3_object_actions = ["s3:PutObject", "s3:PutObjectRetention"]
  s3_bucket_actions = ["s3:GetBucketObjectLockConfiguration"]
  # The cloudwatch sink: creates the group and its chain's stream if missing, then puts
  # events. No PutRetentionPolicy: the retention is this module's.
  logs_actions = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
}

# -- the S3 bucket ------------------------------------------------------------------------

resource "aws_s3_bucket" "audit" {
  #checkov:skip=CKV_AWS_144:Cross-region replication is a choice per organisation (a second bucket with its own Object Lock, region and role); keyledger's own copies are the journal, this bucket and CloudWatch Logs.
  #checkov:skip=CKV2_AWS_62:Nothing needs an event per audit object; shipping lag is watched with keyledger's own metrics (keyledger_sink_lag_*).
  #checkov:skip=CKV_AWS_145:SSE-S3 (AES256) by default so the module works without a KMS key; set kms_key_arn for SSE-KMS.
  #checkov:skip=CKV_AWS_18:Server access logging needs a second bucket the operator owns; set access_log_bucket to turn it on.
  bucket              = var.bucket_name
  object_lock_enabled = true
  # Never: locked objects cannot be deleted anyway, and a destroy must not try.
  force_destroy = false
  tags          = var.tags
}

resource "aws_s3_bucket_versioning" "audit" {
  bucket = aws_s3_bucket.audit.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    default_retention {
      mode = "COMPLIANCE"
      days = var.object_lock_retention_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.audit]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_public_access_block" "audit" {
  bucket                  = aws_s3_bucket.audit.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "audit" {
  bucket = aws_s3_bucket.audit.id

  rule {
    id     = "housekeeping"
    status = "Enabled"

    filter {}

    # keyledger sends single PUTs; anything else left half-uploaded is cleared.
    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }

    dynamic "noncurrent_version_expiration" {
      for_each = var.noncurrent_version_expiration_days == null ? [] : [var.noncurrent_version_expiration_days]
      content {
        noncurrent_days = noncurrent_version_expiration.value
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.audit]
}

resource "aws_s3_bucket_logging" "audit" {
  count = var.access_log_bucket == null ? 0 : 1

  bucket        = aws_s3_bucket.audit.id
  target_bucket = var.access_log_bucket
  target_prefix = "s3-access/${var.bucket_name}/"
}

data "aws_iam_policy_document" "bucket" {
  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.audit.arn,
      "${aws_s3_bucket.audit.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }

  statement {
    sid     = "DenyOldTls"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.audit.arn,
      "${aws_s3_bucket.audit.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "NumericLessThan"
      variable = "s3:TlsVersion"
      values   = ["1.2"]
    }
  }
}

resource "aws_s3_bucket_policy" "audit" {
  bucket = aws_s3_bucket.audit.id
  policy = data.aws_iam_policy_document.bucket.json

  depends_on = [aws_s3_bucket_public_access_block.audit]
}

# -- the CloudWatch Logs group ------------------------------------------------------------

resource "aws_cloudwatch_log_group" "audit" {
  #checkov:skip=CKV_AWS_158:CloudWatch Logs encrypts every group at rest already; set log_kms_key_arn for a customer-managed key.
  name              = var.log_group_name
  retention_in_days = var.log_retention_days
  kms_key_id        = var.log_kms_key_arn
  tags              = var.tags
}

# -- keyledger's role ---------------------------------------------------------------------

resource "aws_iam_role" "keyledger" {
  name                 = var.name
  description          = "keyledger: forwards audited calls to Secrets Manager, ships its audit journal to S3 and CloudWatch Logs."
  assume_role_policy   = var.assume_role_policy
  permissions_boundary = var.permissions_boundary_arn
  max_session_duration = 3600
  tags                 = var.tags
}

data "aws_iam_policy_document" "keyledger" {
  statement {
    sid       = "ReadSecrets"
    effect    = "Allow"
    actions   = local.secret_read_actions
    resources = var.secret_arns
  }

  statement {
    sid       = "ListSecrets"
    effect    = "Allow"
    actions   = local.secret_list_actions
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = length(var.secret_write_actions) == 0 ? [] : [var.secret_write_actions]
    content {
      sid       = "WriteSecrets"
      effect    = "Allow"
      actions   = statement.value
      resources = var.secret_arns
    }
  }

  dynamic "statement" {
    for_each = length(var.secrets_kms_key_arns) == 0 ? [] : [var.secrets_kms_key_arns]
    content {
      sid       = "DecryptSecrets"
      effect    = "Allow"
      actions   = length(var.secret_write_actions) == 0 ? ["kms:Decrypt"] : ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = statement.value

      condition {
        test     = "StringLike"
        variable = "kms:ViaService"
        values   = ["secretsmanager.*.amazonaws.com"]
      }
    }
  }

  statement {
    sid       = "ShipAuditObjects"
    effect    = "Allow"
    actions   = local.s3_object_actions
    resources = ["${aws_s3_bucket.audit.arn}/${local.object_prefix}/*"]
  }

  statement {
    sid       = "CheckObjectLock"
    effect    = "Allow"
    actions   = local.s3_bucket_actions
    resources = [aws_s3_bucket.audit.arn]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "EncryptAuditObjects"
      effect    = "Allow"
      actions   = ["kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }

  statement {
    sid     = "ShipAuditLogs"
    effect  = "Allow"
    actions = local.logs_actions
    resources = [
      aws_cloudwatch_log_group.audit.arn,
      "${aws_cloudwatch_log_group.audit.arn}:log-stream:*",
    ]
  }
}

resource "aws_iam_policy" "keyledger" {
  name        = "${var.name}-proxy"
  description = "What keyledger calls: Secrets Manager reads (and the writes it may forward), S3 PutObject with retention under the audit prefix, CloudWatch Logs events."
  policy      = data.aws_iam_policy_document.keyledger.json
  tags        = var.tags
}

resource "aws_iam_role_policy_attachment" "keyledger" {
  role       = aws_iam_role.keyledger.name
  policy_arn = aws_iam_policy.keyledger.arn
}

resource "aws_iam_instance_profile" "keyledger" {
  count = var.create_instance_profile ? 1 : 0

  name = var.name
  role = aws_iam_role.keyledger.name
  tags = var.tags
}

# -- the verifier's policy (for people, never for keyledger's role) -----------------------

data "aws_iam_policy_document" "verifier" {
  statement {
    sid       = "ListAuditObjects"
    effect    = "Allow"
    actions   = ["s3:ListBucket", "s3:ListBucketVersions"]
    resources = [aws_s3_bucket.audit.arn]
  }

  statement {
    sid       = "ReadAuditObjects"
    effect    = "Allow"
    actions   = ["s3:GetObject", "s3:GetObjectVersion"]
    resources = ["${aws_s3_bucket.audit.arn}/*"]
  }

  dynamic "statement" {
    for_each = var.kms_key_arn == null ? [] : [var.kms_key_arn]
    content {
      sid       = "DecryptAuditObjects"
      effect    = "Allow"
      actions   = ["kms:Decrypt"]
      resources = [statement.value]
    }
  }

  statement {
    sid     = "ReadAuditLogs"
    effect  = "Allow"
    actions = ["logs:DescribeLogStreams", "logs:GetLogEvents"]
    resources = [
      aws_cloudwatch_log_group.audit.arn,
      "${aws_cloudwatch_log_group.audit.arn}:log-stream:*",
    ]
  }
}

resource "aws_iam_policy" "verifier" {
  count = var.create_verifier_policy ? 1 : 0

  name        = "${var.name}-audit-verifier"
  description = "Read-only: keyledger audit verify s3://${var.bucket_name}/ and cloudwatch://${var.log_group_name}."
  policy      = data.aws_iam_policy_document.verifier.json
  tags        = var.tags
}
