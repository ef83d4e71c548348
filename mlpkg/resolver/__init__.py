"""Specs, resolution and the recipe provider; derivations (hashing), plans, the plan
cache and lockfiles; realisation of plans through the builders of :mod:`mlpkg.build`.

Importing this package imports :mod:`mlpkg.build`, whose modules register every recipe
kind (its recipe rules and its builder): whatever reads recipes through the resolver knows
them all. That import is light (the builders import what makes paths only when they make
one), as the plan cache's fast path needs.
"""

import mlpkg.build  # noqa: F401  (the registration of the recipe kinds)
