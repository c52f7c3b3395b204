// examples/fashion_mnist.cpp compiled by nvcc: --device cuda runs on the GPU.
#include "fashion_mnist.cpp"
