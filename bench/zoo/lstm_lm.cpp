// Model zoo: a 2-layer LSTM language model (embedding, LSTM, linear head) on tokens [T, B].
#include "common.hpp"
using namespace zoo;
constexpr std::size_t V = 96, E = 64, H = 256;
struct LstmLM {
  static constexpr std::size_t num_params = V * E + nn::LSTM<E, H, 2>::num_params + H * V + V;
  nn::Embedding<V, E> emb;
  nn::LSTM<E, H, 2> lstm;
  nn::Linear<H, V> head;
  explicit LstmLM(Generator& g) : emb(g), lstm(g), head(g) {}
  template <class F>
  void visit(F&& f, const std::string& p) const {
    emb.visit(f, p + "emb."), lstm.visit(f, p + "lstm."), head.visit(f, p + "head.");
  }
  template <class X>
  auto operator()(const X& tokens) const {
    auto r = lstm(emb(tokens), Constant<float, Shape<2, dyn, 2 * H>>(Tensor<float, Shape<2, dyn, 2 * H>>({2, 4, 2 * H})));
    return reshape<Shape<dyn, V>>(head(r.out));
  }
};
int main() {
  Generator g(0);
  LstmLM net(g);
  auto x = input<std::int64_t, Shape<dyn, dyn>>();
  auto y = input<std::int64_t, Shape<dyn>>();
  Tensor<std::int64_t, Shape<dyn, dyn>> t({16, 4});
  for (std::size_t i = 0; i < t.size(); ++i) t.data()[i] = std::int64_t(i % V);
  return train_step(net, x, y, t, labels(64, V));
}
