"""The Tenant admin in a real browser: headless Chromium driven by Selenium.

Chromium and chromedriver come from Debian (``./run test`` installs them).
Without them the tests skip, except under ``CI=true`` where they fail.
Screenshots of the list and detail pages are written to var/screenshots/.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tenant_schema import create_index, list_tables
from tenant_schema.databases import database_name
from tenant_schema.management.inspection import database_exists
from tenant_schema.models import Tenant
from tenant_schema.servers import get_server

from .conftest import IN_CI, LIVE_SERVERS, new_tenant_id, server_problem

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "var" / "screenshots"
CHROMIUM = os.environ.get("TENANT_SCHEMA_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("TENANT_SCHEMA_CHROMEDRIVER", "/usr/bin/chromedriver")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1400,1000",
]
PASSWORD = "correct horse battery staple"
WAIT = 20  # seconds to wait for a page; never asserted on

pytestmark = pytest.mark.django_db(transaction=True)


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"CI=true and the browser tests cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in (CHROMIUM, CHROMEDRIVER):
        if not (Path(path).exists() or shutil.which(path)):
            unavailable(f"{path} is not installed (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="tenant-schema-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    try:
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    except WebDriverException as exc:
        unavailable(f"chromium did not start: {exc.msg}")
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def servers(db_access):
    """The live servers that answer (a missing one fails under CI, as elsewhere in the suite)."""
    reachable = [key for key in LIVE_SERVERS if server_problem(key) is None]
    if IN_CI and len(reachable) < len(LIVE_SERVERS):
        pytest.fail(f"CI=true and a live database is missing: {[server_problem(k) for k in LIVE_SERVERS]}")
    return reachable


@pytest.fixture
def tenants(db_access):
    """``make(server, name="")`` registers a tenant; all are purged afterwards."""
    from tenant_schema.lifecycle.archive import purge_tenant
    from tenant_schema.lifecycle.register import register_tenant

    def make(server: str, name: str = "") -> Tenant:
        return register_tenant(new_tenant_id(), server=server, name=name)

    yield make
    for tenant in Tenant.objects.all():
        tenant.database.close()
        purge_tenant(tenant)


@pytest.fixture
def admin_page(browser, live_server, django_user_model):
    """``open(path, user="admin")``: log in (creating the user) and load ``/admin/<path>``."""

    def login(username: str, superuser: bool) -> None:
        if not django_user_model.objects.filter(username=username).exists():
            django_user_model.objects.create_user(username, password=PASSWORD, is_staff=True, is_superuser=superuser)
        browser.delete_all_cookies()
        browser.get(f"{live_server.url}/admin/login/")
        browser.find_element(By.NAME, "username").send_keys(username)
        browser.find_element(By.NAME, "password").send_keys(PASSWORD)
        submit(browser, browser.find_element(By.CSS_SELECTOR, "input[type=submit]"))

    def open_(path: str = "", user: str = "admin", superuser: bool = True):
        login(user, superuser)
        browser.get(f"{live_server.url}/admin/{path}")
        return browser

    return open_


def _left(page):
    """Wait condition: ``page`` (the old ``<html>``) is no longer the document.

    Selenium's ``staleness_of`` only expects StaleElementReference; while the
    navigation is under way Chromium can also answer "Node with given id does
    not belong to the document", which means the same thing.
    """

    def check(browser) -> bool:
        try:
            page.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one too
            return True
        return False

    return check


def submit(browser, element) -> None:
    """Click ``element`` and wait for the next page to load."""
    page = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, WAIT).until(_left(page))
    WebDriverWait(browser, WAIT).until(lambda b: b.execute_script("return document.readyState") == "complete")


def rows(browser) -> dict[str, dict[str, str]]:
    """The changelist's rows: ``{slug: {column: text}}``."""
    found = {}
    for tr in browser.find_elements(By.CSS_SELECTOR, "#result_list tbody tr"):
        cells = {
            cls.removeprefix("field-"): cell.text
            for cell in tr.find_elements(By.CSS_SELECTOR, "th, td")
            for cls in (cell.get_attribute("class") or "").split()
            if cls.startswith("field-")
        }
        found[cells["slug"]] = cells
    return found


def messages(browser) -> str:
    return " | ".join(li.text for li in browser.find_elements(By.CSS_SELECTOR, "ul.messagelist li"))


