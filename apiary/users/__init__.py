"""Users and their memberships in tenants (one role per membership)."""
