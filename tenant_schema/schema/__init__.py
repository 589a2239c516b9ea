"""Schema and rows: dataclasses as Django models, DDL in all-or-nothing batches, tables and their rows.

- ``mapping``: annotations to Django fields, dataclasses to models (and existing tables back to models);
- ``batch``: ``DDLBatch``, the one all-or-nothing mechanism for DDL;
- ``ddl``: tables and indexes (``register_tables``, ``create_indexes``, ...);
- ``tables``, ``rows``, ``bulk``: the ``Table`` API, row conversion, bulk writes.
"""
