output "postgres_fqdn" {
  description = "PostgreSQL's private host name."
  value       = azurerm_postgresql_flexible_server.main.fqdn
}

output "postgres_admin_login" {
  description = "PostgreSQL administrator login."
  value       = azurerm_postgresql_flexible_server.main.administrator_login
}

output "postgres_admin_password" {
  description = "PostgreSQL administrator password (written to Key Vault, never printed)."
  value       = random_password.postgres_admin.result
  sensitive   = true
}

output "redis_hostname" {
  description = "Redis host name (port 6380, TLS)."
  value       = azurerm_redis_cache.main.hostname
}

output "redis_primary_key" {
  description = "Redis access key (written to Key Vault, never printed)."
  value       = azurerm_redis_cache.main.primary_access_key
  sensitive   = true
}

output "storage_account_id" {
  description = "Storage account id."
  value       = azurerm_storage_account.main.id
}

output "storage_account_name" {
  description = "Storage account name."
  value       = azurerm_storage_account.main.name
}
