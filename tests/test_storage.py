"""Per-tenant file storage: each tenant's files under its own prefix, and no name leaves it.

The behaviour tests run on Django's ``FileSystemStorage`` (in a temporary
directory) and ``InMemoryStorage``, each with ``TenantStorageMixin`` in
front: the mixin only rewrites names, so what holds for both holds for any
backend.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured, SuspiciousFileOperation
from django.core.files.base import ContentFile
from django.core.files.storage import InMemoryStorage, default_storage, storages
from django.db import models
from django.test import override_settings
from django.test.utils import isolate_apps

from tenant_schema import NoTenantSelected, current_tenant, tenant_context
from tenant_schema.lifecycle.archive import purge_tenant
from tenant_schema.storage import TenantFileSystemStorage, TenantStorageMixin, check_name

pytestmark = pytest.mark.django_db


class TenantInMemoryStorage(TenantStorageMixin, InMemoryStorage):
    """The mixin on another backend, the way a site puts it on S3Storage."""


@pytest.fixture
def media(tmp_path) -> Path:
    """``MEDIA_ROOT``; beside it, a file no tenant may reach."""
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "secret.txt").write_bytes(b"not a tenant's")
    (tmp_path / "media").mkdir()
    return tmp_path / "media"


@pytest.fixture(params=["filesystem", "memory"])
def storage(request, media):
    if request.param == "filesystem":
        return TenantFileSystemStorage(location=media, base_url="/media/")
    return TenantInMemoryStorage(location=media, base_url="/media/")


@pytest.fixture
def two(tenant_factory):
    return tenant_factory(), tenant_factory()


def tree(root: Path) -> list[tuple[str, bytes | None]]:
    """Every file and directory under ``root``, with file contents."""
    return sorted((str(p.relative_to(root)), p.read_bytes() if p.is_file() else None) for p in root.rglob("*"))


def read(storage, name: str) -> bytes:
    with storage.open(name) as handle:
        return handle.read()


# -- each tenant its own files ------------------------------------------------------


def test_two_tenants_saving_the_same_name_get_their_own_files(storage, two):
    a, b = two
    with tenant_context(a):
        assert storage.save("invoices/a.pdf", ContentFile(b"from a")) == "invoices/a.pdf"
        assert storage.save("only-a.txt", ContentFile(b"a's")) == "only-a.txt"
    with tenant_context(b):
        assert storage.save("invoices/a.pdf", ContentFile(b"from b")) == "invoices/a.pdf"  # not a_<random>.pdf
        assert read(storage, "invoices/a.pdf") == b"from b"
        assert storage.size("invoices/a.pdf") == 6
        assert not storage.exists("only-a.txt")
        with pytest.raises(FileNotFoundError):
            storage.open("only-a.txt")
        storage.delete("only-a.txt")  # deletes nothing of a's
    with tenant_context(a):
        assert read(storage, "invoices/a.pdf") == b"from a"
        assert read(storage, "only-a.txt") == b"a's"
        storage.delete("invoices/a.pdf")
        assert not storage.exists("invoices/a.pdf")
    with tenant_context(b):
        assert read(storage, "invoices/a.pdf") == b"from b"


def test_a_taken_name_gets_an_alternative_within_the_tenant(storage, two):
    a, b = two
    with tenant_context(a):
        first = storage.save("report.txt", ContentFile(b"1"))
        second = storage.save("report.txt", ContentFile(b"2"))
        assert first == "report.txt" and second != first and second.startswith("report_")
        assert storage.get_available_name("report.txt") not in (first, second)
        assert not storage.is_name_available("report.txt") and storage.is_name_available("new.txt")
        assert (read(storage, first), read(storage, second)) == (b"1", b"2")
    with tenant_context(b):
        assert storage.get_available_name("report.txt") == "report.txt"


def test_max_length_bounds_the_name_the_field_stores_not_the_prefixed_one(storage, tenant_factory):
    with tenant_context(tenant_factory()):
        assert storage.save("invoices/abcdef.pdf", ContentFile(b"1"), max_length=19) == "invoices/abcdef.pdf"
        again = storage.save("invoices/abcdef.pdf", ContentFile(b"2"), max_length=25)
        assert len(again) <= 25 and again.startswith("invoices/abcd")  # truncated to fit, as Django does


def test_files_live_in_the_tenants_directory_named_after_its_slug_and_uid(media, two):
    a, b = two
    storage = TenantFileSystemStorage(location=media)
    for tenant in (a, b):
        with tenant_context(tenant):
            storage.save("invoices/a.pdf", ContentFile(tenant.slug.encode()))
            assert storage.current_prefix() == f"{tenant.slug}-{tenant.uid.hex}"
            assert storage.path("invoices/a.pdf") == str(media / storage.current_prefix() / "invoices" / "a.pdf")
            assert storage.path("") == str(media / storage.current_prefix())
    assert tree(media) == sorted(
        item
        for t in (a, b)
        for item in [
            (f"{t.slug}-{t.uid.hex}", None),
            (f"{t.slug}-{t.uid.hex}/invoices", None),
            (f"{t.slug}-{t.uid.hex}/invoices/a.pdf", t.slug.encode()),
        ]
    )


def test_a_purged_slug_registered_again_sees_none_of_the_old_files(media, tenant_factory):
    storage = TenantFileSystemStorage(location=media)
    old = tenant_factory()
    with tenant_context(old):
        storage.save("contract.pdf", ContentFile(b"the old tenant's"))
    purge_tenant(old)  # drops the database, not the files
    new = tenant_factory(old.slug)
    with tenant_context(new):
        assert not storage.exists("contract.pdf")
        assert storage.listdir("") == ([], [])
        storage.save("contract.pdf", ContentFile(b"the new tenant's"))
    assert (media / f"{old.slug}-{old.uid.hex}" / "contract.pdf").read_bytes() == b"the old tenant's"


def test_url_is_under_the_tenants_prefix(storage, two):
    a, b = two
    for tenant in (a, b):
        with tenant_context(tenant):
            name = storage.save("invoices/March 1.pdf", ContentFile(b"x"))
            assert storage.url(name) == f"/media/{tenant.slug}-{tenant.uid.hex}/invoices/March%201.pdf"


def test_listdir_lists_only_the_tenants_files(storage, tenant_factory):
    a, b, empty = tenant_factory(), tenant_factory(), tenant_factory()
    with tenant_context(a):
        storage.save("a.txt", ContentFile(b"a"))
        storage.save("docs/x.txt", ContentFile(b"a"))
    with tenant_context(b):
        storage.save("b.txt", ContentFile(b"b"))
    with tenant_context(a):
        assert storage.listdir("") == (["docs"], ["a.txt"])
        assert storage.listdir("docs") == storage.listdir("docs/") == ([], ["x.txt"])
    with tenant_context(b):
        assert storage.listdir("") == ([], ["b.txt"])
        with pytest.raises(FileNotFoundError):
            storage.listdir("docs")
    with tenant_context(empty):
        assert storage.listdir("") == ([], [])  # nothing stored yet


def test_generate_filename_is_relative_to_the_tenant(storage):
    """What a FileField passes to save(): the backend's cleaned name, checked, without the prefix."""
    assert storage.generate_filename("invoices/March 1.pdf") == "invoices/March_1.pdf"
    with pytest.raises(SuspiciousFileOperation):
        storage.generate_filename("../invoices/a.pdf")


