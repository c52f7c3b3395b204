// Model zoo: a 4-layer decoder-only Transformer LM (width 128, 4 heads) on tokens [B, T].
#include "common.hpp"
using namespace zoo;
constexpr std::size_t V = 96;
using LM = nn::TransformerLM<V, 128, 4, 4, 128>;
struct Wrapped {
  static constexpr std::size_t num_params = LM::num_params;
  LM lm;
  Input<std::int64_t, Shape<dyn>> pos;
  explicit Wrapped(Generator& g) : lm(g) {}
  template <class F>
  void visit(F&& f, const std::string& p) const { lm.visit(f, p); }
  template <class X>
  auto operator()(const X& tokens) const { return reshape<Shape<dyn, V>>(lm(tokens, pos)); }
};
int main() {
  Generator g(0);
  Wrapped net(g);
  const auto positions = LM::positions(16);
  net.pos.bind(positions);
  auto x = input<std::int64_t, Shape<dyn, dyn>>();
  auto y = input<std::int64_t, Shape<dyn>>();
  Tensor<std::int64_t, Shape<dyn, dyn>> t({4, 16});
  for (std::size_t i = 0; i < t.size(); ++i) t.data()[i] = std::int64_t(i % V);
  return train_step(net, x, y, t, labels(64, V));
}
