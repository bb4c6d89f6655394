from django.contrib import admin
from django.urls import path

from orders.api import api

handler400 = "meshkit.errors.handler400"
handler403 = "meshkit.errors.handler403"
handler404 = "meshkit.errors.handler404"
handler500 = "meshkit.errors.handler500"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
]
