output "endpoint_hostname" {
  description = "Front Door endpoint: point the public host name's CNAME here."
  value       = azurerm_cdn_frontdoor_endpoint.main.host_name
}

output "custom_domain_validation_token" {
  description = "TXT record value (_dnsauth.<host>) proving the domain for the managed certificate."
  value       = azurerm_cdn_frontdoor_custom_domain.main.validation_token
}
