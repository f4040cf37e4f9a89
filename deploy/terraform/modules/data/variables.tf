variable "name" {
  description = "Name stem, e.g. apiary-production."
  type        = string
}

variable "compact_name" {
  description = "Name stem without dashes (Storage account names), e.g. apiaryprod."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "postgres" {
  description = "PostgreSQL Flexible Server settings (see the root module's variable)."
  type = object({
    sku_name              = string
    storage_mb            = number
    version               = string
    high_availability     = bool
    backup_retention_days = number
    geo_redundant_backup  = bool
  })
}

variable "redis" {
  description = "Azure Cache for Redis settings (see the root module's variable)."
  type = object({
    sku_name = string
    family   = string
    capacity = number
  })
}

variable "postgres_subnet_id" {
  description = "Subnet delegated to PostgreSQL (private access: no public endpoint)."
  type        = string
}

variable "postgres_private_dns_id" {
  description = "Private DNS zone PostgreSQL registers in."
  type        = string
}

variable "private_endpoint_subnet_id" {
  description = "Subnet for the Redis and Storage private endpoints."
  type        = string
}

variable "private_dns_zone_ids" {
  description = "Private Link DNS zone ids by service (redis, blob, ...)."
  type        = map(string)
}

variable "key_vault_id" {
  description = "Key Vault holding the Storage account's key."
  type        = string
}

variable "storage_cmk_key_id" {
  description = "Versionless id of the Storage account's customer-managed key."
  type        = string
}

variable "storage_identity_id" {
  description = "User-assigned identity the Storage account unwraps its key as."
  type        = string
}

variable "log_analytics_workspace_id" {
  description = "Where diagnostic logs go."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
}
