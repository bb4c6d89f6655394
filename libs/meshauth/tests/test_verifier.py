"""The Verifier against a JWKS served over real HTTP on loopback."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.parse
import uuid

import pytest
from prometheus_client import REGISTRY

from meshauth import InvalidToken, Verifier
from meshauth.jwks import JWKSCache
from meshauth.keys import generate_private_key, sign
from meshauth_testkit import AUDIENCE, ISSUER, FakeIdentity, bad_tokens


class Clock:
    """A monotonic clock the test moves by hand (the HTTP is real, waiting is not)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_verifier(identity: FakeIdentity, clock: Clock | None = None, **options: float) -> Verifier:
    jwks = JWKSCache(
        identity.jwks_url,
        ttl=options.pop("ttl", 300),
        min_refresh_interval=options.pop("min_refresh_interval", 30),
        max_staleness=options.pop("max_staleness", 3600),
        timeout=1.0,
        clock=clock or time.monotonic,
    )
    return Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, **options)


def decisions(result: str, reason: str) -> float:
    value = REGISTRY.get_sample_value(
        "meshauth_auth_decisions_total", {"mode": "inprocess", "result": result, "reason": reason}
    )
    return value or 0.0


def test_a_valid_user_token_gives_the_user(identity: FakeIdentity) -> None:
    verifier = make_verifier(identity)
    before = decisions("accepted", "")
    principal = verifier.verify(identity.token(sub="7", scope="profile orders:write"))
    assert principal.kind == "user"
    assert principal.subject == "7"
    assert principal.scopes == {"profile", "orders:write"}
    assert principal.claims["iss"] == ISSUER
    assert decisions("accepted", "") == before + 1


def test_a_service_token_gives_a_service(identity: FakeIdentity) -> None:
    principal = make_verifier(identity).verify(identity.service_token())
    assert principal.kind == "service"
    assert principal.client_id == "catalog"


def test_eddsa_tokens_verify_too(identity: FakeIdentity) -> None:
    kid = identity.add_key("EdDSA")
    assert make_verifier(identity).verify(identity.token(kid=kid)).subject == "42"


def test_the_keys_can_come_over_a_unix_socket(identity: FakeIdentity, tmp_path) -> None:
    """identity's own sidecar reads the keys from the gunicorn beside it, on the pod's socket."""
    path = str(tmp_path / "app.sock")
    server = identity.serve_unix(path)
    try:
        url = f"http+unix://{urllib.parse.quote(path, safe='')}/.well-known/jwks.json"
        verifier = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=JWKSCache(url, timeout=1.0))
        identity.stop()  # nothing on TCP: the keys can only have come over the socket
        assert verifier.verify(identity.token(sub="7")).subject == "7"
        assert identity.jwks_hits == 1
        verifier.close()
    finally:
        server.stop()


def test_one_of_several_audiences_is_enough(identity: FakeIdentity) -> None:
    jwks = JWKSCache(identity.jwks_url)
    verifier = Verifier(issuer=ISSUER, audience=["orders", "mesh"], jwks=jwks)
    assert verifier.verify(identity.token(aud=["mesh", "web"])).subject == "42"


@pytest.mark.parametrize(
    "name",
    [
        "alg_none",
        "hs256_with_public_key",
        "unknown_kid",
        "known_kid_other_key",
        "jku_header",
        "x5u_header",
        "embedded_jwk",
        "x5c_header",
        "crit_header",
        "expired",
        "nbf_in_future",
        "wrong_audience",
        "wrong_issuer",
        "missing_exp",
        "missing_sub",
        "missing_token_use",
        "refresh_token_use",
        "tampered_payload",
        "tampered_signature",
        "malformed_base64",
        "header_not_json",
        "two_segments",
        "four_segments",
        "huge_100kb",
    ],
)
def test_every_bad_token_is_rejected_with_its_reason(identity: FakeIdentity, name: str) -> None:
    token, reason = bad_tokens(identity)[name]
    verifier = make_verifier(identity)
    verifier.verify(identity.token())  # the keys are loaded: rejections are about the token
    before = decisions("rejected", reason)
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.reason == reason
    assert decisions("rejected", reason) == before + 1


