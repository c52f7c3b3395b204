// loom/nn/transformer.hpp — MultiheadAttention (PyTorch's nn.MultiheadAttention parameters: packed
// in_proj_weight [3D, D], in_proj_bias, out_proj), a pre-norm TransformerLayer (the parameters of
// nn.TransformerEncoderLayer(norm_first=True, activation="gelu", batch_first=True)), and a decoder-only
// TransformerLM with learned positional embeddings and KV-cached decoding.
//
//   layer(x) = y + dropout(ff2(gelu(ff1(norm2(y))))),  y = x + dropout(attn(norm1(x)))
//
// KV cache: decoding compiles a second program over the same parameters whose attention reads keys and
// values from preallocated [B, MaxT, D] tensors (one pair per layer); each step appends its tokens' keys
// and values at the cache position and attends over the filled prefix (key lengths), so a token costs
// one row of work per layer and nothing grows.
#pragma once
#include <array>
#include <memory>

#include "../expr/let.hpp"
#include "../ops/attention.hpp"
#include "../ops/index.hpp"
#include "init.hpp"
#include "layers.hpp"
#include "norm.hpp"

namespace loom {

namespace ops {
/// Writes new rows [B, Tn, D] into a cache [B, MaxT, D] at rows [*pos, *pos + Tn) and evaluates to the
/// cache's filled rows (rows past them hold stale values that the attention's key lengths mask).
template <class T, std::size_t MaxT, class Dev = cpu>
struct CacheAppend {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = false;
  static constexpr std::string_view name = "kv_cache_append";
  Tensor<T, DynShape<3>, Dev>* cache;
  const std::size_t* pos;
  template <class X>
  using shape = Shape<X::extents[0], MaxT, X::extents[2]>;
  Dims<3> dims(const Dims<3>& x) const {
    const auto& c = cache->dims();
    if (c[0] != x[0] || c[1] != MaxT || c[2] != x[2])
      throw shape_error("loom::kv_cache: cache " + to_string(c) + " does not hold rows " + to_string(x));
    return {x[0], MaxT, x[2]};
  }
  /// Strided copies on the program's device K: x into the cache rows, then the filled rows out.
  template <class K>
  void forward(on<K>, const detail::View<T, 3>& out, const detail::View<T, 3>& x) const {
    const std::size_t B = x.dims[0], Tn = x.dims[1], D = x.dims[2], p = *pos;
    if (p + Tn > MaxT)
      throw shape_error("loom::kv_cache: " + std::to_string(p + Tn) + " positions exceed the cache's " + std::to_string(MaxT));
    const Strides<3> st{static_cast<std::ptrdiff_t>(MaxT * D), static_cast<std::ptrdiff_t>(D), 1};
    T* c = cache->data();
    backend::Exec<K>::template apply<backend::Mode::assign>(detail::View<T, 3>{c + p * D, {B, Tn, D}, st}, x);
    backend::Exec<K>::template apply<backend::Mode::assign>(detail::View<T, 3>{out.data, {B, p + Tn, D}, st},
                                                            detail::View<T, 3>{c, {B, p + Tn, D}, st});
  }
};
}  // namespace ops

namespace nn {

/// Preallocated keys and values of every layer, [B, MaxT, D] each, and the number of filled positions.
template <class T = float, class D = cpu>
struct KVCache {
  std::vector<Tensor<T, DynShape<3>, D>> k, v;
  std::size_t pos = 0;
  KVCache(std::size_t layers, std::size_t batch, std::size_t max_len, std::size_t dim) {
    for (std::size_t l = 0; l < layers; ++l) {
      k.emplace_back(Dims<3>{batch, max_len, dim}), v.emplace_back(Dims<3>{batch, max_len, dim});
      k.back().fill(T(0)), v.back().fill(T(0));
    }
  }
  void reset() { pos = 0; }
};

/// Self-attention with Heads heads over x [B, T, D].
template <std::size_t D, std::size_t Heads, bool Causal = false, class T = float, class Dev = cpu>
struct MultiheadAttention {
  static_assert(D % Heads == 0, "loom::nn::MultiheadAttention: D must be divisible by Heads");
  static constexpr std::size_t in_features = D, out_features = D;
  static constexpr std::size_t num_params = 3 * D * D + 3 * D + D * D + D;
  static constexpr std::string_view name = "MultiheadAttention";
  template <class D2>
  using on_device = MultiheadAttention<D, Heads, Causal, T, D2>;
  Param<T, Shape<3 * D, D>, Dev> in_proj_weight;
  Param<T, Shape<3 * D>, Dev> in_proj_bias;
  Linear<D, D, true, T, Dev> out_proj;
  std::shared_ptr<loom::ops::AttentionState> state = std::make_shared<loom::ops::AttentionState>();

