from django.contrib import admin
from django.urls import path

from identity.accounts import adminlogin
from identity.api import api
from identity.tokens.api import jwks_view

handler400 = "meshkit.errors.handler400"
handler403 = "meshkit.errors.handler403"
handler404 = "meshkit.errors.handler404"
handler500 = "meshkit.errors.handler500"

urlpatterns = [
    # Before the admin's own URLs: its login shares the API's failed-login limits.
    path("admin/login/", adminlogin.login, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path(".well-known/jwks.json", jwks_view, name="jwks"),
]
