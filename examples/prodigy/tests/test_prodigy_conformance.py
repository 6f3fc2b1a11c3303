from optbench.testing import conformance_tests

test_prodigy = conformance_tests("prodigy")
