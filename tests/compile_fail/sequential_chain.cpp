// expect: loom::nn::Sequential: consecutive layers do not chain
#include <loom/loom.hpp>
using namespace loom;
#ifdef LOOM_OK
using Net = nn::Sequential<nn::Linear<784, 256>, nn::ReLU, nn::Linear<256, 10>>;
#else
using Net = nn::Sequential<nn::Linear<784, 256>, nn::ReLU, nn::Linear<128, 10>>;
#endif
int main() {
  Generator g(0);
  Net net(g);
  (void)net;
}
