"""Tenants (organizations): the unit of isolation, billing and membership."""