def screenshot(browser, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    width, height = browser.get_window_size()["width"], browser.get_window_size()["height"]
    page_height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(width, max(height, page_height + 150))  # the whole page
    browser.save_screenshot(str(path))
    browser.set_window_size(width, height)
    return path


def failed_row(server: str = "default") -> Tenant:
    """A tenant as a provisioning that failed before creating its database leaves it."""
    slug = new_tenant_id()
    return Tenant.objects.create(
        slug=slug,
        name="Half Done",
        server=server,
        database_name=database_name(slug, get_server(server)),
        status=Tenant.Status.FAILED,
        last_error="OperationalError: server closed the connection unexpectedly",
    )


def test_list_shows_live_state_and_filters(admin_page, tenants, servers):
    made = {key: tenants(key, name=f"Tenant on {key}") for key in servers}
    broken = failed_row()
    browser = admin_page("tenant_schema/tenant/")

    shown = rows(browser)
    for key, tenant in made.items():
        row = shown[tenant.slug]
        assert row["status_badge"] == "ready"
        assert row["server"] == key
        assert row["dialect"] == get_server(key).dialect.name
        assert row["tables"] == str(len(list_tables(tenant.database)))
    assert shown[broken.slug]["status_badge"] == "failed"
    assert shown[broken.slug]["tables"] == "—", "no database: nothing to count, and nothing created"
    assert not database_exists(broken)
    screenshot(browser, "admin-tenant-list")

    target = made[servers[-1]]
    search = browser.find_element(By.ID, "searchbar")
    search.send_keys(target.slug)
    submit(browser, browser.find_element(By.CSS_SELECTOR, "#changelist-search input[type=submit]"))
    assert list(rows(browser)) == [target.slug]

    browser.get(f"{browser.current_url.split('?')[0]}?status__exact=failed")
    assert list(rows(browser)) == [broken.slug]
    dialect = get_server(servers[-1]).dialect.name
    browser.get(f"{browser.current_url.split('?')[0]}?dialect={dialect}")
    assert set(rows(browser)) == {t.slug for k, t in made.items() if get_server(k).dialect.name == dialect}


def test_detail_page_shows_live_tables_and_indexes(admin_page, tenants, servers):
    for key in servers:
        tenant = tenants(key, name="Detail Co")
        index = create_index(tenant.database, "tenantapp_note", ["title"])
        browser = admin_page(f"tenant_schema/tenant/{tenant.pk}/change/")
        section = browser.find_element(By.ID, "tenant-live-tables")
        assert "Tables and indexes" in section.find_element(By.TAG_NAME, "h2").get_attribute("textContent")
        table_rows = [tr.text for tr in section.find_elements(By.CSS_SELECTOR, "tbody tr")]
        assert any(row.startswith("tenantapp_note") and index in row and "title" in row for row in table_rows)
        for table in list_tables(tenant.database):
            assert table in section.text
        if key == servers[-1]:
            screenshot(browser, "admin-tenant-detail")


def test_retry_a_failed_tenant_from_its_page(admin_page, tenants):
    broken = failed_row()
    browser = admin_page(f"tenant_schema/tenant/{broken.pk}/change/")
    assert "server closed the connection" in browser.find_element(By.CSS_SELECTOR, ".field-last_error").text
    assert "does not exist" in browser.find_element(By.ID, "tenant-live-tables").text
    submit(browser, browser.find_element(By.CSS_SELECTOR, "button[value=provision]"))
    assert f"{broken.slug} is ready." in messages(browser)
    broken.refresh_from_db()
    assert broken.status == Tenant.Status.READY
    assert "tenantapp_note" in browser.find_element(By.ID, "tenant-live-tables").text


@pytest.mark.parametrize("server_key", LIVE_SERVERS)
def test_add_archive_and_purge(admin_page, tenants, servers, server_key):
    if server_key not in servers:
        pytest.skip(server_problem(server_key))
    slug = new_tenant_id()
    browser = admin_page("tenant_schema/tenant/add/")
    browser.find_element(By.NAME, "slug").send_keys(slug)
    browser.find_element(By.NAME, "name").send_keys("Added In Browser")
    Select(browser.find_element(By.NAME, "server")).select_by_value(server_key)
    submit(browser, browser.find_element(By.NAME, "_save"))
    assert "was added successfully" in messages(browser)
    tenant = Tenant.objects.get(slug=slug)
    assert tenant.status == Tenant.Status.READY and tenant.server == server_key
    assert "tenantapp_note" in list_tables(tenant.database)

    # Archive through the changelist's action menu.
    browser.find_element(By.CSS_SELECTOR, f"input.action-select[value='{tenant.pk}']").click()
    Select(browser.find_element(By.NAME, "action")).select_by_value("archive")
    submit(browser, browser.find_element(By.CSS_SELECTOR, "button[name=index]"))
    assert f"{slug} archived" in messages(browser)
    assert rows(browser)[slug]["status_badge"] == "archived"
    assert database_exists(tenant)

    # Purge: the wrong slug changes nothing; the right one drops everything.
    browser.get(browser.current_url.split("?")[0] + f"{tenant.pk}/change/")
    submit(browser, browser.find_element(By.CSS_SELECTOR, "a.purgelink"))
    browser.find_element(By.NAME, "slug").send_keys("yes")
    submit(browser, browser.find_element(By.CSS_SELECTOR, "#purge-form input[type=submit]"))
    assert "That is not this tenant" in browser.find_element(By.CSS_SELECTOR, ".errorlist").text
    assert database_exists(tenant)
    tenant.database.close()
    field = browser.find_element(By.NAME, "slug")
    field.clear()
    field.send_keys(slug)
    submit(browser, browser.find_element(By.CSS_SELECTOR, "#purge-form input[type=submit]"))
    assert f"{slug} purged" in messages(browser)
    assert not Tenant.objects.filter(slug=slug).exists()
    assert not database_exists(tenant)


def test_staff_without_permissions_see_no_tenants(admin_page, tenants):
    tenant = tenants("default")
    browser = admin_page("", user="clerk", superuser=False)
    assert "permission to view or edit anything" in browser.find_element(By.ID, "content-main").text
    browser.get(browser.current_url + f"tenant_schema/tenant/{tenant.pk}/change/")
    assert "403 Forbidden" in browser.page_source
    assert tenant.slug not in browser.page_source
