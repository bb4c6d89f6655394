"""The one place passwords are checked: Django's model backend behind the failed-login limiter.

``authenticate()`` is what both the API's login and the admin's login form call, so limiting here
gives every door the same budget per account and per address.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from identity.accounts.models import User, normalize_email
from identity.tokens import ratelimit


class RateLimitedModelBackend(ModelBackend):
    """Counts each check against the limits first; over budget, the password is never checked.

    A throttled call raises ``PermissionDenied`` (``authenticate()`` then returns None without
    trying another backend) and leaves the wait on ``request.login_retry_after`` for the view.
    """

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> User | None:
        email = kwargs.get(User.USERNAME_FIELD, username)
        if email is None or password is None:
            return None
        email = normalize_email(email)
        try:
            attempt = ratelimit.attempt(email, request)
        except ratelimit.Throttled as exc:
            if request is not None:
                request.login_retry_after = exc.wait  # type: ignore[attr-defined]
            raise PermissionDenied(str(exc)) from None
        user = super().authenticate(request, username=email, password=password)
        if user is not None:
            attempt.succeeded()
        return user