  /// PyTorch's init: xavier_uniform in_proj_weight, zero biases, out_proj.weight as a Linear's.
  explicit MultiheadAttention(Generator& g, double dropout = 0) : out_proj(g) {
    init::xavier_uniform(in_proj_weight, g);
    init::constant(out_proj.bias, 0);
    state->dropout = dropout;
    state->seed = g.next();
  }
  void set_training(bool on) { state->mode.training = on; }
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    f(prefix + "in_proj_weight", in_proj_weight);
    f(prefix + "in_proj_bias", in_proj_bias);
    out_proj.visit(f, prefix + "out_proj.");
  }
  template <Expression X>
  auto qkv(const X& x) const { return matmul(x, transpose(in_proj_weight)) + in_proj_bias; }
  template <Expression X>
  auto operator()(const X& x) const {
    auto p = qkv(x);
    return out_proj(attention<Heads, Causal>(narrow<2, 0, D>(p), narrow<2, D, D>(p), narrow<2, 2 * D, D>(p), state));
  }
  /// With key lengths [B]: keys at positions >= lengths[b] are padding.
  template <Expression X, Expression L>
  auto operator()(const X& x, const L& key_lengths) const {
    auto p = qkv(x);
    return out_proj(attention<Heads, Causal>(narrow<2, 0, D>(p), narrow<2, D, D>(p), narrow<2, 2 * D, D>(p), key_lengths, state));
  }
  /// Decoding: appends this step's keys and values to the cache and attends over the filled prefix.
  template <std::size_t MaxT, Expression X, Expression L>
  auto cached(const X& x, const L& lengths, Tensor<T, DynShape<3>, Dev>& k_cache, Tensor<T, DynShape<3>, Dev>& v_cache,
              const std::size_t* pos, std::shared_ptr<loom::ops::AttentionState> decode_state) const {
    auto p = qkv(x);
    auto k = make_node(loom::ops::CacheAppend<T, MaxT, Dev>{&k_cache, pos}, narrow<2, D, D>(p));
    auto v = make_node(loom::ops::CacheAppend<T, MaxT, Dev>{&v_cache, pos}, narrow<2, 2 * D, D>(p));
    return out_proj(attention<Heads, Causal>(narrow<2, 0, D>(p), k, v, lengths, std::move(decode_state)));
  }
};

/// Pre-norm Transformer layer: attention then a GELU MLP of width FF, each inside a residual, with
/// dropout DropPerMille / 1000 on the attention weights and on both residual branches.
template <std::size_t D, std::size_t Heads, std::size_t FF = 4 * D, bool Causal = true, std::size_t DropPerMille = 0,
          class T = float, class Dev = cpu>
struct TransformerLayer {
  static constexpr std::size_t in_features = D, out_features = D;
  static constexpr std::string_view name = "TransformerLayer";
  template <class D2>
  using on_device = TransformerLayer<D, Heads, FF, Causal, DropPerMille, T, D2>;
  LayerNorm<D, T, Dev> norm1, norm2;
  MultiheadAttention<D, Heads, Causal, T, Dev> self_attn;
  Linear<D, FF, true, T, Dev> linear1;
  Linear<FF, D, true, T, Dev> linear2;
  Dropout<DropPerMille> dropout1, dropout2;
  static constexpr std::size_t num_params = 2 * LayerNorm<D, T>::num_params + decltype(self_attn)::num_params +
                                            decltype(linear1)::num_params + decltype(linear2)::num_params;
  explicit TransformerLayer(Generator& g)
      : norm1(g), norm2(g), self_attn(g, DropPerMille / 1000.0), linear1(g), linear2(g), dropout1(g), dropout2(g) {}
  void set_training(bool on) {
    self_attn.set_training(on), dropout1.set_training(on), dropout2.set_training(on);
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    self_attn.visit(f, prefix + "self_attn.");
    linear1.visit(f, prefix + "linear1.");
    linear2.visit(f, prefix + "linear2.");
    norm1.visit(f, prefix + "norm1.");
    norm2.visit(f, prefix + "norm2.");
  }
  /// Dropout on a residual branch (nothing at all when DropPerMille is 0).
  template <Expression X>
  static auto drop(const Dropout<DropPerMille>& d, const X& x) {
    if constexpr (DropPerMille == 0) return x;
    else return d(x);
  }
  /// x + attention branch, then y + MLP branch; each residual input is a `let`, so the expression
  /// type holds it once (a stack of layers grows linearly, not exponentially, in node count).
  template <Expression X, class Attend>
  auto residuals(const X& x, Attend&& attend) const {
    auto y = let(x, [&](auto r) { return r + attend(norm1(r)); });
    return let(y, [&](auto r) { return r + drop(dropout2, linear2(gelu(linear1(norm2(r))))); });
  }
  template <Expression X>
  auto operator()(const X& x) const {
    return residuals(x, [&](const auto& h) { return drop(dropout1, self_attn(h)); });
  }
  template <Expression X, Expression L>
  auto operator()(const X& x, const L& key_lengths) const {
    return residuals(x, [&](const auto& h) { return drop(dropout1, self_attn(h, key_lengths)); });
  }
  template <std::size_t MaxT, Expression X, Expression L>
  auto cached(const X& x, const L& lengths, Tensor<T, DynShape<3>, Dev>& k, Tensor<T, DynShape<3>, Dev>& v, const std::size_t* pos,
              std::shared_ptr<loom::ops::AttentionState> st) const {
    return residuals(x, [&](const auto& h) { return self_attn.template cached<MaxT>(h, lengths, k, v, pos, st); });
  }
};

/// Decoder-only language model: token and learned positional embeddings, Layers causal pre-norm
/// layers, a final LayerNorm and a linear head over V tokens; at most MaxT positions.
template <std::size_t V, std::size_t D, std::size_t Heads, std::size_t Layers, std::size_t MaxT, std::size_t FF = 4 * D,
          std::size_t DropPerMille = 0, class T = float, class Dev = cpu>
struct TransformerLM {
  using Layer = TransformerLayer<D, Heads, FF, true, DropPerMille, T, Dev>;
  template <class D2>
  using on_device = TransformerLM<V, D, Heads, Layers, MaxT, FF, DropPerMille, T, D2>;
  static constexpr std::size_t vocab = V, dim = D, num_layers = Layers, max_len = MaxT;
  Embedding<V, D, T, Dev> tok;
  Embedding<MaxT, D, T, Dev> pos;
  std::array<Layer, Layers> layers;
  LayerNorm<D, T, Dev> norm;
  Linear<D, V, true, T, Dev> head;
  static constexpr std::size_t num_params =
      V * D + MaxT * D + Layers * Layer::num_params + LayerNorm<D, T>::num_params + Linear<D, V, true, T>::num_params;

