"""Verifications per second on one core, EdDSA (Ed25519) vs RS256 (RSA-2048).

Run: ``uv run --python 3.11 python libs/meshauth/bench/verify_bench.py [seconds]``.
It measures the whole verification a service does per request (PyJWT decode: header parse,
signature check, claim checks), single-threaded, with the key already parsed as the JWKS cache holds it.
"""

from __future__ import annotations

import sys
import time

import jwt

from meshauth.keys import ALGORITHMS, Algorithm, generate_private_key, key_id, sign


def _claims() -> dict[str, object]:
    now = int(time.time())
    return {
        "iss": "http://identity.bench",
        "aud": "bench",
        "sub": "42",
        "iat": now,
        "exp": now + 3600,
        "scope": "profile catalog:write",
        "token_use": "access",
    }


def verifications_per_second(algorithm: Algorithm, seconds: float) -> tuple[float, float]:
    """(verifications/s, signatures/s) for ``algorithm`` over roughly ``seconds`` each."""
    private = generate_private_key(algorithm)
    public = private.public_key()
    token = sign(_claims(), private, key_id(private))

    def rate(fn: object) -> float:
        count, start = 0, time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            for _ in range(50):
                fn()  # type: ignore[operator]
            count += 50
        return count / (time.perf_counter() - start)

    verify = rate(
        lambda: jwt.decode(
            token,
            public,
            algorithms=[algorithm],
            audience="bench",
            issuer="http://identity.bench",
            options={"require": ["exp", "iat", "iss", "aud", "sub"]},
        )
    )
    signing = rate(lambda: sign(_claims(), private, "k"))
    return verify, signing


def main() -> None:
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 2.0
    results = {alg: verifications_per_second(alg, seconds) for alg in ALGORITHMS}
    for alg, (verify, signing) in results.items():
        print(f"{alg:6} verify {verify:10,.0f}/s   sign {signing:10,.0f}/s")
    fastest = max(results, key=lambda a: results[a][0])
    print(f"fastest to verify: {fastest}")


if __name__ == "__main__":
    main()
