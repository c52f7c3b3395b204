// loom/ops/attention.hpp — multi-head scaled dot-product attention as one fused CPU kernel in the
// FlashAttention style: queries and keys are visited in tiles, the softmax is computed online (running
// max and sum), and the T x T score matrix is never stored. The forward keeps only the log-sum-exp of
// each query row; the backward recomputes the probabilities tile by tile.
//
//   q [B, Tq, D], k and v [B, Tk, D]; head h owns features [h * D/Heads, (h + 1) * D/Heads).
//   P = softmax(q_h k_h^T / sqrt(D/Heads) + mask),  out_h = dropout(P) v_h
//   masks: causal (key j visible to query i when j <= q_start + i), key lengths [B] (keys j >= len[b]
//   are padding), both optional. Dropout on the probabilities is drawn from a counter-based hash, so
//   the backward regenerates the same mask without storing it.
//   backward (per tile): dV += P~^T dO;  dP = (dO V^T) o M;  dS = P o (dP - rowsum(dO o O));
//                        dQ += dS K * scale;  dK += dS^T Q * scale
#pragma once
#include <cmath>
#include <limits>
#include <memory>

#include "../backend/cpu/gemm.hpp"
#include "../nn/module.hpp"
#include "op.hpp"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace loom {

namespace detail {
template <bool Ok, class Q, class K, class V>
struct check_attention {
  static_assert(Ok, "loom::attention: needs q [B, Tq, D], k and v [B, Tk, D] with D divisible by the head count "
                    "(see check_attention below)");
  static constexpr bool value = Ok;
};
inline double hash_uniform(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return static_cast<double>((x ^ (x >> 31)) >> 11) * 0x1.0p-53;
}
}  // namespace detail

namespace ops {

/// Run-time settings an attention node shares with the module that built it.
struct AttentionState {
  nn::Mode mode;                   ///< dropout only while training
  double dropout = 0;              ///< probability of dropping an attention weight
  std::uint64_t seed = 0, calls = 0;  ///< the dropout stream: one salt per forward
  bool fixed_salt = false;         ///< keep drawing the same dropout mask (gradient checks)
  const std::size_t* q_start = nullptr;  ///< absolute position of query 0 (KV-cached decoding), else 0
};

template <std::size_t Heads, bool Causal, bool Padded>
struct Attention {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = Causal ? "causal_attention" : "attention";
  static constexpr std::size_t Br = 32, Bc = 64;  // query and key tile sizes
  template <class Q, class... R>
  using shape = Q;
  template <class Q, class... R>
  using value_type = value_t<Q>;
  std::shared_ptr<AttentionState> state = std::make_shared<AttentionState>();

  template <class... L>
  Dims<3> dims(const Dims<3>& q, const Dims<3>& k, const Dims<3>& v, const L&... len) const {
    if (q[0] != k[0] || k != v || q[2] != k[2] || q[2] % Heads != 0)
      throw shape_error("loom::attention: q " + to_string(q) + ", k " + to_string(k) + " and v " + to_string(v) +
                        " do not fit (" + std::to_string(Heads) + " heads)");
    if constexpr (sizeof...(L) == 1)
      if (((len[0] != q[0]) || ...))
        throw shape_error("loom::attention: key lengths " + to_string(len...) + " for a batch of " + std::to_string(q[0]));
    return q;
  }
  static std::size_t threads() {
#ifdef _OPENMP
    return static_cast<std::size_t>(omp_get_max_threads());
#else
    return 1;
#endif
  }
  /// Row log-sum-exps and rowsum(dO o O) [B, Heads, Tq] x 2, then per thread two score tiles.
  template <class... L>
  std::size_t scratch(const Dims<3>& q, const Dims<3>&, const Dims<3>&, const L&...) const {
    return 2 * q[0] * Heads * q[1] + threads() * 2 * Br * Bc;
  }

