output "resource_group_name" {
  description = "The environment's resource group."
  value       = azurerm_resource_group.main.name
}

output "aks_cluster_name" {
  description = "AKS cluster: az aks get-credentials -g <resource_group_name> -n <this>."
  value       = module.aks.cluster_name
}

output "acr_login_server" {
  description = "Registry to push the image to; the chart's image.repository is <this>/apiary."
  value       = module.platform.acr_login_server
}

output "key_vault_name" {
  description = "The chart's secrets.keyVault.vaultName."
  value       = module.platform.key_vault_name
}

output "tenant_id" {
  description = "The chart's secrets.keyVault.tenantId."
  value       = data.azurerm_client_config.current.tenant_id
}

output "workload_identity_client_id" {
  description = "The chart's serviceAccount.workloadIdentity.clientId (and the Key Vault CSI clientID)."
  value       = azurerm_user_assigned_identity.apiary.client_id
}

output "redis_hostname" {
  description = "The chart's worker.keda.redis.address is <this>:6380."
  value       = module.data.redis_hostname
}

output "postgres_fqdn" {
  description = "PostgreSQL's private host name (the database URL is in Key Vault)."
  value       = module.data.postgres_fqdn
}

output "storage_account_name" {
  description = "Storage account with the uploads and backups containers."
  value       = module.data.storage_account_name
}

output "front_door_endpoint" {
  description = "Front Door endpoint host name: CNAME the public host name to it."
  value       = module.edge.endpoint_hostname
}

output "front_door_domain_validation_token" {
  description = "Create TXT _dnsauth.<public_hostname> with this value to validate the domain."
  value       = module.edge.custom_domain_validation_token
}
