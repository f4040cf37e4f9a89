# PostgreSQL Flexible Server (private access, optional zone-redundant HA, backups), Azure
# Cache for Redis (private endpoint, TLS only) and the Storage account for document
# uploads and database exports (private endpoint, customer-managed key).

resource "random_password" "postgres_admin" {
  length  = 40
  special = false
}

resource "azurerm_postgresql_flexible_server" "main" {
  # checkov:skip=CKV2_AZURE_57: private access through VNet integration (delegated subnet and private DNS zone, no public endpoint); Flexible Server takes VNet integration or a private endpoint, not both
  name                          = "psql-${var.name}"
  location                      = var.location
  resource_group_name           = var.resource_group_name
  version                       = var.postgres.version
  sku_name                      = var.postgres.sku_name
  storage_mb                    = var.postgres.storage_mb
  auto_grow_enabled             = true
  delegated_subnet_id           = var.postgres_subnet_id
  private_dns_zone_id           = var.postgres_private_dns_id
  public_network_access_enabled = false
  administrator_login           = "apiary"
  administrator_password        = random_password.postgres_admin.result
  backup_retention_days         = var.postgres.backup_retention_days
  geo_redundant_backup_enabled  = var.postgres.geo_redundant_backup
  zone                          = "1"
  tags                          = var.tags

  dynamic "high_availability" {
    for_each = var.postgres.high_availability ? [1] : []
    content {
      mode                      = "ZoneRedundant"
      standby_availability_zone = "2"
    }
  }

  maintenance_window {
    day_of_week  = 0
    start_hour   = 3
    start_minute = 0
  }
}

resource "azurerm_postgresql_flexible_server_database" "apiary" {
  name      = "apiary"
  server_id = azurerm_postgresql_flexible_server.main.id
  charset   = "UTF8"
  collation = "en_US.utf8"
}

resource "azurerm_postgresql_flexible_server_configuration" "log_checkpoints" {
  name      = "log_checkpoints"
  server_id = azurerm_postgresql_flexible_server.main.id
  value     = "on"
}

resource "azurerm_postgresql_flexible_server_configuration" "log_connections" {
  name      = "log_connections"
  server_id = azurerm_postgresql_flexible_server.main.id
  value     = "on"
}

resource "azurerm_postgresql_flexible_server_configuration" "connection_throttling" {
  name      = "connection_throttle.enable"
  server_id = azurerm_postgresql_flexible_server.main.id
  value     = "on"
}

resource "azurerm_redis_cache" "main" {
  name                          = "redis-${var.name}"
  location                      = var.location
  resource_group_name           = var.resource_group_name
  sku_name                      = var.redis.sku_name
  family                        = var.redis.family
  capacity                      = var.redis.capacity
  non_ssl_port_enabled          = false
  minimum_tls_version           = "1.2"
  public_network_access_enabled = false
  redis_version                 = "6"
  zones                         = var.redis.sku_name == "Premium" ? ["1", "2", "3"] : null
  tags                          = var.tags

  redis_configuration {
    # Celery's messages and the swarm's bounds must not be evicted under memory pressure.
    maxmemory_policy = "noeviction"
  }
}

resource "azurerm_private_endpoint" "redis" {
  name                = "pe-${var.name}-redis"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "redis"
    private_connection_resource_id = azurerm_redis_cache.main.id
    subresource_names              = ["redisCache"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "redis"
    private_dns_zone_ids = [var.private_dns_zone_ids["redis"]]
  }
}

resource "azurerm_storage_account" "main" {
  # checkov:skip=CKV_AZURE_33: the queue service is not used (blobs only); blob reads, writes and deletes are logged by the diagnostic setting below
  name                            = "st${var.compact_name}"
  location                        = var.location
  resource_group_name             = var.resource_group_name
  account_tier                    = "Standard"
  account_replication_type        = "GZRS"
  min_tls_version                 = "TLS1_2"
  https_traffic_only_enabled      = true
  public_network_access_enabled   = false
  allow_nested_items_to_be_public = false
  shared_access_key_enabled       = false
  local_user_enabled              = false
  tags                            = var.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [var.storage_identity_id]
  }

  customer_managed_key {
    key_vault_key_id          = var.storage_cmk_key_id
    user_assigned_identity_id = var.storage_identity_id
  }

  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = 30
    }
    container_delete_retention_policy {
      days = 30
    }
  }

  sas_policy {
    expiration_period = "01.00:00:00"
  }

  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices", "Logging", "Metrics"]
  }
}

resource "azurerm_storage_container" "container" {
  # checkov:skip=CKV2_AZURE_21: blob read/write/delete logging is the blob service's diagnostic setting (azurerm_monitor_diagnostic_setting.blob), which this check does not follow
  for_each              = toset(["uploads", "backups"])
  name                  = each.key
  storage_account_id    = azurerm_storage_account.main.id
  container_access_type = "private"
}

resource "azurerm_private_endpoint" "blob" {
  name                = "pe-${var.name}-blob"
  location            = var.location
  resource_group_name = var.resource_group_name
  subnet_id           = var.private_endpoint_subnet_id
  tags                = var.tags

  private_service_connection {
    name                           = "blob"
    private_connection_resource_id = azurerm_storage_account.main.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }

  private_dns_zone_group {
    name                 = "blob"
    private_dns_zone_ids = [var.private_dns_zone_ids["blob"]]
  }
}

resource "azurerm_monitor_diagnostic_setting" "postgres" {
  name                       = "to-log-analytics"
  target_resource_id         = azurerm_postgresql_flexible_server.main.id
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category = "PostgreSQLLogs"
  }
}

resource "azurerm_monitor_diagnostic_setting" "blob" {
  name                       = "to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.main.id}/blobServices/default"
  log_analytics_workspace_id = var.log_analytics_workspace_id

  enabled_log {
    category = "StorageRead"
  }
  enabled_log {
    category = "StorageWrite"
  }
  enabled_log {
    category = "StorageDelete"
  }
}