  template <class T>
  struct Ctx {
    std::size_t B, Tq, Tk, D, dh;
    T scale, keep_scale;
    double p;
    std::uint64_t salt;
    std::size_t q0;
    const std::int64_t* len;  // null: every key is valid
    std::ptrdiff_t len_stride;
    std::size_t kv_end(std::size_t b) const {
      return len ? static_cast<std::size_t>(len[static_cast<std::ptrdiff_t>(b) * len_stride]) : Tk;
    }
    /// Validates the key lengths (before any parallel region: exceptions must not cross it).
    void check() const {
      for (std::size_t b = 0; len && b < B; ++b)
        if (const auto n = len[static_cast<std::ptrdiff_t>(b) * len_stride]; n < 0 || static_cast<std::size_t>(n) > Tk)
          throw std::out_of_range("loom::attention: key length " + std::to_string(n) + " outside [0, " + std::to_string(Tk) + "]");
    }
    /// One past the last key query i may see.
    std::size_t visible(std::size_t b_end, std::size_t i) const { return Causal ? std::min(b_end, q0 + i + 1) : b_end; }
    /// Dropout multiplier of weight (b, h, i, j): 0 or 1 / (1 - p).
    T drop(std::size_t bh, std::size_t i, std::size_t j) const {
      if (p == 0) return T(1);
      return detail::hash_uniform(salt ^ (((bh * Tq + i) * Tk + j) * 0xD6E8FEB86659FD93ull)) < p ? T(0) : keep_scale;
    }
  };
  template <class T>
  static detail::View<T, 2> tile(const detail::View<T, 3>& v, std::size_t b, std::size_t r0, std::size_t rows,
                                 std::size_t c0, std::size_t cols) {
    return {v.data + static_cast<std::ptrdiff_t>(b) * v.strides[0] + static_cast<std::ptrdiff_t>(r0) * v.strides[1] +
                static_cast<std::ptrdiff_t>(c0) * v.strides[2],
            {rows, cols}, {v.strides[1], v.strides[2]}};
  }
  template <class T>
  static detail::View<T, 2> buf(T* p, std::size_t r, std::size_t c) { return {p, {r, c}, {static_cast<std::ptrdiff_t>(c), 1}}; }

  template <class T, class... L>
  Ctx<T> context(const detail::View<T, 3>& q, const detail::View<T, 3>& k, bool new_salt, const L&... len) const {
    Ctx<T> c{q.dims[0], q.dims[1], k.dims[1], q.dims[2], q.dims[2] / Heads, T(0), T(1), 0.0, 0, 0, nullptr, 0};
    c.scale = T(1 / std::sqrt(double(c.dh)));
    c.p = state->mode.training ? state->dropout : 0.0;
    c.keep_scale = T(1 / (1 - c.p));
    if (new_salt && !state->fixed_salt) ++state->calls;
    c.salt = state->seed * 0x9E3779B97F4A7C15ull + state->calls;
    c.q0 = state->q_start ? *state->q_start : 0;
    if constexpr (sizeof...(L) == 1) ((c.len = len.data, c.len_stride = len.strides[0]), ...);
    c.check();
    return c;
  }
  /// Scores of tile (i0.., j0..) into s (rows x cols), scaled and masked (-inf where invisible).
  template <class T>
  static void scores(const Ctx<T>& c, const detail::View<T, 3>& q, const detail::View<T, 3>& k, std::size_t b,
                     std::size_t h, std::size_t i0, std::size_t rows, std::size_t j0, std::size_t cols, std::size_t end, T* s) {
    backend::cpu::gemm(buf(s, rows, cols), tile(q, b, i0, rows, h * c.dh, c.dh),
                       backend::cpu::transposed(tile(k, b, j0, cols, h * c.dh, c.dh)), false);
    for (std::size_t r = 0; r < rows; ++r) {
      const std::size_t vis = c.visible(end, i0 + r);
      for (std::size_t j = 0; j < cols; ++j)
        s[r * cols + j] = j0 + j < vis ? s[r * cols + j] * c.scale : -std::numeric_limits<T>::infinity();
    }
  }

