# Apiary on Azure: a VNet with private endpoints, AKS (system, API and worker pools),
# PostgreSQL Flexible Server, Azure Cache for Redis, Key Vault, a Storage account, ACR,
# Log Analytics and Front Door with a WAF. Qdrant runs inside AKS (deploy/README.md).

locals {
  name = "${var.name_prefix}-${var.environment}"
  # Names without dashes (ACR, storage) and short ones (Key Vault: 24 characters).
  compact = "${var.name_prefix}${substr(var.environment, 0, 4)}"
  tags = merge(var.tags, {
    application = "apiary"
    environment = var.environment
    managed-by  = "terraform"
  })
}

data "azurerm_client_config" "current" {}

resource "azurerm_resource_group" "main" {
  name     = "rg-${local.name}"
  location = var.location
  tags     = local.tags
}

resource "azurerm_log_analytics_workspace" "main" {
  name                = "log-${local.name}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "PerGB2018"
  retention_in_days   = var.log_retention_days
  tags                = local.tags
}

module "network" {
  source              = "./modules/network"
  name                = local.name
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  address_space       = var.vnet_address_space
  tags                = local.tags
}

module "platform" {
  source                     = "./modules/platform"
  name                       = local.name
  compact_name               = local.compact
  location                   = azurerm_resource_group.main.location
  resource_group_name        = azurerm_resource_group.main.name
  tenant_id                  = data.azurerm_client_config.current.tenant_id
  deployer_object_id         = data.azurerm_client_config.current.object_id
  private_endpoint_subnet_id = module.network.private_endpoint_subnet_id
  private_dns_zone_ids       = module.network.private_dns_zone_ids
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  tags                       = local.tags
}

module "aks" {
  source                     = "./modules/aks"
  name                       = local.name
  location                   = azurerm_resource_group.main.location
  resource_group_name        = azurerm_resource_group.main.name
  kubernetes_version         = var.kubernetes_version
  subnet_id                  = module.network.aks_subnet_id
  api_admin_cidrs            = var.api_admin_cidrs
  admin_group_object_ids     = var.admin_group_object_ids
  node_pools                 = var.node_pools
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  acr_id                     = module.platform.acr_id
  key_vault_id               = module.platform.key_vault_id
  disk_encryption_set_id     = module.platform.disk_encryption_set_id
  tags                       = local.tags
}

module "data" {
  source                     = "./modules/data"
  name                       = local.name
  compact_name               = local.compact
  location                   = azurerm_resource_group.main.location
  resource_group_name        = azurerm_resource_group.main.name
  postgres                   = var.postgres
  redis                      = var.redis
  postgres_subnet_id         = module.network.postgres_subnet_id
  postgres_private_dns_id    = module.network.postgres_private_dns_zone_id
  private_endpoint_subnet_id = module.network.private_endpoint_subnet_id
  private_dns_zone_ids       = module.network.private_dns_zone_ids
  key_vault_id               = module.platform.key_vault_id
  storage_cmk_key_id         = module.platform.storage_cmk_key_id
  storage_identity_id        = module.platform.storage_identity_id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  tags                       = local.tags
}

module "edge" {
  source              = "./modules/edge"
  name                = local.name
  compact_name        = local.compact
  resource_group_name = azurerm_resource_group.main.name
  public_hostname     = var.public_hostname
  origin_hostname     = var.origin_hostname
  waf_mode            = var.waf_mode
  tags                = local.tags
}

# The identity Apiary's pods run as (Azure workload identity): it reads Key Vault's secrets
# and calls Azure OpenAI with Azure AD tokens, so no key is stored in the cluster.
resource "azurerm_user_assigned_identity" "apiary" {
  name                = "id-${local.name}-apiary"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

# The chart's service accounts in the `apiary` namespace: the pods' own, and the migration
# Job's hook copy (it runs before the release's objects exist).
resource "azurerm_federated_identity_credential" "apiary" {
  for_each            = toset(["apiary", "apiary-migrate"])
  name                = "${each.key}-service-account"
  resource_group_name = azurerm_resource_group.main.name
  parent_id           = azurerm_user_assigned_identity.apiary.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = module.aks.oidc_issuer_url
  subject             = "system:serviceaccount:apiary:${each.key}"
}

resource "azurerm_role_assignment" "apiary_key_vault" {
  scope                = module.platform.key_vault_id
  role_definition_name = "Key Vault Secrets User"
  principal_id         = azurerm_user_assigned_identity.apiary.principal_id
}

resource "azurerm_role_assignment" "apiary_storage" {
  scope                = module.data.storage_account_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.apiary.principal_id
}

# The application's secrets, written once from the resources made above; rotate by
# changing them in Key Vault (the CSI driver re-syncs every two minutes).
resource "azurerm_key_vault_secret" "database_url" {
  name            = "apiary-database-url"
  value           = "postgresql+asyncpg://${module.data.postgres_admin_login}:${module.data.postgres_admin_password}@${module.data.postgres_fqdn}:5432/apiary?ssl=require"
  key_vault_id    = module.platform.key_vault_id
  content_type    = "text/plain"
  expiration_date = timeadd(plantimestamp(), "8760h")
  lifecycle {
    ignore_changes = [expiration_date]
  }
}

resource "azurerm_key_vault_secret" "redis_url" {
  name            = "apiary-redis-url"
  value           = "rediss://:${module.data.redis_primary_key}@${module.data.redis_hostname}:6380/0"
  key_vault_id    = module.platform.key_vault_id
  content_type    = "text/plain"
  expiration_date = timeadd(plantimestamp(), "8760h")
  lifecycle {
    ignore_changes = [expiration_date]
  }
}

resource "azurerm_key_vault_secret" "redis_password" {
  name            = "apiary-redis-password"
  value           = module.data.redis_primary_key
  key_vault_id    = module.platform.key_vault_id
  content_type    = "text/plain"
  expiration_date = timeadd(plantimestamp(), "8760h")
  lifecycle {
    ignore_changes = [expiration_date]
  }
}

resource "random_password" "jwt_secret" {
  length  = 64
  special = false
}

resource "azurerm_key_vault_secret" "jwt_secret" {
  name            = "apiary-jwt-secret"
  value           = random_password.jwt_secret.result
  key_vault_id    = module.platform.key_vault_id
  content_type    = "text/plain"
  expiration_date = timeadd(plantimestamp(), "8760h")
  lifecycle {
    ignore_changes = [expiration_date]
  }
}

resource "random_password" "qdrant_api_key" {
  length  = 48
  special = false
}

# Qdrant (inside AKS) and Apiary both read this key: the Qdrant chart's apiKey and the
# Apiary chart's secrets.keys.qdrantApiKey.
resource "azurerm_key_vault_secret" "qdrant_api_key" {
  name            = "apiary-qdrant-api-key"
  value           = random_password.qdrant_api_key.result
  key_vault_id    = module.platform.key_vault_id
  content_type    = "text/plain"
  expiration_date = timeadd(plantimestamp(), "8760h")
  lifecycle {
    ignore_changes = [expiration_date]
  }
}