# -- no tenant ----------------------------------------------------------------------------


NAME_CALLS = {
    "save": lambda s, name: s.save(name, ContentFile(b"x")),
    "open": lambda s, name: s.open(name),
    "open for writing": lambda s, name: s.open(name, "wb"),
    "exists": lambda s, name: s.exists(name),
    "delete": lambda s, name: s.delete(name),
    "size": lambda s, name: s.size(name),
    "url": lambda s, name: s.url(name),
    "path": lambda s, name: s.path(name),
    "listdir": lambda s, name: s.listdir(name),
    "get_available_name": lambda s, name: s.get_available_name(name),
    "is_name_available": lambda s, name: s.is_name_available(name),
    "get_accessed_time": lambda s, name: s.get_accessed_time(name),
    "get_created_time": lambda s, name: s.get_created_time(name),
    "get_modified_time": lambda s, name: s.get_modified_time(name),
}


def test_no_tenant_is_an_error_and_nothing_is_written(storage, media):
    before = tree(media.parent)
    for call in NAME_CALLS.values():
        with pytest.raises(NoTenantSelected, match="no tenant selected"):
            call(storage, "invoices/a.pdf")
    with pytest.raises(NoTenantSelected):
        storage.listdir("")  # not the shared root
    assert tree(media.parent) == before


