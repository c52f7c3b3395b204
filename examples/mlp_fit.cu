// examples/mlp_fit.cpp compiled by nvcc: --device cuda runs on the GPU.
#include "mlp_fit.cpp"
