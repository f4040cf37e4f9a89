output "cluster_name" {
  description = "AKS cluster name (az aks get-credentials --name)."
  value       = azurerm_kubernetes_cluster.main.name
}

output "cluster_id" {
  description = "AKS cluster id."
  value       = azurerm_kubernetes_cluster.main.id
}

output "oidc_issuer_url" {
  description = "The cluster's OIDC issuer, trusted by the workload identity's federated credential."
  value       = azurerm_kubernetes_cluster.main.oidc_issuer_url
}
