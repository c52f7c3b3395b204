// expect: loom::nn::Sequential: consecutive layers do not chain
#include <loom/loom.hpp>
using namespace loom;
#ifdef LOOM_OK
using Net = nn::Sequential<nn::Conv2d<1, 32, 3>, nn::ReLU, nn::Conv2d<32, 64, 3>>;
#else
using Net = nn::Sequential<nn::Conv2d<1, 32, 3>, nn::ReLU, nn::Conv2d<16, 64, 3>>;
#endif
int main() {
  Generator g(0);
  Net net(g);
  (void)net;
}
