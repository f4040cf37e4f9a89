# AKS: a system pool for add-ons, an API pool and a worker pool (each autoscaled and
# tainted so only its pods land there), workload identity with the OIDC issuer, the Key
# Vault Secrets Store CSI driver, Azure Policy, Container Insights and Azure RBAC.

resource "azurerm_kubernetes_cluster" "main" {
  # checkov:skip=CKV_AZURE_6: authorized_ip_ranges is set below from var.api_admin_cidrs, which the root module's validation requires to be non-empty; checkov cannot resolve a module input
  # checkov:skip=CKV_AZURE_115: a public API server limited to api_admin_cidrs instead of a private cluster, so hosted CI agents and operators can deploy without a VNet-connected jump host; set private_cluster_enabled here if you run self-hosted agents in the VNet
  name                              = "aks-${var.name}"
  location                          = var.location
  resource_group_name               = var.resource_group_name
  dns_prefix                        = var.name
  kubernetes_version                = var.kubernetes_version
  sku_tier                          = "Standard"
  automatic_upgrade_channel         = "patch"
  node_os_upgrade_channel           = "NodeImage"
  oidc_issuer_enabled               = true
  workload_identity_enabled         = true
  azure_policy_enabled              = true
  local_account_disabled            = true
  role_based_access_control_enabled = true
  disk_encryption_set_id            = var.disk_encryption_set_id
  image_cleaner_enabled             = true
  image_cleaner_interval_hours      = 48
  tags                              = var.tags

  default_node_pool {
    name                         = "system"
    vm_size                      = var.node_pools.system.vm_size
    vnet_subnet_id               = var.subnet_id
    auto_scaling_enabled         = true
    min_count                    = var.node_pools.system.min
    max_count                    = var.node_pools.system.max
    max_pods                     = 50
    os_disk_type                 = "Ephemeral"
    os_disk_size_gb              = 64
    host_encryption_enabled      = true
    only_critical_addons_enabled = true
    zones                        = ["1", "2", "3"]
    upgrade_settings {
      max_surge = "33%"
    }
  }

  identity {
    type = "SystemAssigned"
  }

  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_policy      = "cilium"
    network_data_plane  = "cilium"
    load_balancer_sku   = "standard"
  }

  api_server_access_profile {
    authorized_ip_ranges = var.api_admin_cidrs
  }

  azure_active_directory_role_based_access_control {
    azure_rbac_enabled     = true
    admin_group_object_ids = var.admin_group_object_ids
  }

  key_vault_secrets_provider {
    secret_rotation_enabled  = true
    secret_rotation_interval = "2m"
  }

  oms_agent {
    log_analytics_workspace_id      = var.log_analytics_workspace_id
    msi_auth_for_monitoring_enabled = true
  }

  auto_scaler_profile {
    balance_similar_node_groups = true
    expander                    = "least-waste"
    scale_down_unneeded         = "10m"
  }

  maintenance_window_auto_upgrade {
    frequency   = "Weekly"
    interval    = 1
    duration    = 4
    day_of_week = "Sunday"
    start_time  = "02:00"
    utc_offset  = "+00:00"
  }
}

# One pool per Apiary role, so the API's latency never competes with swarm runs for CPU.
resource "azurerm_kubernetes_cluster_node_pool" "role" {
  for_each = {
    api    = var.node_pools.api
    worker = var.node_pools.worker
  }
  name                    = each.key
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.main.id
  vm_size                 = each.value.vm_size
  vnet_subnet_id          = var.subnet_id
  auto_scaling_enabled    = true
  min_count               = each.value.min
  max_count               = each.value.max
  max_pods                = 50
  os_disk_type            = "Ephemeral"
  os_disk_size_gb         = 128
  host_encryption_enabled = true
  zones                   = ["1", "2", "3"]
  node_labels             = { "apiary.io/pool" = each.key }
  node_taints             = ["apiary.io/pool=${each.key}:NoSchedule"]
  tags                    = var.tags
  upgrade_settings {
    max_surge = "33%"
  }
}

resource "azurerm_role_assignment" "kubelet_acr_pull" {
  scope                = var.acr_id
  role_definition_name = "AcrPull"
  principal_id         = azurerm_kubernetes_cluster.main.kubelet_identity[0].object_id
}

resource "azurerm_monitor_diagnostic_setting" "aks" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_kubernetes_cluster.main.id
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category = "kube-audit-admin"
  }
  enabled_log {
    category = "cluster-autoscaler"
  }
}
