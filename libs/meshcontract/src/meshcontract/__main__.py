"""``python -m meshcontract [--check] [page]``: rewrite (or check) docs/runtime-contract.md's tables."""

import sys

from meshcontract import main

sys.exit(main())
