"""tenant_schema.cache: each tenant's cache entries apart, in LocMemCache and in a real Redis (RedisCache).

Every test that takes ``cache`` runs against both backends, configured the
way a site does it (``CACHES`` with ``KEY_FUNCTION``) and reached through
``django.core.cache.caches``. Each test has its own ``KEY_PREFIX``, so runs
sharing a Redis never read each other's keys; its Redis keys are deleted
afterwards.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import uuid

import pytest
from django.core.cache import caches
from django.http import HttpResponse, JsonResponse
from django.test import Client, override_settings
from django.urls import path
from hypothesis import given
from hypothesis import strategies as st

from tenant_schema import tenant_context
from tenant_schema.cache import make_key, reverse_key, tenant_key_pattern
from tenant_schema.context import current_tenant
from tenant_schema.lifecycle.archive import purge_tenant
from tenant_schema.models import Tenant

from .conftest import require_redis

KEY_FUNCTION = "tenant_schema.cache.make_key"
in_registry = pytest.mark.django_db(transaction=True)


def backend_settings(kind: str, prefix: str) -> dict:
    if kind == "redis":
        return {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": require_redis(),
            "KEY_PREFIX": prefix,
            "KEY_FUNCTION": KEY_FUNCTION,
        }
    return {
        "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
        "LOCATION": prefix,  # LocMemCaches of one LOCATION share their entries
        "KEY_PREFIX": prefix,
        "KEY_FUNCTION": KEY_FUNCTION,
    }


def delete_redis_keys(url: str, pattern: str) -> None:
    import redis

    client = redis.Redis.from_url(url)
    try:
        for key in client.scan_iter(match=pattern):
            client.delete(key)
    finally:
        client.close()


@pytest.fixture(params=["locmem", "redis"])
def cache(request):
    """``caches["default"]`` with ``KEY_FUNCTION = make_key``, on each backend; a prefix with a colon, as sites use."""
    prefix = f"tstest:{uuid.uuid4().hex[:12]}"
    config = backend_settings(request.param, prefix)
    # override_settings sends setting_changed: Django closes the caches and
    # forgets their instances on the way in and on the way out.
    with override_settings(CACHES={"default": config}):
        yield caches["default"]
    if request.param == "redis":
        delete_redis_keys(config["LOCATION"], f"{prefix}:*")


@pytest.fixture
def two_tenants(tenant_factory):
    return tenant_factory(), tenant_factory()


# -- one key, one entry per tenant -----------------------------------------------------


@in_registry
def test_two_tenants_setting_the_same_key_read_their_own(cache, two_tenants):
    a, b = two_tenants
    for tenant in (a, b):
        with tenant_context(tenant):
            cache.set("greeting", f"hello {tenant.slug}")
    cache.set("greeting", "hello nobody")  # no tenant selected
    for tenant in (a, b):
        with tenant_context(tenant):
            assert cache.get("greeting") == f"hello {tenant.slug}"
    assert cache.get("greeting") == "hello nobody"


@in_registry
def test_no_tenant_has_its_own_namespace(cache, two_tenants):
    a, b = two_tenants
    cache.set("shared-only", 1)
    with tenant_context(a):
        cache.set("a-only", 1)
        assert cache.get("shared-only") is None
        assert not cache.has_key("shared-only")
    assert cache.get("a-only") is None
    with tenant_context(b):
        assert cache.get("a-only") is None
        assert cache.get("shared-only") is None
    keys = {cache.make_key("k")}
    for tenant in (a, b):
        with tenant_context(tenant):
            keys.add(cache.make_key("k"))
    assert len(keys) == 3


@in_registry
def test_nested_tenant_contexts_switch_and_restore_the_namespace(cache, two_tenants):
    a, b = two_tenants
    with tenant_context(a):
        cache.set("plan", "a")
        with tenant_context(b):
            assert cache.get("plan") is None
            cache.set("plan", "b")
            with tenant_context(a):
                assert cache.get("plan") == "a"
            assert cache.get("plan") == "b"
        assert cache.get("plan") == "a"
    assert cache.get("plan") is None


@in_registry
def test_many_incr_and_delete_many_stay_per_tenant(cache, two_tenants):
    a, b = two_tenants
    with tenant_context(a):
        cache.set_many({"n": 1, "m": 2})
    with tenant_context(b):
        cache.set_many({"n": 10})
        assert cache.get_many(["n", "m"]) == {"n": 10}
        assert cache.incr("n") == 11
        with pytest.raises(ValueError):
            cache.incr("m")  # a's m is not b's
    with tenant_context(a):
        assert cache.get_many(["n", "m"]) == {"n": 1, "m": 2}
        assert cache.incr("n", 5) == 6
        assert cache.decr("m") == 1
        cache.delete_many(["n", "m"])
        assert cache.get_many(["n", "m"]) == {}
    with tenant_context(b):
        assert cache.get("n") == 11


@in_registry
def test_versions_work_within_each_tenant(cache, two_tenants):
    a, b = two_tenants
    with tenant_context(a):
        cache.set("menu", "a v1")
        cache.set("menu", "a v5", version=5)
    with tenant_context(b):
        cache.set("menu", "b v1")
    with tenant_context(a):
        assert cache.get("menu", version=5) == "a v5"
        assert cache.incr_version("menu") == 2
        assert cache.get("menu") is None
        assert cache.get("menu", version=2) == "a v1"
    with tenant_context(b):
        assert cache.get("menu") == "b v1"  # a's new version moved only a's entry
        assert cache.get("menu", version=2) is None
        assert cache.get("menu", version=5) is None


@in_registry
def test_threads_start_with_no_tenant_and_select_their_own(cache, two_tenants):
    a, b = two_tenants
    with tenant_context(a):
        cache.set("k", "a")
    cache.set("k", "shared")
    seen = {}

    def read(name, tenant=None):
        if tenant is None:
            seen[name] = caches["default"].get("k")
        else:
            with tenant_context(tenant):
                seen[name] = caches["default"].get("k")

    with tenant_context(b):  # a thread does not inherit the tenant of the code that started it
        threads = [
            threading.Thread(target=read, args=("plain",)),
            threading.Thread(target=read, args=("in a", a)),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert seen == {"plain": "shared", "in a": "a"}


@in_registry
async def test_async_code_reads_the_tenant_of_its_context(cache, two_tenants):
    a, b = two_tenants
    async with tenant_context(a.slug):
        await cache.aset("visits", 1)
    async with tenant_context(b.slug):
        assert await cache.aget("visits") is None
        await cache.aset("visits", 100)

    async def visit(tenant: Tenant) -> str:
        async with tenant_context(tenant):
            await cache.aset("who", tenant.slug)
            await asyncio.sleep(0)  # the other tasks run in between, each with its own tenant
            return await cache.aget("who")

    assert await asyncio.gather(visit(a), visit(b), visit(a), visit(b)) == [a.slug, b.slug, a.slug, b.slug]
    async with tenant_context(a):
        assert await cache.aincr("visits") == 2
    async with tenant_context(b):
        assert await cache.aincr("visits") == 101
    async with tenant_context(a):
        task = asyncio.create_task(cache.aget_many(["visits"]))  # a task inherits the tenant
    assert await task == {"visits": 2}
    assert await cache.aget("visits") is None


@in_registry
def test_a_purged_slug_registered_again_does_not_see_the_old_entries(cache, tenant_factory):
    old = tenant_factory()
    with tenant_context(old):
        cache.set("permissions", ["admin"])
    purge_tenant(old.slug)
    new = tenant_factory(old.slug)
    assert new.slug == old.slug and new.uid != old.uid
    with tenant_context(new):
        assert cache.get("permissions") is None


@in_registry
def test_clear_empties_every_tenants_entries(cache, two_tenants):
    """The caveat the docs state: ``cache.clear()`` is the whole cache, not the current tenant's."""
    a, b = two_tenants
    cache.set("k", "shared")
    with tenant_context(b):
        cache.set("k", "b")
    with tenant_context(a):
        cache.clear()
    with tenant_context(b):
        assert cache.get("k") is None
    assert cache.get("k") is None