  explicit TransformerLM(Generator& g) : tok(g), pos(g), layers(make_layers(g, std::make_index_sequence<Layers>{})), norm(g), head(g) {}
  void set_training(bool on) {
    for (auto& l : layers) l.set_training(on);
  }
  void train() { set_training(true); }
  void eval() { set_training(false); }
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    tok.visit(f, prefix + "tok.");
    pos.visit(f, prefix + "pos.");
    for (std::size_t l = 0; l < Layers; ++l) layers[l].visit(f, prefix + "layers." + std::to_string(l) + ".");
    norm.visit(f, prefix + "norm.");
    head.visit(f, prefix + "head.");
  }
  /// Positions start, start + 1, ... for T tokens; a shape_error when they pass the positional table.
  static Tensor<std::int64_t, Shape<dyn>> positions(std::size_t n, std::size_t start = 0) {
    if (start + n > MaxT)
      throw shape_error("loom::nn::TransformerLM: a sequence reaching position " + std::to_string(start + n) +
                        " is longer than the positional table (" + std::to_string(MaxT) + " positions)");
    Tensor<std::int64_t, Shape<dyn>> p({n});
    for (std::size_t t = 0; t < n; ++t) p(t) = std::int64_t(start + t);
    return p;
  }
  /// Logits [B, T, V] of tokens [B, T] at positions [T] (causal: position t sees tokens <= t).
  template <Expression X, Expression P>
  auto operator()(const X& tokens, const P& positions) const {
    return head(norm(apply<0>(tok(tokens) + pos(positions))));
  }
  /// Logits [B, Tn, V] of Tn new tokens decoded against the cache; lengths [B] = cache.pos + Tn.
  template <Expression X, Expression P, Expression L>
  auto decode(const X& tokens, const P& positions, const L& lengths, KVCache<T, Dev>& cache) const {
    auto st = std::make_shared<loom::ops::AttentionState>();
    st->mode.training = false;
    st->q_start = &cache.pos;
    return head(norm(apply_cached<0>(tok(tokens) + pos(positions), lengths, cache, st)));
  }
  KVCache<T, Dev> make_cache(std::size_t batch) const { return KVCache<T, Dev>(Layers, batch, MaxT, D); }

 private:
  template <std::size_t... I>
  static std::array<Layer, Layers> make_layers(Generator& g, std::index_sequence<I...>) {
    return {((void)I, Layer(g))...};
  }
  template <std::size_t L, class X>
  auto apply(const X& x) const {
    if constexpr (L == Layers) return x;
    else return apply<L + 1>(layers[L](x));
  }
  template <std::size_t L, class X, class Len>
  auto apply_cached(const X& x, const Len& len, KVCache<T, Dev>& c, const std::shared_ptr<loom::ops::AttentionState>& st) const {
    if constexpr (L == Layers) return x;
    else return apply_cached<L + 1>(layers[L].template cached<MaxT>(x, len, c.k[L], c.v[L], &c.pos, st), len, c, st);
  }
};

}  // namespace nn
}  // namespace loom
