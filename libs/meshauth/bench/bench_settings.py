"""The tests' Django project, with every MESHAUTH_ setting taken from the environment instead."""

from meshauth_testproject.settings import *  # noqa: F403
from meshauth_testproject.settings import SECRET_KEY  # noqa: F401

del MESHAUTH_MODE, MESHAUTH_ISSUER, MESHAUTH_AUDIENCE, MESHAUTH_JWKS_URL  # noqa: F821
