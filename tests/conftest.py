"""Shared pytest set-up: Hypothesis profiles for the property-based (fuzz) tests.

``ci`` (the default) keeps every property to a bounded number of examples so the fuzz tests stay fast in CI;
``long`` explores much more for local runs: ``python -m pytest tests/test_fuzz.py --hypothesis-profile long``
(``$HYPOTHESIS_PROFILE`` selects one too). The command-line option wins over the default loaded here.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,  # a 2-core CI machine with a training job beside it: wall time per example is noisy
    derandomize=True,  # the same examples on every run: CI results do not depend on luck
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "long",
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
