// expect: loom: device mismatch
#include <loom/loom.hpp>
int main() {
  auto a = loom::input<float, loom::Shape<3>, loom::cpu>();
#ifdef LOOM_OK
  auto b = loom::input<float, loom::Shape<3>, loom::cpu>();
#else
  auto b = loom::input<float, loom::Shape<3>, loom::cuda>();
#endif
  auto e = a + b;
  (void)e;
}
