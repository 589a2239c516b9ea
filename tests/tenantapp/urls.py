"""Views the routing tests request through TenantMiddleware."""

from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from django.urls import path, reverse

from tenant_schema.context import current_tenant

from .models import Note


def tenant_slug():
    tenant = current_tenant()
    return tenant.slug if tenant else None


def notes(request):
    return JsonResponse(
        {
            "tenant": tenant_slug(),
            "request_tenant": request.tenant.slug if request.tenant else None,
            "titles": sorted(Note.objects.values_list("title", flat=True)),
            "url": reverse("notes"),
        }
    )


async def anotes(request):
    return JsonResponse({"tenant": tenant_slug(), "titles": sorted([n.title async for n in Note.objects.all()])})


def shared(request):
    return HttpResponse(f"shared tenant={tenant_slug()}")


def stream(request):
    def body():
        for _ in range(3):  # each chunk queries the tenant database while the server iterates
            yield f"{tenant_slug()}:{Note.objects.count()};"

    return StreamingHttpResponse(body())


async def astream(request):
    async def body():
        for _ in range(3):
            yield f"{tenant_slug()}:{await Note.objects.acount()};"

    return StreamingHttpResponse(body())


urlpatterns = [
    path("notes/", notes, name="notes"),
    path("anotes/", anotes),
    path("shared/", shared),
    path("stream/", stream),
    path("astream/", astream),
]


def resolve_from_query(request):
    """A site's own resolver: ``?tenant=slug``."""
    return request.GET.get("tenant")
