output "vnet_id" {
  description = "The VNet's id."
  value       = azurerm_virtual_network.main.id
}

output "aks_subnet_id" {
  description = "Subnet of the AKS nodes."
  value       = azurerm_subnet.aks.id
}

output "postgres_subnet_id" {
  description = "Subnet delegated to PostgreSQL Flexible Server."
  value       = azurerm_subnet.postgres.id
}

output "private_endpoint_subnet_id" {
  description = "Subnet of the private endpoints."
  value       = azurerm_subnet.private_endpoints.id
}

output "postgres_private_dns_zone_id" {
  description = "Private DNS zone PostgreSQL registers its name in."
  value       = azurerm_private_dns_zone.postgres.id
}

output "private_dns_zone_ids" {
  description = "Private Link DNS zones by service: redis, vault, blob, acr."
  value       = { for key, zone in azurerm_private_dns_zone.private_link : key => zone.id }
}
