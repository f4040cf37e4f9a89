# terraform plan -var-file=environments/staging.tfvars
subscription_id    = "00000000-0000-0000-0000-000000000000" # CHANGE
environment        = "staging"
location           = "westeurope"
vnet_address_space = "10.40.0.0/16"
kubernetes_version = "1.33"
api_admin_cidrs    = ["203.0.113.0/24"] # CHANGE: operators' and CI agents' egress ranges
public_hostname    = "apiary-staging.example.com"
origin_hostname    = "ingress-staging.example.com" # CHANGE: the ingress controller's public name
waf_mode           = "Detection"
log_retention_days = 30

node_pools = {
  system = { vm_size = "Standard_D4ds_v5", min = 2, max = 3 }
  api    = { vm_size = "Standard_D4ds_v5", min = 2, max = 4 }
  worker = { vm_size = "Standard_D8ds_v5", min = 1, max = 4 }
}

postgres = {
  sku_name              = "GP_Standard_D2ds_v5"
  storage_mb            = 65536
  version               = "16"
  high_availability     = false
  backup_retention_days = 7
  geo_redundant_backup  = false
}

redis = {
  sku_name = "Standard"
  family   = "C"
  capacity = 1
}

tags = { cost-center = "apiary-staging" }