def test_a_storage_can_be_made_outside_any_tenant(media):
    """Django makes ``default_storage`` on first use, wherever that is; InMemoryStorage builds its root then."""
    assert current_tenant() is None
    TenantInMemoryStorage(location=media)
    TenantFileSystemStorage(location=media)


# -- no name leaves the tenant ---------------------------------------------------------

TRAVERSALS = [
    "../other/secret.txt",
    "../../etc/passwd",
    "invoices/../../other/secret.txt",
    "invoices/../a.pdf",
    "..",
    ".",
    "./a.pdf",
    "invoices/./a.pdf",
    "...",
    "/etc/passwd",
    "/a.pdf",
    "//a.pdf",
    "invoices//a.pdf",
    "C:/Windows/win.ini",
    "c:a.pdf",
    "..\\other\\secret.txt",
    "invoices\\a.pdf",
    "a.pdf\x00.png",
    "a\n.pdf",
    "%2e%2e/other/secret.txt",
    "%2E%2E%2Fother%2Fsecret.txt",
    "..%2fother%2fsecret.txt",
    "..%5cother%5csecret.txt",
    "%252e%252e/other/secret.txt",
    "%2fetc/passwd",
    "a.pdf%00.png",
    "\uff0e\uff0e/other/secret.txt",  # fullwidth dots: '..' once NFKC-normalised
    "\u2025/other/secret.txt",  # the two-dot leader
    "..\uff0fother/secret.txt",  # fullwidth solidus
]


def test_every_traversal_is_refused_and_nothing_is_touched(storage, media, two):
    a, b = two
    with tenant_context(b):
        storage.save("secret.txt", ContentFile(b"b's"))
    before = tree(media.parent)
    let_through = []
    for selected in (a, None):  # names are checked first: refused even with no tenant selected
        with tenant_context(selected) if selected else contextlib.nullcontext():
            for name in TRAVERSALS:
                for method, call in NAME_CALLS.items():
                    try:
                        call(storage, name)
                    except SuspiciousFileOperation as exc:
                        assert repr(name) in str(exc) and "relative to the tenant's files" in str(exc)
                    except Exception as exc:  # noqa: BLE001 - reported below
                        let_through.append((method, name, selected, repr(exc)))
                    else:
                        let_through.append((method, name, selected, "no error"))
    assert let_through == []
    assert tree(media.parent) == before
    with tenant_context(b):
        assert read(storage, "secret.txt") == b"b's"


def test_a_trailing_slash_or_an_empty_name_is_not_a_file(storage, tenant_factory):
    with tenant_context(tenant_factory()):
        for name in ("", "invoices/"):
            with pytest.raises(SuspiciousFileOperation):
                storage.save(name, ContentFile(b"x"))
            with pytest.raises(SuspiciousFileOperation):
                storage.delete(name)  # never the tenant's whole directory
        with pytest.raises(TypeError, match="must be a str"):
            storage.exists(b"a.pdf")
        assert storage.listdir("") == ([], [])


@pytest.mark.parametrize(
    "name", ["a.pdf", "invoices/2024/a.tar.gz", "50%off.pdf", "100%25.txt", "r\u00e9sum\u00e9.pdf", "a..b/c...d"]
)
def test_ordinary_names_pass(name):
    assert check_name(name) == name


def test_the_prefix_hook(media, two):
    a, b = two

    class ByTenant(TenantFileSystemStorage):
        def tenant_prefix(self, tenant):
            return f"tenants/{tenant.slug}"

    class Escaping(TenantFileSystemStorage):
        def tenant_prefix(self, tenant):
            return "../other"

    with tenant_context(a):
        assert ByTenant(location=media).save("x.txt", ContentFile(b"a")) == "x.txt"
        with pytest.raises(ImproperlyConfigured, match=r"Escaping.tenant_prefix\(\) returned '../other'"):
            Escaping(location=media).save("secret.txt", ContentFile(b"overwritten"))
    assert (media / "tenants" / a.slug / "x.txt").read_bytes() == b"a"
    assert (media.parent / "other" / "secret.txt").read_bytes() == b"not a tenant's"


