variable "name" {
  description = "Name stem, e.g. apiary-production."
  type        = string
}

variable "compact_name" {
  description = "Name stem without dashes (the WAF policy's name), e.g. apiaryprod."
  type        = string
}

variable "resource_group_name" {
  description = "Resource group."
  type        = string
}

variable "public_hostname" {
  description = "Public host name served (a CNAME to the Front Door endpoint)."
  type        = string
}

variable "origin_hostname" {
  description = "The AKS ingress controller's public host name or IP."
  type        = string
}

variable "waf_mode" {
  description = "Prevention or Detection."
  type        = string
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
}
