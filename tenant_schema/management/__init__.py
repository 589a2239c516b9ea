"""Management commands of tenant-schema (``tenant_*``)."""