# -- a request, its session ---------------------------------------------------------------


def remember(request):
    """Keep ?value= in the request's tenant; read the key in the tenant of ?other= as well."""
    cache = caches["default"]
    if "value" in request.GET:
        cache.set("remembered", request.GET["value"])
    seen = {"tenant": current_tenant().slug, "mine": cache.get("remembered")}
    if "other" in request.GET:
        with tenant_context(request.GET["other"]):
            seen["other"] = cache.get("remembered")
        seen["mine again"] = cache.get("remembered")
    return JsonResponse(seen)


def count_visits(request):
    request.session["visits"] = request.session.get("visits", 0) + 1
    return HttpResponse(str(request.session["visits"]))


_builds = itertools.count(1)


def page(request):
    return HttpResponse(f"page {next(_builds)}")


urlpatterns = [path("remember/", remember), path("visits/", count_visits), path("page/", page)]


@in_registry
@pytest.mark.urls(__name__)
def test_a_request_uses_its_tenant_and_can_switch_inside(cache, two_tenants):
    a, b = two_tenants
    client_a, client_b = Client(HTTP_HOST=f"{a.slug}.localhost"), Client(HTTP_HOST=f"{b.slug}.localhost")
    assert client_a.get("/remember/", {"value": "from a"}).json() == {"tenant": a.slug, "mine": "from a"}
    assert client_b.get("/remember/").json() == {"tenant": b.slug, "mine": None}
    client_b.get("/remember/", {"value": "from b"})
    assert client_a.get("/remember/", {"other": b.slug}).json() == {
        "tenant": a.slug,
        "mine": "from a",
        "other": "from b",
        "mine again": "from a",
    }


