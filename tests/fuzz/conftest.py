"""Hypothesis profiles of the reader fuzzing (tests/fuzz/test_readers.py), chosen by the
environment variable ``PHASEFORGE_FUZZ_PROFILE`` (only these tests use them; other tests keep
their own settings):

* ``ci`` (default, the normal test run): a few derandomized examples per reader and mutation
  family, no example database, so ``make test`` stays fast and deterministic.
* ``fuzz`` (``make fuzz``): hundreds of random examples per test, with the example database
  (``.hypothesis/``, gitignored) so a failure found once is replayed first next time.

``PHASEFORGE_FUZZ_EXAMPLES`` overrides the number of examples of either profile.
"""
import os

from hypothesis import HealthCheck, settings

_SLOW_OK = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
            HealthCheck.filter_too_much]
_N = os.environ.get("PHASEFORGE_FUZZ_EXAMPLES")
settings.register_profile("phaseforge-fuzz-ci", max_examples=int(_N or 4), deadline=None, derandomize=True,
                          database=None, suppress_health_check=_SLOW_OK, print_blob=True)
settings.register_profile("phaseforge-fuzz-fuzz", max_examples=int(_N or 300), deadline=None,
                          suppress_health_check=_SLOW_OK, print_blob=True)
