output "key_vault_id" {
  description = "Key Vault id."
  value       = azurerm_key_vault.main.id
}

output "key_vault_name" {
  description = "Key Vault name (the chart's secrets.keyVault.vaultName)."
  value       = azurerm_key_vault.main.name
}

output "acr_id" {
  description = "Container registry id."
  value       = azurerm_container_registry.main.id
}

output "acr_login_server" {
  description = "Registry host the image is pushed to (the chart's image.repository prefix)."
  value       = azurerm_container_registry.main.login_server
}

output "disk_encryption_set_id" {
  description = "Disk encryption set for AKS's disks."
  value       = azurerm_disk_encryption_set.aks.id
}

output "storage_cmk_key_id" {
  description = "Versionless id of the Storage account's customer-managed key."
  value       = azurerm_key_vault_key.storage.versionless_id
}

output "storage_identity_id" {
  description = "Identity the Storage account unwraps its key as."
  value       = azurerm_user_assigned_identity.storage.id
}
