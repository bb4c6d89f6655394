"""The runtime contract, as meshkit's code imports it: :mod:`meshcontract`.

The declarations live in their own package, with no dependencies, because the sidecar image has no
Django and so no meshkit, and it must read the same probe paths, headers, request-id rule and
``MESHAUTH_*`` declarations as the app. ``python -m meshkit.contract`` still regenerates the page.
"""

import sys

from meshcontract import *  # noqa: F403 - this module is the package under meshkit's name
from meshcontract import main

if __name__ == "__main__":
    sys.exit(main())
