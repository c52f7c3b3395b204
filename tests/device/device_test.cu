// The device tests compiled by nvcc for CUDA (the same source as the OMP build).
#include "device_test.cpp"
