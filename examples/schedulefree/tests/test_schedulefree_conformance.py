from optbench.testing import conformance_tests

test_schedulefree = conformance_tests("adamw-schedulefree", "sgd-schedulefree")