CACHED_SESSIONS = {"SESSION_ENGINE": "django.contrib.sessions.backends.cache"}
TENANT_MIDDLEWARE = "tenant_schema.middleware.TenantMiddleware"
SESSION_MIDDLEWARE = "django.contrib.sessions.middleware.SessionMiddleware"


@in_registry
@pytest.mark.urls(__name__)
def test_cached_sessions_are_per_tenant_with_tenant_middleware_first(cache, two_tenants):
    """The docs' advice: the session is saved after the view, so it must be saved inside the tenant too."""
    a, b = two_tenants
    with override_settings(MIDDLEWARE=[TENANT_MIDDLEWARE, SESSION_MIDDLEWARE], **CACHED_SESSIONS):
        client = Client(HTTP_HOST=f"{a.slug}.localhost")
        assert [client.get("/visits/").content for _ in range(3)] == [b"1", b"2", b"3"]
        client.defaults["HTTP_HOST"] = f"{b.slug}.localhost"  # same cookie, other tenant: not a's session
        assert client.get("/visits/").content == b"1"


@in_registry
@pytest.mark.urls(__name__)
def test_cached_sessions_are_lost_with_tenant_middleware_after_sessions(cache, two_tenants):
    """Why the docs say so: SessionMiddleware saves after TenantMiddleware has let go of the tenant."""
    a, _ = two_tenants
    with override_settings(MIDDLEWARE=[SESSION_MIDDLEWARE, TENANT_MIDDLEWARE], **CACHED_SESSIONS):
        client = Client(HTTP_HOST=f"{a.slug}.localhost")
        assert [client.get("/visits/").content for _ in range(2)] == [b"1", b"1"]


