"""Password guessing against identity over real HTTP, in both auth modes: one failed-login budget
for every door (the API and the admin's login form), counted atomically, and one spelling per email.
"""

from __future__ import annotations

import re
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
from securitylib import PASSWORD, login, signup_and_login

from mesh.fleet import Fleet

ACCOUNT_ATTEMPTS = 5  # IDENTITY_LOGIN_ACCOUNT_ATTEMPTS' default
KELVIN = "\u212a"  # KELVIN SIGN: NFKC folds it to "K"


def admin_login(fleet: Fleet, email: str, password: str) -> tuple[httpx.Response, httpx.Client]:
    """Log in through the admin's form the way a browser does (CSRF cookie and token first)."""
    client = httpx.Client(base_url=fleet.url("identity"), timeout=30)
    page = client.get("/admin/login/?next=/admin/")
    assert page.status_code == 200, page.text[:300]
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None, "the admin's login form has no CSRF token"
    answer = client.post(
        "/admin/login/?next=/admin/",
        data={"csrfmiddlewaretoken": token.group(1), "username": email, "password": password},
    )
    return answer, client


def make_staff(fleet: Fleet) -> str:
    """A staff account of its own, so that locking it disturbs no other test."""
    email = f"staff-{uuid.uuid4().hex[:8]}@example.com"
    fleet.manage(
        fleet.registry["identity"],
        "shell",
        "-c",
        "from identity.accounts.models import User; "
        f"User.objects.create_user({email!r}, {PASSWORD!r}, is_staff=True, is_superuser=True)",
    )
    return email


def test_the_admin_login_works_before_any_attack(mesh: Fleet) -> None:
    email = make_staff(mesh)
    answer, client = admin_login(mesh, email, PASSWORD)
    assert answer.status_code == 302
    assert client.get("/admin/").status_code == 200


def test_an_account_locked_through_the_api_is_locked_at_the_admin(mesh: Fleet) -> None:
    email = make_staff(mesh)
    for _ in range(ACCOUNT_ATTEMPTS):
        assert login(mesh, email, "wrong guess").status_code == 401
    assert login(mesh, email, PASSWORD).status_code == 429

    # The attack in the report: 25 guesses at the admin, then the right password.
    for _ in range(25):
        answer, _ = admin_login(mesh, email, "another guess")
        assert answer.status_code == 429
    answer, client = admin_login(mesh, email, PASSWORD)
    assert answer.status_code == 429
    assert int(answer.headers["Retry-After"]) >= 1
    assert "Too many failed logins" in answer.text
    assert "sessionid" not in client.cookies
    assert client.get("/admin/").status_code == 302  # to the login page: not logged in


def test_guesses_at_the_admin_lock_the_api_too(mesh: Fleet) -> None:
    email = make_staff(mesh)
    for _ in range(ACCOUNT_ATTEMPTS):
        answer, _ = admin_login(mesh, email, "wrong guess")
        assert answer.status_code == 200  # the form again, with its error
    assert login(mesh, email, PASSWORD).status_code == 429


def test_parallel_guesses_are_checked_at_most_the_limit(mesh: Fleet) -> None:
    """12 wrong passwords at once (identity runs 2 workers x 4 threads): at most 5 are checked."""
    user = signup_and_login(mesh)
    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(lambda _: login(mesh, user.email, "wrong guess").status_code, range(12)))
    assert answers.count(401) <= ACCOUNT_ATTEMPTS, answers
    assert answers.count(401) + answers.count(429) == 12, answers
    assert login(mesh, user.email, PASSWORD).status_code == 429


def test_the_kelvin_sign_is_the_same_address(mesh: Fleet) -> None:
    local = f"kelvin{uuid.uuid4().hex[:6]}"
    user = signup_and_login(mesh, f"{local}@example.com")
    twin = f"{KELVIN}{local[1:]}@example.com"  # "Kelvin…" written with U+212A
    identity = mesh.url("identity")
    again = httpx.post(f"{identity}/api/v1/auth/signup", json={"email": twin, "password": PASSWORD})
    assert again.status_code == 409, again.text
    same = login(mesh, twin.upper(), PASSWORD)
    assert same.status_code == 200
    me = httpx.get(
        f"{identity}/api/v1/me", headers={"Authorization": f"Bearer {same.json()['access_token']}"}
    )
    assert me.json()["id"] == user.id
    assert me.json()["email"] == f"{local}@example.com"