# -- a FileField, STORAGES, async code ------------------------------------------------


@pytest.fixture
def media_settings(media):
    """``STORAGES`` as a site configures it; Django resets ``default_storage`` when the override ends."""
    with override_settings(
        STORAGES={
            "default": {"BACKEND": "tenant_schema.storage.TenantFileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
        MEDIA_ROOT=str(media),
        MEDIA_URL="/media/",
    ):
        yield media


def test_the_storages_setting_configures_default_storage(media_settings, tenant_factory):
    tenant = tenant_factory()
    assert isinstance(storages["default"], TenantFileSystemStorage)
    with pytest.raises(NoTenantSelected):
        default_storage.save("a.txt", ContentFile(b"x"))
    with tenant_context(tenant):
        assert default_storage.save("a.txt", ContentFile(b"x")) == "a.txt"
        assert default_storage.url("a.txt") == f"/media/{tenant.slug}-{tenant.uid.hex}/a.txt"
    assert (media_settings / f"{tenant.slug}-{tenant.uid.hex}" / "a.txt").read_bytes() == b"x"


def test_default_storage_follows_the_storages_setting_both_ways(media):
    assert not isinstance(default_storage, TenantStorageMixin)
    with override_settings(STORAGES={"default": {"BACKEND": "tenant_schema.storage.TenantFileSystemStorage"}}):
        assert isinstance(default_storage, TenantFileSystemStorage)
    assert not isinstance(default_storage, TenantStorageMixin)


@isolate_apps("tests.tenantapp")
def test_a_file_field_stores_the_name_relative_to_the_tenant(media_settings, two):
    """The row keeps ``invoices/a.pdf``; read back in its tenant, it is that tenant's file."""
    a, b = two

    class Invoice(models.Model):
        pdf = models.FileField(upload_to="invoices")  # default_storage: STORAGES

        class Meta:
            app_label = "tenantapp"  # a tenant app: rows go to the current tenant's database
            db_table = "storage_invoice"
            managed = False

    for tenant in (a, b):
        with tenant.database.connection.schema_editor() as editor:
            editor.create_model(Invoice)
        with tenant_context(tenant):
            Invoice.objects.create(pdf=ContentFile(tenant.slug.encode(), name="March 1.pdf"))

    for tenant in (a, b):
        with tenant_context(tenant):
            invoice = Invoice.objects.get()
            assert invoice.pdf.name == "invoices/March_1.pdf"  # the same value in both databases
            with invoice.pdf.open() as pdf:
                assert pdf.read() == tenant.slug.encode()
            assert invoice.pdf.url == f"/media/{tenant.slug}-{tenant.uid.hex}/invoices/March_1.pdf"
            assert invoice.pdf.size == len(tenant.slug)
    with tenant_context(b):  # a name a stored resolves to b's file in b
        with Invoice(pdf="invoices/March_1.pdf").pdf.open() as pdf:
            assert pdf.read() == b.slug.encode()


@pytest.mark.django_db(transaction=True)
async def test_sync_to_async_keeps_the_tenant(media, tenant_factory):
    a, b = await sync_to_async(tenant_factory)(), await sync_to_async(tenant_factory)()
    storage = TenantFileSystemStorage(location=media)

    async def save_in(tenant):
        async with tenant_context(tenant):
            await asyncio.sleep(0)
            name = await sync_to_async(storage.save, thread_sensitive=False)(
                "same.txt", ContentFile(tenant.slug.encode())
            )
            return name, await sync_to_async(read, thread_sensitive=False)(storage, name)

    results = await asyncio.gather(save_in(a), save_in(b), save_in(a))
    assert results[1] == ("same.txt", b.slug.encode())
    # a's two saves race in two threads: one gets the name, the other a free variant of it.
    (first, a_content), (second, a_content2) = sorted([results[0], results[2]], key=lambda r: r[0] != "same.txt")
    assert first == "same.txt" and second.startswith("same_") and a_content == a_content2 == a.slug.encode()
    assert current_tenant() is None
    with pytest.raises(NoTenantSelected):
        await sync_to_async(storage.exists)("same.txt")
