"""The admin's login page under the same failed-login limits as the API, and saying so.

Django's admin asks ``authenticate()``, which is limited (identity.accounts.backends); this only
makes a throttled attempt visible: the form names the wait, and the answer is 429 with
``Retry-After`` instead of a 200 that looks like a typo.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse


class RateLimitedAdminAuthenticationForm(AdminAuthenticationForm):
    def clean(self) -> dict[str, Any]:
        try:
            return super().clean()
        except ValidationError:
            wait = getattr(self.request, "login_retry_after", None)
            if wait is None:
                raise
            raise ValidationError(
                "Too many failed logins for this account or address; try again in %(wait)s seconds.",
                code="throttled",
                params={"wait": wait},
            ) from None


def login(request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
    """``/admin/login/``: the admin's own view, answering 429 while the caller is throttled."""
    response = admin.site.login(request, extra_context)
    wait = getattr(request, "login_retry_after", None)
    if wait is not None:
        response.status_code = 429
        response["Retry-After"] = str(wait)
    return response


admin.site.login_form = RateLimitedAdminAuthenticationForm
