// expect: loom::nn::Linear: the input's last extent differs
#include <loom/loom.hpp>
using namespace loom;
#ifdef LOOM_OK
using Net = nn::Sequential<nn::Flatten, nn::Linear<3136, 10>>;
#else
using Net = nn::Sequential<nn::Flatten, nn::Linear<3072, 10>>;
#endif
int main() {
  Generator g(0);
  Net net(g);
  auto x = input<float, Shape<dyn, 64, 7, 7>>();  // flattens to 3136 features
  auto y = net(x);
  (void)y;
}