  template <class T, class... L>
  void forward(const detail::View<T, 3>& out, const detail::View<T, 3>& q, const detail::View<T, 3>& k,
               const detail::View<T, 3>& v, const L&... rest) const {
    T* scratch = std::get<sizeof...(L) - 1>(std::tie(rest...));
    const auto c = [&] {
      if constexpr (sizeof...(L) == 2) return context(q, k, true, std::get<0>(std::tie(rest...)));
      else return context(q, k, true);
    }();
    T* lse = scratch;
    T* tiles = scratch + 2 * c.B * Heads * c.Tq;
    const auto BH = static_cast<std::ptrdiff_t>(c.B * Heads);
#pragma omp parallel for schedule(dynamic)
    for (std::ptrdiff_t bh = 0; bh < BH; ++bh) {
#ifdef _OPENMP
      T* s = tiles + static_cast<std::size_t>(omp_get_thread_num()) * 2 * Br * Bc;
#else
      T* s = tiles;
#endif
      T* pd = s + Br * Bc;  // the dropped-out probabilities
      const std::size_t b = static_cast<std::size_t>(bh) / Heads, h = static_cast<std::size_t>(bh) % Heads;
      const std::size_t end = c.kv_end(b);
      for (std::size_t i0 = 0; i0 < c.Tq; i0 += Br) {
        const std::size_t rows = std::min(Br, c.Tq - i0);
        T m[Br], l[Br];
        std::fill_n(m, rows, -std::numeric_limits<T>::infinity());
        std::fill_n(l, rows, T(0));
        const auto o = tile(out, b, i0, rows, h * c.dh, c.dh);
        for (std::size_t r = 0; r < rows; ++r) std::fill_n(o.data + r * o.strides[0], c.dh, T(0));
        const std::size_t last = c.visible(end, i0 + rows - 1);
        for (std::size_t j0 = 0; j0 < last; j0 += Bc) {
          const std::size_t cols = std::min(Bc, last - j0);
          scores(c, q, k, b, h, i0, rows, j0, cols, end, s);
          for (std::size_t r = 0; r < rows; ++r) {
            T* sr = s + r * cols;
            T mx = m[r];
            for (std::size_t j = 0; j < cols; ++j) mx = std::max(mx, sr[j]);
            if (mx == -std::numeric_limits<T>::infinity()) {  // nothing visible in this tile yet
              std::fill_n(pd + r * cols, cols, T(0));
              continue;
            }
            const T corr = std::exp(m[r] - mx);
            T sum = 0;
            for (std::size_t j = 0; j < cols; ++j) {
              const T e = std::exp(sr[j] - mx);
              sum += e;
              pd[r * cols + j] = e * c.drop(static_cast<std::size_t>(bh), i0 + r, j0 + j);
            }
            l[r] = l[r] * corr + sum;
            m[r] = mx;
            T* orow = o.data + r * o.strides[0];
            for (std::size_t d = 0; d < c.dh; ++d) orow[d] *= corr;
          }
          backend::cpu::gemm(o, buf(pd, rows, cols), tile(v, b, j0, cols, h * c.dh, c.dh), true);
        }
        for (std::size_t r = 0; r < rows; ++r) {
          T* orow = o.data + r * o.strides[0];
          const T inv = l[r] > T(0) ? T(1) / l[r] : T(0);
          for (std::size_t d = 0; d < c.dh; ++d) orow[d] *= inv;
          lse[static_cast<std::size_t>(bh) * c.Tq + i0 + r] = l[r] > T(0) ? m[r] + std::log(l[r]) : std::numeric_limits<T>::infinity();
        }
      }
    }
  }

