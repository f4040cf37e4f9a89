# terraform plan -var-file=environments/production.tfvars
subscription_id    = "00000000-0000-0000-0000-000000000000" # CHANGE
environment        = "production"
location           = "westeurope"
vnet_address_space = "10.50.0.0/16"
kubernetes_version = "1.33"
api_admin_cidrs    = ["203.0.113.0/24"] # CHANGE: operators' and CI agents' egress ranges
public_hostname    = "apiary.example.com"
origin_hostname    = "ingress.example.com" # CHANGE: the ingress controller's public name
waf_mode           = "Prevention"
log_retention_days = 90

# API: 10-50 pods of 1 CPU on 8-vCPU nodes; workers: 10-100 pods (KEDA) on 16-vCPU nodes.
node_pools = {
  system = { vm_size = "Standard_D4ds_v5", min = 3, max = 5 }
  api    = { vm_size = "Standard_D8ds_v5", min = 3, max = 12 }
  worker = { vm_size = "Standard_D16ds_v5", min = 3, max = 30 }
}

postgres = {
  sku_name              = "GP_Standard_D8ds_v5"
  storage_mb            = 262144
  version               = "16"
  high_availability     = true
  backup_retention_days = 35
  geo_redundant_backup  = true
}

redis = {
  sku_name = "Premium"
  family   = "P"
  capacity = 2
}

tags = { cost-center = "apiary-production" }
