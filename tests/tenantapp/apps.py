import multiprocessing
import os

from django.apps import AppConfig

#: A tenant whose migration kills the worker process migrating it (tests of migrate_tenants(jobs>1)).
KILL_WORKER_ENV = "TENANT_SCHEMA_TEST_KILL_WORKER_FOR"


def _kill_worker(sender, tenant, **kwargs):
    if tenant.slug == os.environ.get(KILL_WORKER_ENV) and multiprocessing.parent_process() is not None:
        os._exit(1)  # a worker process dying mid-run, as when killed or out of memory


class TenantAppConfig(AppConfig):
    name = "tests.tenantapp"
    label = "tenantapp"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from tenant_schema.signals import pre_tenant_migrate

        pre_tenant_migrate.connect(_kill_worker, dispatch_uid="tests.tenantapp.kill_worker")
