from django.urls import path

from identity.accounts import adminlogin
from identity.api import api
from identity.tokens.api import jwks_view
from meshkit.urls import *  # noqa: F403 - the JSON error handlers
from meshkit.urls import service_urlpatterns

urlpatterns = service_urlpatterns(
    api,
    # Before the admin's own URLs: its login shares the API's failed-login limits.
    path("admin/login/", adminlogin.login, name="admin-login"),
    path(".well-known/jwks.json", jwks_view, name="jwks"),
)
