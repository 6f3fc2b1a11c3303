from optbench.testing import conformance_tests

test_pytorch_optimizer = conformance_tests("lamb", "adabelief", "sam", "adahessian")
