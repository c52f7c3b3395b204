// expect: loom::matmul: inner dimensions differ
#include <loom/loom.hpp>
int main() {
  loom::Param<float, loom::Shape<64, 784>> w;
#ifdef LOOM_OK
  loom::Param<float, loom::Shape<784, 10>> v;
#else
  loom::Param<float, loom::Shape<256, 10>> v;
#endif
  auto e = loom::matmul(w, v);
  (void)e;
}
