variable "subscription_id" {
  description = "The Azure subscription everything is created in."
  type        = string
  validation {
    condition     = can(regex("^[0-9a-fA-F-]{36}$", var.subscription_id))
    error_message = "subscription_id must be a subscription GUID."
  }
}

variable "environment" {
  description = "Environment name, used in every resource name: staging or production."
  type        = string
  validation {
    condition     = contains(["staging", "production"], var.environment)
    error_message = "environment must be staging or production."
  }
}

variable "location" {
  description = "Azure region, e.g. westeurope. It must offer availability zones."
  type        = string
  default     = "westeurope"
}

variable "name_prefix" {
  description = "Short prefix for resource names (lowercase letters and digits, 3-10 characters)."
  type        = string
  default     = "apiary"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,9}$", var.name_prefix))
    error_message = "name_prefix must be 3-10 lowercase letters or digits, starting with a letter."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "vnet_address_space" {
  description = "The VNet's address range; the module carves the subnets out of it (a /16 is plenty)."
  type        = string
  default     = "10.40.0.0/16"
  validation {
    condition     = can(cidrhost(var.vnet_address_space, 0))
    error_message = "vnet_address_space must be a CIDR range, e.g. 10.40.0.0/16."
  }
}

variable "kubernetes_version" {
  description = "AKS Kubernetes version (major.minor); the chart is validated against 1.31 and 1.35."
  type        = string
  default     = "1.33"
  validation {
    condition     = can(regex("^1\\.[0-9]{2}$", var.kubernetes_version))
    error_message = "kubernetes_version must look like 1.33."
  }
}

variable "api_admin_cidrs" {
  description = "CIDR ranges allowed to reach the AKS API server (operators, CI agents)."
  type        = list(string)
  validation {
    condition     = length(var.api_admin_cidrs) > 0 && alltrue([for c in var.api_admin_cidrs : can(cidrhost(c, 0))])
    error_message = "api_admin_cidrs must hold at least one CIDR range."
  }
}

variable "admin_group_object_ids" {
  description = "Azure AD groups given cluster admin (Azure RBAC for Kubernetes)."
  type        = list(string)
  default     = []
}

variable "node_pools" {
  description = "AKS node pools: system (cluster add-ons), api (the API pods) and worker (Celery workers); each autoscales between min and max."
  type = object({
    system = object({ vm_size = string, min = number, max = number })
    api    = object({ vm_size = string, min = number, max = number })
    worker = object({ vm_size = string, min = number, max = number })
  })
  validation {
    condition     = alltrue([for p in values(var.node_pools) : p.min >= 1 && p.max >= p.min && p.max <= 1000])
    error_message = "Every node pool needs 1 <= min <= max <= 1000."
  }
}

variable "postgres" {
  description = "PostgreSQL Flexible Server: SKU (e.g. GP_Standard_D4ds_v5), storage in MB, PostgreSQL major version, zone-redundant HA, backup retention (7-35 days) and geo-redundant backups."
  type = object({
    sku_name              = string
    storage_mb            = number
    version               = string
    high_availability     = bool
    backup_retention_days = number
    geo_redundant_backup  = bool
  })
  validation {
    condition     = var.postgres.backup_retention_days >= 7 && var.postgres.backup_retention_days <= 35
    error_message = "postgres.backup_retention_days must be between 7 and 35."
  }
  validation {
    condition     = contains(["15", "16", "17"], var.postgres.version)
    error_message = "postgres.version must be 15, 16 or 17."
  }
}

variable "redis" {
  description = "Azure Cache for Redis: sku (Standard or Premium), family (C or P) and capacity (size)."
  type = object({
    sku_name = string
    family   = string
    capacity = number
  })
  validation {
    condition     = contains(["Standard", "Premium"], var.redis.sku_name) && contains(["C", "P"], var.redis.family)
    error_message = "redis.sku_name must be Standard or Premium (Basic has no SLA) and family C or P."
  }
}

variable "public_hostname" {
  description = "The public host name Front Door serves Apiary on, e.g. apiary.example.com (a CNAME to the Front Door endpoint)."
  type        = string
  validation {
    condition     = can(regex("^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", var.public_hostname))
    error_message = "public_hostname must be a DNS name."
  }
}

variable "origin_hostname" {
  description = "Where Front Door sends traffic: the AKS ingress controller's public host name or IP."
  type        = string
}

variable "waf_mode" {
  description = "Front Door WAF mode: Prevention blocks, Detection only logs."
  type        = string
  default     = "Prevention"
  validation {
    condition     = contains(["Prevention", "Detection"], var.waf_mode)
    error_message = "waf_mode must be Prevention or Detection."
  }
}

variable "log_retention_days" {
  description = "Log Analytics retention in days (30-730)."
  type        = number
  default     = 30
  validation {
    condition     = var.log_retention_days >= 30 && var.log_retention_days <= 730
    error_message = "log_retention_days must be between 30 and 730."
  }
}
