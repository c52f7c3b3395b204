// expect: loom::reduce: axis out of range
#include <loom/loom.hpp>
int main() {
  loom::Param<float, loom::Shape<6, 4>> a;
#ifdef LOOM_OK
  auto e = loom::sum<1>(a);
#else
  auto e = loom::sum<2>(a);
#endif
  (void)e;
}
