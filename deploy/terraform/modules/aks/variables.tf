variable "name" {
  description = "Name stem, e.g. apiary-production."
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

variable "kubernetes_version" {
  description = "Kubernetes major.minor; patches are applied by the automatic upgrade channel."
  type        = string
}

variable "subnet_id" {
  description = "Subnet of the nodes."
  type        = string
}

variable "api_admin_cidrs" {
  description = "CIDR ranges allowed to reach the API server."
  type        = list(string)
}

variable "admin_group_object_ids" {
  description = "Azure AD groups with cluster admin."
  type        = list(string)
}

variable "node_pools" {
  description = "system, api and worker pools: vm_size, min and max node counts."
  type = object({
    system = object({ vm_size = string, min = number, max = number })
    api    = object({ vm_size = string, min = number, max = number })
    worker = object({ vm_size = string, min = number, max = number })
  })
}

variable "log_analytics_workspace_id" {
  description = "Container Insights and control plane logs go here."
  type        = string
}

variable "acr_id" {
  description = "Registry the kubelet pulls from (AcrPull)."
  type        = string
}

variable "key_vault_id" {
  description = "Key Vault the Secrets Store CSI driver reads."
  type        = string
}

variable "disk_encryption_set_id" {
  description = "Disk encryption set (customer-managed key) for the nodes' disks."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
}
