"""The hypothesis profiles, chosen by `HYPOTHESIS_PROFILE`, and what they mean for a property's count.

- `local` (the default of a bare `pytest`): a quarter of each property's examples, for quick
  runs at a desk;
- `ci` (`scripts/test` sets it, the README's test command, which CI runs): every property's
  full count, the counts the suite always had;
- `thorough`: 10,000 examples of each property that leaves the count to the profile, and of
  the real pruner's safety property (docs/safety-properties.md).

A property that names its count names the CI count, through `examples(n)`.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

LOCAL_SHARE = 4
# local runs: one example in this many (at least MIN_LOCAL)
MIN_LOCAL = 10

settings.register_profile("ci", print_blob=True)  # hypothesis' default count: 100
settings.register_profile("local", max_examples=100 // LOCAL_SHARE)
settings.register_profile(
    "thorough",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE") or "local"
settings.load_profile(PROFILE)


def examples(ci: int) -> int:
    """The examples of a property whose count in CI is `ci`, under the loaded profile."""
    return max(MIN_LOCAL, ci // LOCAL_SHARE) if PROFILE == "local" else ci
