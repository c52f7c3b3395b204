// expect: loom: dtype mismatch
#include <loom/loom.hpp>
int main() {
  loom::Param<float, loom::Shape<3>> a;
#ifdef LOOM_OK
  loom::Param<float, loom::Shape<3>> b;
#else
  loom::Param<double, loom::Shape<3>> b;
#endif
  auto e = a * b;
  (void)e;
}
