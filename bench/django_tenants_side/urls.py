"""The routing benchmark's views on the django-tenants side: the same body, routed or on a fixed schema."""

from benchapp.models import Note
from django.http import HttpResponse
from django.urls import path


def routed(request):
    return HttpResponse(str(Note.objects.count()))


def plain(request):
    return HttpResponse(str(Note.objects.using("plain").count()))


urlpatterns = [path("routed/", routed), path("plain/", plain)]
