// The device training tests compiled by nvcc for CUDA (the same source as the OMP build).
#include "device_train_test.cpp"