def test_no_token_is_missing(identity: FakeIdentity) -> None:
    with pytest.raises(InvalidToken) as caught:
        make_verifier(identity).verify("")
    assert caught.value.reason == "missing"


def test_leeway_tolerates_small_clock_skew_but_is_capped(identity: FakeIdentity) -> None:
    now = int(time.time())
    verifier = make_verifier(identity, leeway=60)
    assert verifier.verify(identity.token(exp=now - 30)).subject == "42"
    assert verifier.verify(identity.token(nbf=now + 30)).subject == "42"
    with pytest.raises(ValueError, match="leeway"):
        make_verifier(identity, leeway=61)


def test_symmetric_algorithms_cannot_be_allowed(identity: FakeIdentity) -> None:
    with pytest.raises(ValueError, match="algorithms"):
        Verifier(issuer=ISSUER, audience=AUDIENCE, jwks_url=identity.jwks_url, algorithms=["HS256"])


def test_an_algorithm_outside_the_allow_list_is_rejected(identity: FakeIdentity) -> None:
    kid = identity.add_key("EdDSA")
    jwks = JWKSCache(identity.jwks_url, algorithms=["RS256"])
    verifier = Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=jwks, algorithms=["RS256"])
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(identity.token(kid=kid))
    assert caught.value.reason == "disallowed_alg"


def test_a_cached_token_is_still_rejected_once_expired(identity: FakeIdentity) -> None:
    verifier = make_verifier(identity, leeway=0)
    token = identity.token(exp=int(time.time()) + 1)
    assert verifier.verify(token).subject == "42"
    time.sleep(2.1)
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.reason == "expired"


def test_jwks_down_keeps_the_last_good_keys_until_max_staleness(identity: FakeIdentity) -> None:
    clock = Clock()
    verifier = make_verifier(identity, clock, ttl=10, min_refresh_interval=5, max_staleness=100)
    token = identity.token()
    assert verifier.verify(token).subject == "42"
    identity.fail_jwks = True
    clock.now += 50  # past the TTL: a refetch fails, the old keys still serve
    assert verifier.verify(identity.token(sub="1")).subject == "1"
    assert verifier.verify(token).subject == "42"
    clock.now += 51  # past max staleness
    for candidate in (token, identity.token(sub="2")):
        with pytest.raises(InvalidToken) as caught:
            verifier.verify(candidate)
        assert caught.value.reason == "jwks_unavailable"
    identity.fail_jwks = False
    clock.now += 5
    assert verifier.verify(token).subject == "42"


def test_an_unreachable_jwks_server_also_serves_the_last_good_keys(identity: FakeIdentity) -> None:
    clock = Clock()
    verifier = make_verifier(identity, clock, ttl=10, min_refresh_interval=5, max_staleness=100)
    assert verifier.verify(identity.token()).subject == "42"
    identity.stop()  # connection refused from now on
    clock.now += 20
    assert verifier.verify(identity.token(sub="3")).subject == "3"
    failures = REGISTRY.get_sample_value("meshauth_jwks_refresh_total", {"outcome": "failure"})
    assert failures is not None
    assert failures >= 1


def test_without_any_keys_tokens_are_jwks_unavailable(identity: FakeIdentity) -> None:
    identity.fail_jwks = True
    with pytest.raises(InvalidToken) as caught:
        make_verifier(identity).verify(identity.token())
    assert caught.value.reason == "jwks_unavailable"


def test_a_rotated_key_is_accepted_without_restart(identity: FakeIdentity) -> None:
    clock = Clock()
    verifier = make_verifier(identity, clock, ttl=300, min_refresh_interval=5)
    assert verifier.verify(identity.token()).subject == "42"
    new_kid = identity.add_key("RS256")
    clock.now += 6  # an unknown kid triggers a refetch once the rate limit allows
    assert verifier.verify(identity.token(kid=new_kid, sub="9")).subject == "9"
    assert verifier.verify(identity.token(sub="10")).subject == "10"  # the old key still works


