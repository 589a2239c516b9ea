"""The routing benchmark's views on the tenant-schema side: the same body, routed or naming the alias.

``/routed/`` goes through ``TenantMiddleware`` and ``TenantRouter``; each
server's tenant gets its own ``/plain-<server>/`` view, naming that
tenant's alias itself (``add_plain``, called by ts_worker before the first
request).
"""

from benchapp.models import Note
from django.http import HttpResponse
from django.urls import clear_url_caches, path


def routed(request):
    return HttpResponse(str(Note.objects.count()))


def add_plain(name: str, alias: str) -> str:
    """A view counting the notes of ``alias``, at ``/<name>/``; its path."""

    def plain(request):
        return HttpResponse(str(Note.objects.using(alias).count()))

    urlpatterns.append(path(f"{name}/", plain))
    clear_url_caches()
    return f"/{name}/"


urlpatterns = [path("routed/", routed)]
