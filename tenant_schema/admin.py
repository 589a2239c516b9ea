"""The Tenant admin: what operators see and do without a shell.

The list and the detail page read table counts, tables and indexes live from
each tenant's database. Every change goes through ``tenant_schema.lifecycle``
(the same functions the ``tenant_*`` commands call), never through a plain
model save: adding a tenant provisions it, and Django's delete is replaced by
a purge that needs a superuser and the slug typed on a confirmation page,
because deleting the row alone would orphan the tenant's database.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from . import conf
from .databases import admin_alias, released, tenant_alias
from .management.inspection import one_line, table_count, tables_and_indexes
from .models import Tenant
from .servers import get_server, server_urls

STATUS_COLORS = {
    Tenant.Status.READY: "#1e7e34",
    Tenant.Status.PROVISIONING: "#996800",
    Tenant.Status.FAILED: "#ba2121",
    Tenant.Status.ARCHIVED: "#666666",
}


# Detail-page buttons: action -> (label, whether it makes sense for a tenant).
BUTTONS = {
    "provision": (_("Provision / retry"), lambda t: t.status in (Tenant.Status.PROVISIONING, Tenant.Status.FAILED)),
    "migrate": (_("Migrate"), lambda t: t.status in (Tenant.Status.READY, Tenant.Status.ARCHIVED)),
    "maintenance_on": (_("Maintenance on"), lambda t: t.status == Tenant.Status.READY and not t.maintenance),
    "maintenance_off": (_("Maintenance off"), lambda t: t.maintenance),
    "archive": (
        _("Archive"),
        lambda t: t.status in (Tenant.Status.PROVISIONING, Tenant.Status.READY, Tenant.Status.FAILED),
    ),
    "restore": (_("Restore"), lambda t: t.status == Tenant.Status.ARCHIVED),
}


def _dialects() -> dict[str, list[str]]:
    """``{dialect name: [server keys]}`` of the configured servers."""
    found: dict[str, list[str]] = {}
    for key in server_urls():
        try:
            name = get_server(key).dialect.name
        except Exception:  # noqa: BLE001 - a misconfigured server is left out of the filter
            continue
        found.setdefault(name, []).append(key)
    return found


class DialectFilter(admin.SimpleListFilter):
    """Filter by dialect: the dialect is the server's, so this filters on server keys."""

    title = _("dialect")
    parameter_name = "dialect"

    def lookups(self, request, model_admin):
        return [(name, name) for name in sorted(_dialects())]

    def queryset(self, request, queryset):
        if self.value():
            return queryset.filter(server__in=_dialects().get(self.value(), []))
        return queryset


def _server_label(key: str) -> str:
    """``pg (postgresql)``: the server's key and its dialect, as the add form offers it."""
    try:
        return f"{key} ({get_server(key).dialect.name})"
    except Exception:  # noqa: BLE001 - a misconfigured server is still offered (registering it fails clearly)
        return key


#: The add form's choice that leaves the server to the placement policy (no server key can be it).
AUTOMATIC = "-automatic-"


class TenantAddForm(forms.ModelForm):
    """Slug, name and a server picked from ``TENANT_SCHEMA["SERVERS"]``."""

    server = forms.ChoiceField(
        label=_("Server"), help_text=_("Where the tenant's database is created: a key of TENANT_SCHEMA['SERVERS'].")
    )

    class Meta:
        model = Tenant
        fields = ("slug", "name", "server")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [(key, _server_label(key)) for key in server_urls()]
        if conf.get("PLACEMENT") is not None:  # let the placement policy choose, as tenant_register does
            choices.insert(0, (AUTOMATIC, _("automatic (TENANT_SCHEMA['PLACEMENT'])")))
        self.fields["server"].choices = choices
        self.fields["server"].initial = choices[0][0] if choices[0][0] == AUTOMATIC else get_server().key


