"""pytest fixtures for sites using tenant-schema (registered as the ``tenant_schema`` pytest plugin)."""