@in_registry
@pytest.mark.urls(__name__)
def test_the_per_site_cache_keeps_each_tenants_pages_with_tenant_middleware_first(cache, two_tenants, settings):
    """With the header resolver both tenants' pages have one URL: only the key tells them apart."""
    a, b = two_tenants
    site_cache = ["django.middleware.cache.UpdateCacheMiddleware", "django.middleware.cache.FetchFromCacheMiddleware"]
    with override_settings(
        MIDDLEWARE=[TENANT_MIDDLEWARE, *site_cache], TENANT_SCHEMA={**settings.TENANT_SCHEMA, "RESOLVER": "header"}
    ):
        client_a, client_b = Client(headers={"X-Tenant": a.slug}), Client(headers={"X-Tenant": b.slug})
        first = client_a.get("/page/").content
        assert client_a.get("/page/").content == first  # served from the cache
        assert client_b.get("/page/").content != first  # not a's page
        assert client_b.get("/page/").content == client_b.get("/page/").content


# -- keys and patterns ----------------------------------------------------------------------


def unsaved_tenant() -> Tenant:
    """A ready ``Tenant`` row as the registry returns it; selecting it runs no SQL."""
    return Tenant(slug="acme", server="sqlite", database_name="tstest_acme", status=Tenant.Status.READY)


# Prefixes may hold colons; the ones that reverse_key cannot tell apart look like a made key themselves.
prefixes = st.one_of(st.text().filter(lambda p: ":" not in p), st.sampled_from(["myapp:cache", "a:b:c", ":"]))


@given(key=st.text(), prefix=prefixes, version=st.integers(), in_tenant=st.booleans())
def test_reverse_key_returns_the_key_make_key_was_given(key, prefix, version, in_tenant):
    if in_tenant:
        with tenant_context(unsaved_tenant()):
            made = make_key(key, prefix, version)
    else:
        made = make_key(key, prefix, version)
    assert reverse_key(made) == key


def test_keys_name_the_tenant_by_uid_and_no_tenant_by_a_dash():
    tenant = unsaved_tenant()
    assert make_key("menu", "site", 1) == "site:-:1:menu"
    with tenant_context(tenant):
        assert make_key("menu", "site", 1) == f"site:{tenant.uid.hex}:1:menu"


def test_reverse_key_refuses_a_key_it_did_not_make():
    with pytest.raises(ValueError, match=r"':1:menu' is not a key made by tenant_schema.cache.make_key"):
        reverse_key(":1:menu")  # Django's default_key_func


@in_registry
def test_tenant_key_pattern_finds_one_tenants_keys_in_redis(two_tenants):
    """Scan with the pattern and delete: one tenant's entries go, every version; the others stay."""
    import redis

    url = require_redis()
    a, b = two_tenants
    prefix = f"tstest[{uuid.uuid4().hex[:8]}]*"  # glob characters in KEY_PREFIX are matched literally
    with override_settings(CACHES={"default": backend_settings("redis", prefix)}):
        cache = caches["default"]
        for tenant in (a, b, None):
            if tenant is None:
                cache.set_many({"x": 1, "y": 2})
            else:
                with tenant_context(tenant):
                    cache.set_many({"x": 1, "y": 2})
                    cache.set("x", 1, version=7)
        client = redis.Redis.from_url(url)
        try:
            doomed = list(client.scan_iter(match=tenant_key_pattern(a, cache.key_prefix)))
            assert len(doomed) == 3
            client.delete(*doomed)
        finally:
            client.close()
        with tenant_context(a):
            assert cache.get_many(["x", "y"]) == {} and cache.get("x", version=7) is None
        with tenant_context(b):
            assert cache.get_many(["x", "y"]) == {"x": 1, "y": 2} and cache.get("x", version=7) == 1
        assert cache.get_many(["x", "y"]) == {"x": 1, "y": 2}
        for tenant in (b, None):
            delete_redis_keys(url, tenant_key_pattern(tenant, prefix))
