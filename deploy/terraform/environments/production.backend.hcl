# terraform init -backend-config=environments/production.backend.hcl
resource_group_name  = "rg-apiary-tfstate"
storage_account_name = "stapiarytfstate" # CHANGE: globally unique
container_name       = "tfstate"
key                  = "production.tfstate"
use_azuread_auth     = true