class PurgeForm(forms.Form):
    slug = forms.CharField(label=_("Type the tenant's slug to confirm"), max_length=40)

    def __init__(self, *args, tenant: Tenant, **kwargs):
        super().__init__(*args, **kwargs)
        self.tenant = tenant

    def clean_slug(self):
        if self.cleaned_data["slug"].strip() != self.tenant.slug:
            raise forms.ValidationError(_("That is not this tenant's slug."))
        return self.cleaned_data["slug"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "status_badge", "maintenance", "server", "dialect", "tables")
    list_filter = ("status", "maintenance", DialectFilter, "server")
    search_fields = ("slug", "name", "database_name")
    actions = ["provision", "migrate", "maintenance_on", "maintenance_off", "archive", "restore"]
    change_form_template = "tenant_schema/admin/change_form.html"
    add_fields = ("slug", "name", "server")
    change_fields = (
        "slug",
        "name",
        "status_badge",
        "maintenance",
        "server",
        "dialect",
        "database_name",
        "last_error",
        "created_at",
        "updated_at",
        "provisioned_at",
    )
    readonly_fields = tuple(f for f in change_fields if f != "name")

    def get_queryset(self, request):
        from .lifecycle.pool import pool_rows

        # The warm pool's databases are nobody's tenants yet: manage.py tenant_pool shows them.
        return super().get_queryset(request).exclude(pk__in=pool_rows())

    # -- columns ------------------------------------------------------------
    @admin.display(description=_("status"), ordering="status")
    def status_badge(self, obj: Tenant):
        color = STATUS_COLORS.get(obj.status, "#666666")
        return format_html(
            '<strong class="tenant-status tenant-status-{}" style="color:{}">{}</strong>',
            obj.status,
            color,
            obj.get_status_display(),
        )

    @admin.display(description=_("dialect"))
    def dialect(self, obj: Tenant) -> str:
        return obj.dialect_name

    @admin.display(description=_("tables"))
    def tables(self, obj: Tenant):
        # One tenant at a time: a page of 100 tenants holds one tenant connection, not 100.
        with released(tenant_alias(obj.slug), admin_alias(obj.slug)):
            count = table_count(obj)
        return "—" if count is None else count

    # -- forms --------------------------------------------------------------
    def get_fields(self, request, obj=None):
        return self.change_fields if obj is not None else self.add_fields

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields if obj is not None else ()

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = TenantAddForm
        return super().get_form(request, obj, change=change, **kwargs)

    def save_model(self, request, obj, form, change):
        """Adding a tenant provisions it; changing one only renames it."""
        if change:
            obj.save(update_fields=["name", "updated_at"])
            return
        from .lifecycle.register import register_tenant

        try:
            server = None if obj.server == AUTOMATIC else obj.server
            tenant = register_tenant(obj.slug, server=server, name=obj.name)
        except Exception as exc:
            tenant = Tenant.objects.filter(slug=obj.slug).first()
            if tenant is None:
                raise
            self.message_user(
                request,
                _("Provisioning %(slug)s failed: %(error)s") % {"slug": obj.slug, "error": one_line(exc)},
                messages.ERROR,
            )
        obj.__dict__.update(tenant.__dict__)  # the admin goes on with the provisioned row

    def response_add(self, request, obj, post_url_continue=None):
        if obj.status != Tenant.Status.READY:  # the error message is already queued
            return HttpResponseRedirect(reverse("admin:tenant_schema_tenant_change", args=[obj.pk]))
        return super().response_add(request, obj, post_url_continue)

    # -- permissions --------------------------------------------------------
    def has_delete_permission(self, request, obj=None):
        """Never Django's delete: it would leave the tenant's database behind."""
        return False

    def has_purge_permission(self, request) -> bool:
        return request.user.is_active and request.user.is_superuser

    # -- actions ------------------------------------------------------------
    @admin.action(description=_("Provision, or retry a failed provisioning"), permissions=["change"])
    def provision(self, request, queryset):
        from .lifecycle.register import register_tenant

        for tenant in queryset:
            if tenant.status == Tenant.Status.ARCHIVED:
                self.message_user(
                    request,
                    _("Tenant %(slug)s is archived; it was not provisioned again.") % {"slug": tenant.slug},
                    messages.WARNING,
                )
                continue
            try:
                register_tenant(tenant.slug, server=tenant.server, name=tenant.name)
            except Exception as exc:  # noqa: BLE001 - reported; the row records the error
                self.message_user(
                    request,
                    _("Provisioning %(slug)s failed: %(error)s") % {"slug": tenant.slug, "error": one_line(exc)},
                    messages.ERROR,
                )
            else:
                self.message_user(request, _("Tenant %(slug)s is ready.") % {"slug": tenant.slug}, messages.SUCCESS)

    @admin.action(description=_("Apply pending tenant migrations"), permissions=["change"])
    def migrate(self, request, queryset):
        from .lifecycle.fleet import migrate_tenants

        # A person picked these tenants: look at each database, not only at the
        # registry's record (the check a fleet run skips, --verify).
        report = migrate_tenants([t.slug for t in queryset], verify=True)
        for result in report.results:
            if result.error:
                self.message_user(
                    request,
                    _("Migrating %(slug)s failed: %(error)s")
                    % {"slug": result.slug, "error": str(result.error).strip().splitlines()[0]},
                    messages.ERROR,
                )
            elif result.applied:
                self.message_user(
                    request,
                    _("Tenant %(slug)s: applied %(names)s") % {"slug": result.slug, "names": ", ".join(result.applied)},
                    messages.SUCCESS,
                )
            else:
                self.message_user(request, _("Tenant %(slug)s is up to date.") % {"slug": result.slug}, messages.INFO)

    @admin.action(description=_("Archive (keep the data, stop serving)"), permissions=["change"])
    def archive(self, request, queryset):
        from .lifecycle.archive import archive_tenant

        for tenant in queryset:
            try:
                archive_tenant(tenant)
            except Exception as exc:  # noqa: BLE001 - reported to the operator
                self.message_user(
                    request,
                    _("Archiving %(slug)s failed: %(error)s") % {"slug": tenant.slug, "error": one_line(exc)},
                    messages.ERROR,
                )
            else:
                self.message_user(
                    request,
                    _("Tenant %(slug)s archived; its database is kept.") % {"slug": tenant.slug},
                    messages.SUCCESS,
                )

    def _switch_maintenance(self, request, queryset, on: bool) -> None:
        from .lifecycle.archive import set_maintenance

        for tenant in queryset:
            try:
                set_maintenance(tenant, on)
            except Exception as exc:  # noqa: BLE001 - reported to the operator
                self.message_user(
                    request,
                    _("Switching maintenance mode of %(slug)s failed: %(error)s")
                    % {"slug": tenant.slug, "error": one_line(exc)},
                    messages.ERROR,
                )
            else:
                done = (
                    _("Tenant %(slug)s is in maintenance mode: reads are served, writes are refused.")
                    if on
                    else _("Tenant %(slug)s is out of maintenance mode: writes are accepted again.")
                )
                self.message_user(request, done % {"slug": tenant.slug}, messages.SUCCESS)

    @admin.action(description=_("Switch maintenance mode on (reads only)"), permissions=["change"])
    def maintenance_on(self, request, queryset):
        self._switch_maintenance(request, queryset, True)

    @admin.action(description=_("Switch maintenance mode off"), permissions=["change"])
    def maintenance_off(self, request, queryset):
        self._switch_maintenance(request, queryset, False)

    @admin.action(description=_("Restore archived tenants"), permissions=["change"])
    def restore(self, request, queryset):
        from .lifecycle.archive import restore_tenant

        for tenant in queryset:
            if tenant.status != Tenant.Status.ARCHIVED:
                self.message_user(
                    request,
                    _("Tenant %(slug)s is %(status)s, not archived; it was not restored.")
                    % {"slug": tenant.slug, "status": tenant.get_status_display()},
                    messages.WARNING,
                )
                continue
            try:
                restore_tenant(tenant)
            except Exception as exc:  # noqa: BLE001 - reported; the row stays archived
                self.message_user(
                    request,
                    _("Restoring %(slug)s failed: %(error)s") % {"slug": tenant.slug, "error": one_line(exc)},
                    messages.ERROR,
                )
            else:
                self.message_user(
                    request, _("Tenant %(slug)s restored: it is ready again.") % {"slug": tenant.slug}, messages.SUCCESS
                )

    # -- detail page --------------------------------------------------------
    def get_urls(self):
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/run/<str:action>/", view(self.run_action_view), name="tenant_schema_tenant_run"),
            path("<path:object_id>/purge/", view(self.purge_view), name="tenant_schema_tenant_purge"),
            *super().get_urls(),
        ]

    def tenant_or_404(self, request, object_id: str) -> Tenant:
        """The tenant an admin URL names; ``Http404`` for an id that is not a tenant's (``abc`` included)."""
        tenant = self.get_object(request, unquote(object_id))
        if tenant is None:
            raise Http404(f"no tenant has the id {object_id!r}")
        return tenant

    def change_view(self, request, object_id, form_url="", extra_context=None):
        # Permission before existence: staff without it learn nothing about which ids exist.
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        tenant = self.tenant_or_404(request, object_id)
        extra_context = dict(extra_context or {})
        extra_context.update(self.live_tables_context(tenant))
        allowed = self.get_actions(request)
        extra_context["tenant_actions"] = [
            (name, label, allowed[name][2])
            for name, (label, applies) in BUTTONS.items()
            if name in allowed and applies(tenant)
        ]
        extra_context["can_purge"] = self.has_purge_permission(request)
        return super().change_view(request, object_id, form_url, extra_context)

    def history_view(self, request, object_id, extra_context=None):
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        self.tenant_or_404(request, object_id)
        return super().history_view(request, object_id, extra_context)

    @staticmethod
    def live_tables_context(tenant: Tenant) -> dict:
        try:
            tables = tables_and_indexes(tenant)
        except Exception as exc:  # noqa: BLE001 - the page still shows the registry row
            return {"live_tables": None, "live_tables_error": one_line(exc)}
        if tables is None:
            return {"live_tables": None, "live_tables_error": _("The tenant's database does not exist.")}
        return {"live_tables": tables, "live_tables_error": None}

    def run_action_view(self, request, object_id, action):
        """One action on one tenant, from the buttons of the detail page."""
        if action not in self.actions or action not in self.get_actions(request):
            raise PermissionDenied
        tenant = self.tenant_or_404(request, object_id)
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        getattr(self, action)(request, Tenant.objects.filter(pk=tenant.pk))
        return HttpResponseRedirect(reverse("admin:tenant_schema_tenant_change", args=[tenant.pk]))

    def purge_view(self, request, object_id):
        """Drop the tenant's database and row, after the slug is typed (superusers only)."""
        if not self.has_purge_permission(request):
            raise PermissionDenied
        from .lifecycle.archive import purge_tenant

        tenant = self.tenant_or_404(request, object_id)
        form = PurgeForm(request.POST or None, tenant=tenant)
        if request.method == "POST" and form.is_valid():
            try:
                purge_tenant(tenant)
            except Exception as exc:  # noqa: BLE001 - the row is kept; say so
                self.message_user(
                    request,
                    _(
                        "Purging %(slug)s failed: %(error)s. Its registry row is kept; "
                        "try again once the cause is fixed."
                    )
                    % {"slug": tenant.slug, "error": one_line(exc)},
                    messages.ERROR,
                )
                return HttpResponseRedirect(reverse("admin:tenant_schema_tenant_change", args=[tenant.pk]))
            self.message_user(
                request,
                _("Tenant %(slug)s purged: database %(db)s dropped and registry row deleted.")
                % {"slug": tenant.slug, "db": tenant.database_name},
                messages.SUCCESS,
            )
            return HttpResponseRedirect(reverse("admin:tenant_schema_tenant_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "title": _("Purge tenant %(slug)s") % {"slug": tenant.slug},
            "opts": self.opts,
            "original": tenant,
            "form": form,
            "tables": table_count(tenant),
        }
        return TemplateResponse(request, "tenant_schema/admin/purge_confirmation.html", context)
