from django.contrib import admin
from django.urls import path
from finance import views

urlpatterns = [
    path("", views.home, name="home"),
    path("transactions/new/", views.add_transaction, name="add_transaction"),
    path("admin/", admin.site.urls),
]
