"""Small shared building blocks: schema base, pagination."""
