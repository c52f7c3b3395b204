// expect: this op has no kernel for loom::cuda yet
// flags: -DLOOM_ENABLE_DEVICE
// A program over loom::cuda tensors that uses an op without a device kernel (the recurrent scan, today) is
// rejected when it is compiled, naming the reason; the same program with device ops builds.
#include <loom/loom.hpp>
int main() {
  using gpu = loom::cuda;
  loom::Param<float, loom::Shape<5, 2, 3>, gpu> x;  // [T, B, I]
  loom::Param<float, loom::Shape<2, 4>, gpu> h0;
  loom::Param<float, loom::Shape<4, 3>, gpu> w_ih;
  loom::Param<float, loom::Shape<4, 4>, gpu> w_hh;
  loom::Param<float, loom::Shape<4>, gpu> b_ih, b_hh;
#ifdef LOOM_OK
  auto p = loom::compile(loom::sum(loom::tanh(loom::matmul(x, loom::transpose(w_ih)) + b_ih)));
#else
  auto p = loom::compile(loom::sum(loom::scan<loom::cells::RNN<false>>(x, h0, w_ih, w_hh, b_ih, b_hh)));
#endif
  p.forward();
}
