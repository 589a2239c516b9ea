"""A small django-tenants project: the other side of ``./run bench`` (see worker.py)."""
