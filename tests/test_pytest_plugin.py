"""The fixtures tenant-schema ships for its users, run in a site that is not this repository."""

from __future__ import annotations

import textwrap

from tests.tenantapp.helpers import run_pytest


def test_a_sites_own_suite_can_use_the_shipped_fixtures(tmp_path):
    (tmp_path / "site_settings.py").write_text(
        textwrap.dedent(f"""
        SECRET_KEY = "x"
        USE_TZ = True
        INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "tenant_schema", "notes"]
        DATABASES = {{"default": {{"ENGINE": "django.db.backends.sqlite3", "NAME": "{tmp_path}/registry.sqlite3"}}}}
        DATABASE_ROUTERS = ["tenant_schema.routers.TenantRouter"]
        TENANT_SCHEMA = {{
            "SERVERS": {{"default": "sqlite:///{tmp_path}/tenants/"}},
            "TENANT_APPS": ["notes"],
            "PLUGINS_AUTOLOAD": False,
        }}
    """)
    )
    notes = tmp_path / "notes"
    (notes / "migrations").mkdir(parents=True)
    (notes / "__init__.py").write_text("")
    (notes / "migrations" / "__init__.py").write_text("")
    (notes / "models.py").write_text(
        textwrap.dedent("""
        from django.db import models

        class Note(models.Model):
            title = models.CharField(max_length=100)
    """)
    )
    (notes / "migrations" / "0001_initial.py").write_text(
        textwrap.dedent("""
        from django.db import migrations, models

        class Migration(migrations.Migration):
            initial = True
            dependencies = []
            operations = [migrations.CreateModel("Note", fields=[
                ("id", models.AutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("title", models.CharField(max_length=100)),
            ])]
    """)
    )
    (tmp_path / "test_site.py").write_text(
        textwrap.dedent("""
        import pytest
        from tenant_schema import NoTenantSelected, tenant_context
        from notes.models import Note

        @pytest.mark.django_db
        def test_in_tenant(in_tenant):
            Note.objects.create(title="hello")
            assert Note.objects.count() == 1

        @pytest.mark.django_db
        def test_two_tenants_are_isolated(tenant_factory):
            a, b = tenant_factory(), tenant_factory()
            with tenant_context(a):
                Note.objects.create(title="a")
            with tenant_context(b):
                assert Note.objects.count() == 0

        @pytest.mark.django_db
        def test_fails_closed(tenant):
            with pytest.raises(NoTenantSelected):
                Note.objects.count()
    """)
    )
    result = run_pytest(tmp_path, "site_settings")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout
    assert list((tmp_path / "tenants").glob("*.sqlite3")) == []  # the fixtures purged what they made
