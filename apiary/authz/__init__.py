"""Authorization: roles, the permission matrix, and the one tenant-scoping choke point."""
