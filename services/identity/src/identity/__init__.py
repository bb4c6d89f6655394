"""identity: users, tokens, JWKS and profiles."""
