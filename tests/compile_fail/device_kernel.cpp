// expect: this op has no kernel for loom::cuda yet
// flags: -DLOOM_ENABLE_DEVICE
// A program over loom::cuda tensors that uses an op without a device kernel (layer norm, today) is
// rejected when it is compiled, naming the reason; the same program with device ops builds.
#include <loom/loom.hpp>
int main() {
  using gpu = loom::cuda;
  loom::Param<float, loom::Shape<4, 8>, gpu> x;
  loom::Param<float, loom::Shape<8>, gpu> w, b;
#ifdef LOOM_OK
  auto p = loom::compile(loom::sum(loom::relu(x) * w + b));
#else
  auto p = loom::compile(loom::sum(loom::make_node(loom::nn::ops::LayerNorm{1e-5}, x, w, b)));
#endif
  p.forward();
}
