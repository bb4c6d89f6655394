"""A session ended at identity ends for introspection at once, in both auth modes.

Services that verify access tokens locally accept them until they expire (10 minutes by default,
IDENTITY_ACCESS_TOKEN_TTL): the README's security notes say so. Introspection is the way to know now.
"""

from __future__ import annotations

import httpx
import pytest
from securitylib import bearer, introspector_token, login, signup_and_login

from mesh.fleet import Fleet


def active(fleet: Fleet, token: str) -> bool:
    answer = httpx.post(
        f"{fleet.url('identity')}/api/v1/auth/introspect",
        json={"token": token},
        headers=bearer(introspector_token(fleet)),
    )
    assert answer.status_code == 200, answer.text
    return bool(answer.json()["active"])


@pytest.mark.parametrize("ending", ["logout", "refresh-token-reuse"])
def test_introspection_says_inactive_once_the_session_ends(mesh: Fleet, ending: str) -> None:
    user = signup_and_login(mesh)
    identity = f"{mesh.url('identity')}/api/v1/auth"
    other = login(mesh, user.email, "correct horse battery staple").json()["access_token"]
    assert active(mesh, user.access_token)
    if ending == "logout":
        assert httpx.post(f"{identity}/logout", json={"refresh_token": user.refresh_token}).status_code == 204
    else:
        # A thief replays a spent refresh token: the whole session is revoked.
        assert (
            httpx.post(f"{identity}/refresh", json={"refresh_token": user.refresh_token}).status_code == 200
        )
        assert (
            httpx.post(f"{identity}/refresh", json={"refresh_token": user.refresh_token}).status_code == 401
        )
    assert not active(mesh, user.access_token)
    assert active(mesh, other)  # the user's other session is untouched
