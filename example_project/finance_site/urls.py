from django.conf import settings
from django.conf.urls.static import static
from django.contrib import admin
from django.urls import path
from finance import views

urlpatterns = [
    path("", views.home, name="home"),
    path("transactions/new/", views.add_transaction, name="add_transaction"),
    path("balances/recalculate/", views.recalculate, name="recalculate"),
    path("admin/", admin.site.urls),
]
# Each tenant's receipts, under MEDIA_URL/<tenant prefix>/ (DEBUG only, as Django serves media).
urlpatterns += static(settings.MEDIA_URL, document_root=settings.MEDIA_ROOT)
