variable "bucket_name" {
  description = "Name of the S3 bucket holding sealed segments and the cluster manifest."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name."
  }
}

variable "bucket_policy_json" {
  description = "Bucket policy (JSON), from the config module: TLS-only access."
  type        = string

  validation {
    condition     = can(jsondecode(var.bucket_policy_json).Statement)
    error_message = "bucket_policy_json must be an IAM policy document."
  }
}

variable "sse_algorithm" {
  description = "Default encryption: aws:kms (SSE-KMS, with kms_key_arn or a key created here) or AES256 (SSE-S3)."
  type        = string
  default     = "aws:kms"

  validation {
    condition     = contains(["aws:kms", "AES256"], var.sse_algorithm)
    error_message = "sse_algorithm must be aws:kms or AES256."
  }
}

variable "kms_key_arn" {
  description = "Existing KMS key for SSE-KMS; null creates a dedicated key (with rotation) when sse_algorithm is aws:kms."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:", var.kms_key_arn))
    error_message = "kms_key_arn must be a KMS key ARN."
  }
}

variable "kms_deletion_window_days" {
  description = "Waiting period before a deleted KMS key is destroyed."
  type        = number
  default     = 30

  validation {
    condition     = var.kms_deletion_window_days >= 7 && var.kms_deletion_window_days <= 30
    error_message = "kms_deletion_window_days must be between 7 and 30."
  }
}

variable "abort_incomplete_multipart_days" {
  description = "Days after which incomplete multipart uploads (left by a broker that died mid-upload) are aborted."
  type        = number
  default     = 1

  validation {
    condition     = var.abort_incomplete_multipart_days >= 1 && var.abort_incomplete_multipart_days <= 30
    error_message = "abort_incomplete_multipart_days must be between 1 and 30."
  }
}

variable "noncurrent_version_expiration_days" {
  description = "Days a deleted or overwritten object version is kept (recovery window for retention deletes)."
  type        = number
  default     = 7

  validation {
    condition     = var.noncurrent_version_expiration_days >= 1
    error_message = "noncurrent_version_expiration_days must be at least 1."
  }
}

variable "object_lock" {
  description = "S3 Object Lock (WORM) default retention; null disables it. Can only be turned on when the bucket is created. Sediment's retention deletes then only add delete markers; locked versions expire after the lock."
  type = object({
    mode = string
    days = number
  })
  default = null

  validation {
    condition     = var.object_lock == null || try(contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock.mode) && var.object_lock.days >= 1, false)
    error_message = "object_lock.mode must be GOVERNANCE or COMPLIANCE and object_lock.days at least 1."
  }
}

variable "access_log_bucket" {
  description = "Existing bucket receiving S3 server access logs; null disables access logging."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete a non-empty bucket. Keep false: the bucket is the cluster's durable copy."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for the bucket and key."
  type        = map(string)
  default     = {}
}
