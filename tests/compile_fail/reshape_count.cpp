// expect: loom::reshape: element counts differ
#include <loom/loom.hpp>
int main() {
  loom::Param<float, loom::Shape<6, 4>> a;
#ifdef LOOM_OK
  auto e = loom::reshape<loom::Shape<3, 8>>(a);
#else
  auto e = loom::reshape<loom::Shape<5, 5>>(a);
#endif
  (void)e;
}
