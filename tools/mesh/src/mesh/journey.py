"""The curl journey `mesh up` and `mesh pods` print once the mesh serves (the README's, with its URLs)."""

from __future__ import annotations

__all__ = ["JOURNEY"]

JOURNEY = """  Try it:
    curl -s -X POST {identity}/api/v1/auth/signup -H 'Content-Type: application/json' \\
         -d '{{"email": "ada@example.com", "password": "correct horse battery"}}'
    TOKEN=$(curl -s -X POST {identity}/api/v1/auth/token -H 'Content-Type: application/json' \\
         -d '{{"email": "ada@example.com", "password": "correct horse battery"}}' \\
         | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    curl -s {catalog}/api/v1/products
    curl -s -X POST {orders}/api/v1/orders -H "Authorization: Bearer $TOKEN" \\
         -H 'Idempotency-Key: first-order' -H 'Content-Type: application/json' \\
         -d '{{"items": [{{"sku": "MUG-001", "qty": 2}}]}}'
    curl -s {orders}/api/v1/orders -H "Authorization: Bearer $TOKEN"
"""
