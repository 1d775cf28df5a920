"""Hypothesis profiles for the property tests (the decoder fuzzing in test_codec.py).

- ``ci`` (the default): derandomized (the same examples on every run, so CI never
  flakes on a new random find) and bounded, a few seconds in all;
- ``long`` (``AIENV_FUZZ=long``, what ``scripts/fuzz`` sets): random, with
  ``AIENV_FUZZ_EXAMPLES`` examples per property (default 10,000); ``scripts/fuzz`` runs
  it in rounds with logged seeds for as many minutes as asked.

The profile is loaded here, before the test modules are imported, so that their
``@settings`` (which name no ``max_examples``) inherit it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", derandomize=True, max_examples=200, deadline=None, database=None, print_blob=True
)
settings.register_profile(
    "long",
    max_examples=int(os.environ.get("AIENV_FUZZ_EXAMPLES", "10000")),
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("long" if os.environ.get("AIENV_FUZZ") == "long" else "ci")
