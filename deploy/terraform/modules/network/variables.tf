variable "name" {
  description = "Name stem, e.g. apiary-production."
  type        = string
}

variable "location" {
  description = "Azure region."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group the network lives in."
  type        = string
}

variable "address_space" {
  description = "The VNet's CIDR range; the subnets are carved out of it."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
}
