variable "name" {
  description = "Name stem, e.g. apiary-production."
  type        = string
}

variable "compact_name" {
  description = "Name stem without dashes for ACR and Key Vault, e.g. apiaryprod."
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

variable "tenant_id" {
  description = "Azure AD tenant of the Key Vault."
  type        = string
}

variable "deployer_object_id" {
  description = "Object id running Terraform: it gets Key Vault Administrator to write the secrets."
  type        = string
}

variable "private_endpoint_subnet_id" {
  description = "Subnet for the private endpoints."
  type        = string
}

variable "private_dns_zone_ids" {
  description = "Private Link DNS zone ids by service (vault, acr, ...)."
  type        = map(string)
}

variable "log_analytics_workspace_id" {
  description = "Where Key Vault's and ACR's diagnostic logs go."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
}