def test_a_withdrawn_key_stops_working_even_for_remembered_tokens(identity: FakeIdentity) -> None:
    clock = Clock()
    verifier = make_verifier(identity, clock, ttl=10, min_refresh_interval=5)
    old_kid = identity.kid
    token = identity.token()
    assert verifier.verify(token).subject == "42"
    identity.kid = identity.add_key()
    del identity.published[old_kid]
    clock.now += 11
    with pytest.raises(InvalidToken) as caught:
        verifier.verify(token)
    assert caught.value.reason == "unknown_kid"


def test_a_flood_of_random_kids_fetches_at_most_once_per_interval(identity: FakeIdentity) -> None:
    clock = Clock()
    verifier = make_verifier(identity, clock, ttl=300, min_refresh_interval=30)
    assert verifier.verify(identity.token()).subject == "42"
    attacker = generate_private_key("RS256")
    claims = identity.claims()
    forged = [sign(claims, attacker, uuid.uuid4().hex) for _ in range(50)]
    hits_before = identity.jwks_hits
    clock.now += 31

    def flood() -> None:
        for token in forged * 4:
            with pytest.raises(InvalidToken):
                verifier.verify(token)

    threads = [threading.Thread(target=flood) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert identity.jwks_hits - hits_before == 1
    clock.now += 10
    flood()
    assert identity.jwks_hits - hits_before == 1  # still inside the interval
    assert verifier.verify(identity.token()).subject == "42"


def test_averify_fetches_the_jwks_off_the_event_loop(identity: FakeIdentity) -> None:
    verifier = make_verifier(identity)
    loop_thread: list[int] = []

    async def main() -> str:
        loop_thread.append(threading.get_ident())
        principal = await verifier.averify(identity.token())
        return principal.subject

    assert asyncio.run(main()) == "42"
    assert identity.jwks_hits == 1
    # The first call had to fetch, so it ran in a worker thread; later ones run inline.
    assert asyncio.run(verifier.averify(identity.token(sub="5"))).subject == "5"


def shared_cache(identity: FakeIdentity, path: str) -> Verifier:
    """A verifier as one gunicorn worker of a pod builds it: JWKS cached in the pod's shared file."""
    cache = JWKSCache(identity.jwks_url, ttl=300, min_refresh_interval=30, cache_file=path)
    return Verifier(issuer=ISSUER, audience=AUDIENCE, jwks=cache)


def test_a_worker_born_while_identity_is_down_uses_the_pods_cached_keys(
    identity: FakeIdentity, tmp_path
) -> None:
    path = str(tmp_path / "jwks.json")
    first = shared_cache(identity, path)
    assert first.verify(identity.token()).subject == "42"
    identity.stop()
    # A recycled worker: no fetch possible, yet it verifies from the file the first one wrote.
    second = shared_cache(identity, path)
    assert second.verify(identity.token(sub="7")).subject == "7"


def test_a_rotated_key_one_worker_fetched_reaches_the_others_through_the_file(
    identity: FakeIdentity, tmp_path
) -> None:
    path = str(tmp_path / "jwks.json")
    first, second = shared_cache(identity, path), shared_cache(identity, path)
    assert second.verify(identity.token()).subject == "42"
    new_kid = identity.add_key()
    token = identity.token(kid=new_kid)
    assert first.verify(token).subject == "42"  # fetched the new key and wrote the file
    identity.stop()
    # The second worker cannot reach identity (and its refetch interval has not passed anyway).
    assert second.verify(token).subject == "42"


def test_a_stale_or_foreign_cache_file_is_ignored(identity: FakeIdentity, tmp_path) -> None:
    path = tmp_path / "jwks.json"
    shared_cache(identity, str(path)).verify(identity.token())
    saved = json.loads(path.read_text())
    path.write_text(json.dumps({**saved, "fetched_at": time.time() - 10 * 86_400}))
    identity.stop()
    with pytest.raises(InvalidToken) as caught:
        shared_cache(identity, str(path)).verify(identity.token())
    assert caught.value.reason == "jwks_unavailable"
    path.write_text(json.dumps({**saved, "url": "http://127.0.0.1:1/other.json"}))
    with pytest.raises(InvalidToken):
        shared_cache(identity, str(path)).verify(identity.token())
