"""The optbench conformance kit, run as part of this plugin's own test suite."""

from optbench.testing import conformance_tests

test_lion = conformance_tests("lion")
