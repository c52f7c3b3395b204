// expect: loom::broadcast: shapes are not broadcast-compatible
#include <loom/loom.hpp>
int main() {
  loom::Param<float, loom::Shape<3, 4>> a;
#ifdef LOOM_OK
  loom::Param<float, loom::Shape<4>> b;
#else
  loom::Param<float, loom::Shape<5>> b;
#endif
  auto e = a + b;
  (void)e;
}
