// examples/char_lm.cpp compiled by nvcc: --device cuda runs on the GPU.
#include "char_lm.cpp"