  template <class T, class... L>
  void backward(const detail::View<T, 3>& g, const detail::View<T, 3>& out,
                const std::pair<detail::View<T, 3>, detail::View<T, 3>>& q,
                const std::pair<detail::View<T, 3>, detail::View<T, 3>>& k,
                const std::pair<detail::View<T, 3>, detail::View<T, 3>>& v, const L&... rest) const {
    T* scratch = std::get<sizeof...(L) - 1>(std::tie(rest...));
    const auto c = [&] {
      if constexpr (sizeof...(L) == 2) return context(q.first, k.first, false, std::get<0>(std::tie(rest...)).first);
      else return context(q.first, k.first, false);
    }();
    const T* lse = scratch;
    T* rowdot = scratch + c.B * Heads * c.Tq;
    T* tiles = scratch + 2 * c.B * Heads * c.Tq;
    const auto BH = static_cast<std::ptrdiff_t>(c.B * Heads);
#pragma omp parallel for schedule(dynamic)
    for (std::ptrdiff_t bh = 0; bh < BH; ++bh) {
#ifdef _OPENMP
      T* s = tiles + static_cast<std::size_t>(omp_get_thread_num()) * 2 * Br * Bc;
#else
      T* s = tiles;
#endif
      T* dp = s + Br * Bc;
      const std::size_t b = static_cast<std::size_t>(bh) / Heads, h = static_cast<std::size_t>(bh) % Heads;
      const std::size_t end = c.kv_end(b);
      T* dot = rowdot + static_cast<std::size_t>(bh) * c.Tq;
      for (std::size_t i = 0; i < c.Tq; ++i) {
        const auto gi = tile(g, b, i, 1, h * c.dh, c.dh), oi = tile(out, b, i, 1, h * c.dh, c.dh);
        T acc = 0;
        for (std::size_t d = 0; d < c.dh; ++d) acc += gi.data[static_cast<std::ptrdiff_t>(d) * gi.strides[1]] * oi.data[static_cast<std::ptrdiff_t>(d) * oi.strides[1]];
        dot[i] = acc;
      }
      for (std::size_t i0 = 0; i0 < c.Tq; i0 += Br) {
        const std::size_t rows = std::min(Br, c.Tq - i0);
        const std::size_t last = c.visible(end, i0 + rows - 1);
        for (std::size_t j0 = 0; j0 < last; j0 += Bc) {
          const std::size_t cols = std::min(Bc, last - j0);
          scores(c, q.first, k.first, b, h, i0, rows, j0, cols, end, s);
          // dP = dO V^T (before the probabilities overwrite s)
          backend::cpu::gemm(buf(dp, rows, cols), tile(g, b, i0, rows, h * c.dh, c.dh),
                             backend::cpu::transposed(tile(v.first, b, j0, cols, h * c.dh, c.dh)), false);
          for (std::size_t r = 0; r < rows; ++r) {
            const T lse_r = lse[static_cast<std::size_t>(bh) * c.Tq + i0 + r];
            for (std::size_t j = 0; j < cols; ++j) {
              const T P = std::exp(s[r * cols + j] - lse_r), M = c.drop(static_cast<std::size_t>(bh), i0 + r, j0 + j);
              s[r * cols + j] = P * M;                          // P~ for dV
              dp[r * cols + j] = P * (dp[r * cols + j] * M - dot[i0 + r]) * c.scale;  // dS * scale
            }
          }
          if (v.second.data)
            backend::cpu::gemm(tile(v.second, b, j0, cols, h * c.dh, c.dh), backend::cpu::transposed(buf(s, rows, cols)),
                               tile(g, b, i0, rows, h * c.dh, c.dh), true);
          if (q.second.data)
            backend::cpu::gemm(tile(q.second, b, i0, rows, h * c.dh, c.dh), buf(dp, rows, cols),
                               tile(k.first, b, j0, cols, h * c.dh, c.dh), true);
          if (k.second.data)
            backend::cpu::gemm(tile(k.second, b, j0, cols, h * c.dh, c.dh), backend::cpu::transposed(buf(dp, rows, cols)),
                               tile(q.first, b, i0, rows, h * c.dh, c.dh), true);
        }
      }
    }
  }
};

}  // namespace ops

/// Multi-head attention of q [B, Tq, D] over k, v [B, Tk, D] (Heads heads of D / Heads features),
/// optionally causal; `state` carries dropout and the decoding position (defaults: none, 0).
template <std::size_t Heads, bool Causal = false, Expression Q, Expression K, Expression V>
auto attention(const Q& q, const K& k, const V& v, std::shared_ptr<ops::AttentionState> state = nullptr) {
  using SQ = shape_t<Q>;
  using SK = shape_t<K>;
  constexpr bool ok = SQ::rank == 3 && SK::rank == 3 && std::is_same_v<SK, shape_t<V>> &&
                      (SQ::extents[2] == dyn || SQ::extents[2] % Heads == 0) && detail::ext_eq(SQ::extents[2], SK::extents[2]);
  detail::check_attention<ok, SQ, SK, shape_t<V>>{};
  if constexpr (ok) {
    ops::Attention<Heads, Causal, false> op;
    if (state) op.state = std::move(state);
    return make_node(op, q, k, v);
  }
}
/// As attention(), with key lengths [B] (int64): keys at positions >= lengths[b] are padding.
template <std::size_t Heads, bool Causal = false, Expression Q, Expression K, Expression V, Expression L>
auto attention(const Q& q, const K& k, const V& v, const L& key_lengths, std::shared_ptr<ops::AttentionState> state = nullptr) {
  static_assert(std::is_same_v<value_t<L>, std::int64_t> && shape_t<L>::rank == 1,
                "loom::attention: key lengths are int64 [B]");
  using SQ = shape_t<Q>;
  using SK = shape_t<K>;
  constexpr bool ok = SQ::rank == 3 && SK::rank == 3 && std::is_same_v<SK, shape_t<V>> &&
                      (SQ::extents[2] == dyn || SQ::extents[2] % Heads == 0) && detail::ext_eq(SQ::extents[2], SK::extents[2]);
  detail::check_attention<ok, SQ, SK, shape_t<V>>{};
  if constexpr (ok) {
    ops::Attention<Heads, Causal, true> op;
    if (state) op.state = std::move(state);
    return make_node(op, q, k, v, key_lengths);
  }
}

}  // namespace loom
