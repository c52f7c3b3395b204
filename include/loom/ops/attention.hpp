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
}  // namespace detail

namespace device {
/// Whether attention on a device may take the device's tiled kernels (CUDA: float heads of 16, 32 or 64
/// features; backend/device/attention.hpp). false: always the portable thread-per-row kernels (to compare
/// the two). Default true.
inline bool& tiled_attention() {
  static bool on = true;
  return on;
}
}  // namespace device

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
    LOOM_HOST_DEVICE std::size_t kv_end(std::size_t b) const {
      return len ? static_cast<std::size_t>(len[static_cast<std::ptrdiff_t>(b) * len_stride]) : Tk;
    }
    /// Validates the key lengths (before any parallel region: exceptions must not cross it).
    void check() const {
      for (std::size_t b = 0; len && b < B; ++b)
        if (const auto n = len[static_cast<std::ptrdiff_t>(b) * len_stride]; n < 0 || static_cast<std::size_t>(n) > Tk)
          throw std::out_of_range("loom::attention: key length " + std::to_string(n) + " outside [0, " + std::to_string(Tk) + "]");
    }
    /// One past the last key query i may see.
    LOOM_HOST_DEVICE std::size_t visible(std::size_t b_end, std::size_t i) const {
      return Causal ? (q0 + i + 1 < b_end ? q0 + i + 1 : b_end) : b_end;
    }
    /// Dropout multiplier of weight (b, h, i, j): 0 or 1 / (1 - p).
    LOOM_HOST_DEVICE T drop(std::size_t bh, std::size_t i, std::size_t j) const {
      if (p == 0) return T(1);
      return hash_uniform(salt ^ (((bh * Tq + i) * Tk + j) * 0xD6E8FEB86659FD93ull)) < p ? T(0) : keep_scale;
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
  Ctx<T> context(const detail::View<T, 3>& q, const detail::View<T, 3>& k, bool new_salt, bool host_lengths,
                 const L&... len) const {
    Ctx<T> c{q.dims[0], q.dims[1], k.dims[1], q.dims[2], q.dims[2] / Heads, T(0), T(1), 0.0, 0, 0, nullptr, 0};
    c.scale = T(1 / std::sqrt(double(c.dh)));
    c.p = state->mode.training ? state->dropout : 0.0;
    c.keep_scale = T(1 / (1 - c.p));
    if (new_salt && !state->fixed_salt) ++state->calls;
    c.salt = state->seed * 0x9E3779B97F4A7C15ull + state->calls;
    c.q0 = state->q_start ? *state->q_start : 0;
    if constexpr (sizeof...(L) == 1) ((c.len = len.data, c.len_stride = len.strides[0]), ...);
    if (host_lengths) c.check();
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
      if constexpr (sizeof...(L) == 2) return context(q, k, true, true, std::get<0>(std::tie(rest...)));
      else return context(q, k, true, true);
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
      if constexpr (sizeof...(L) == 2) return context(q.first, k.first, false, true, std::get<0>(std::tie(rest...)).first);
      else return context(q.first, k.first, false, true);
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

  // ---- The portable device kernels: one thread per query row (forward, dQ) or key row (dK, dV), the
  // scores recomputed from q and k (nothing T x T is stored), the same masks and dropout hash as the host.
  // On CUDA, float heads of 16, 32 or 64 features take the tiled kernels of backend/device/attention.hpp.
  /// A [B, T, D] operand: base pointer and strides (trivially copyable for kernels).
  template <class P>
  struct Mat {
    P* p;
    std::ptrdiff_t s0, s1, s2;
    LOOM_HOST_DEVICE P& operator()(std::size_t b, std::size_t i, std::size_t d) const {
      return p[static_cast<std::ptrdiff_t>(b) * s0 + static_cast<std::ptrdiff_t>(i) * s1 + static_cast<std::ptrdiff_t>(d) * s2];
    }
  };
  template <class T>
  static Mat<T> mat(const detail::View<T, 3>& v) { return {v.data, v.strides[0], v.strides[1], v.strides[2]}; }
  template <class T>
  static Mat<const T> cmat(const detail::View<T, 3>& v) { return {v.data, v.strides[0], v.strides[1], v.strides[2]}; }
  template <class T>
  struct Rows {
    Ctx<T> c;
    Mat<const T> q, k, v;
    const T* lse;
    /// The masked, scaled score of query i and key j in head h of batch b.
    LOOM_HOST_DEVICE T score(std::size_t b, std::size_t h, std::size_t i, std::size_t j) const {
      T acc = 0;
      for (std::size_t d = h * c.dh; d < (h + 1) * c.dh; ++d) acc += q(b, i, d) * k(b, j, d);
      return acc * c.scale;
    }
    /// dO_i . v_j over the head's features (dP before the dropout multiplier).
    template <class G>
    LOOM_HOST_DEVICE T dprob(const G& g, std::size_t b, std::size_t h, std::size_t i, std::size_t j) const {
      T acc = 0;
      for (std::size_t d = h * c.dh; d < (h + 1) * c.dh; ++d) acc += g(b, i, d) * v(b, j, d);
      return acc;
    }
  };
  template <class T>
  struct ForwardRow {
    Rows<T> r;
    Mat<T> out;
    T* lse;
    LOOM_HOST_DEVICE void operator()(std::size_t t) const {
      const auto& c = r.c;
      const std::size_t bh = t / c.Tq, i = t % c.Tq, b = bh / Heads, h = bh % Heads;
      const std::size_t vis = c.visible(c.kv_end(b), i);
      T m = -std::numeric_limits<T>::infinity(), l = 0;
      for (std::size_t j = 0; j < vis; ++j) {  // online max and sum
        const T s = r.score(b, h, i, j);
        if (s > m) l = l * std::exp(m - s) + T(1), m = s;
        else l += std::exp(s - m);
      }
      const T row_lse = l > T(0) ? m + std::log(l) : std::numeric_limits<T>::infinity();
      lse[t] = row_lse;
      for (std::size_t d = h * c.dh; d < (h + 1) * c.dh; ++d) out(b, i, d) = T(0);
      for (std::size_t j = 0; j < vis; ++j) {
        const T p = std::exp(r.score(b, h, i, j) - row_lse) * c.drop(bh, i, j);
        for (std::size_t d = h * c.dh; d < (h + 1) * c.dh; ++d) out(b, i, d) += p * r.v(b, j, d);
      }
    }
  };
  template <class T>
  struct RowDot {  // rowsum(dO o O) of every query row
    Ctx<T> c;
    Mat<const T> g, out;
    T* dot;
    LOOM_HOST_DEVICE void operator()(std::size_t t) const {
      const std::size_t bh = t / c.Tq, i = t % c.Tq, b = bh / Heads, h = bh % Heads;
      T acc = 0;
      for (std::size_t d = h * c.dh; d < (h + 1) * c.dh; ++d) acc += g(b, i, d) * out(b, i, d);
      dot[t] = acc;
    }
  };
  template <class T>
  struct QueryGrad {  // dQ_i += scale * sum_j dS_ij k_j
    Rows<T> r;
    Mat<const T> g;
    const T* dot;
    Mat<T> dq;
    LOOM_HOST_DEVICE void operator()(std::size_t t) const {
      const auto& c = r.c;
      const std::size_t bh = t / c.Tq, i = t % c.Tq, b = bh / Heads, h = bh % Heads;
      const std::size_t vis = c.visible(c.kv_end(b), i);
      for (std::size_t j = 0; j < vis; ++j) {
        const T P = std::exp(r.score(b, h, i, j) - r.lse[t]);
        const T dS = P * (r.dprob(g, b, h, i, j) * c.drop(bh, i, j) - dot[t]) * c.scale;
        for (std::size_t d = h * c.dh; d < (h + 1) * c.dh; ++d) dq(b, i, d) += dS * r.k(b, j, d);
      }
    }
  };
  template <class T>
  struct KeyValueGrad {  // dK_j += scale * sum_i dS_ij q_i;  dV_j += sum_i P~_ij dO_i
    Rows<T> r;
    Mat<const T> g;
    const T* dot;
    Mat<T> dk, dv;
    LOOM_HOST_DEVICE void operator()(std::size_t t) const {
      const auto& c = r.c;
      const std::size_t bh = t / c.Tk, j = t % c.Tk, b = bh / Heads, h = bh % Heads;
      const std::size_t end = c.kv_end(b);
      if (j >= end) return;  // padding keys take no gradient
      for (std::size_t i = 0; i < c.Tq; ++i) {
        if (j >= c.visible(end, i)) continue;
        const std::size_t row = bh * c.Tq + i;
        const T P = std::exp(r.score(b, h, i, j) - r.lse[row]), M = c.drop(bh, i, j);
        if (dv.p)
          for (std::size_t d = h * c.dh; d < (h + 1) * c.dh; ++d) dv(b, j, d) += P * M * g(b, i, d);
        if (dk.p) {
          const T dS = P * (r.dprob(g, b, h, i, j) * M - dot[row]) * c.scale;
          for (std::size_t d = h * c.dh; d < (h + 1) * c.dh; ++d) dk(b, j, d) += dS * r.q(b, i, d);
        }
      }
    }
  };
  struct BadLength {
    const std::int64_t* len;
    std::ptrdiff_t stride;
    std::size_t Tk;
    LOOM_HOST_DEVICE std::size_t operator()(std::size_t b) const {
      const std::int64_t n = len[static_cast<std::ptrdiff_t>(b) * stride];
      return n < 0 || static_cast<std::size_t>(n) > Tk ? 1 : 0;
    }
  };
  /// The context of a device call: key lengths are checked on the device, and reported as the host does.
  template <class Dev, class T, class... L>
  Ctx<T> device_context(const detail::View<T, 3>& q, const detail::View<T, 3>& k, bool new_salt, const L&... len) const {
    const Ctx<T> c = context(q, k, new_salt, false, len...);
    if (c.len && backend::device::sum_n<std::size_t>(c.B, BadLength{c.len, c.len_stride, c.Tk}) != 0) {
      std::vector<std::int64_t> host(c.B);
      for (std::size_t b = 0; b < c.B; ++b)
        detail::DeviceMemory<Dev>::to_host(&host[b], c.len + static_cast<std::ptrdiff_t>(b) * c.len_stride, 1);
      Ctx<T> h = c;
      h.len = host.data(), h.len_stride = 1;
      h.check();
    }
    return c;
  }
  template <class Dev, class T, class... L>
    requires(!HostDevice<Dev>)
  void forward(on<Dev>, const detail::View<T, 3>& out, const detail::View<T, 3>& q, const detail::View<T, 3>& k,
               const detail::View<T, 3>& v, const L&... rest) const {
    T* lse = std::get<sizeof...(L) - 1>(std::tie(rest...));
    const auto c = [&] {
      if constexpr (sizeof...(L) == 2) return device_context<Dev>(q, k, true, std::get<0>(std::tie(rest...)));
      else return device_context<Dev>(q, k, true);
    }();
    if (device::tiled_attention() && backend::device::attention_forward(c, Heads, cmat(q), cmat(k), cmat(v), mat(out), lse))
      return;
    const Rows<T> r{c, cmat(q), cmat(k), cmat(v), lse};
    backend::device::for_n(c.B * Heads * c.Tq, ForwardRow<T>{r, mat(out), lse});
  }
  template <class Dev, class T, class... L>
    requires(!HostDevice<Dev>)
  void backward(on<Dev>, const detail::View<T, 3>& g, const detail::View<T, 3>& out,
                const std::pair<detail::View<T, 3>, detail::View<T, 3>>& q,
                const std::pair<detail::View<T, 3>, detail::View<T, 3>>& k,
                const std::pair<detail::View<T, 3>, detail::View<T, 3>>& v, const L&... rest) const {
    T* scratch = std::get<sizeof...(L) - 1>(std::tie(rest...));
    const auto c = [&] {
      if constexpr (sizeof...(L) == 2) return context(q.first, k.first, false, false, std::get<0>(std::tie(rest...)).first);
      else return context(q.first, k.first, false, false);
    }();
    const std::size_t rows = c.B * Heads * c.Tq;
    T* dot = scratch + rows;
    const Rows<T> r{c, cmat(q.first), cmat(k.first), cmat(v.first), scratch};
    const auto gm = cmat(g);
    backend::device::for_n(rows, RowDot<T>{c, gm, cmat(out), dot});
    if (device::tiled_attention() &&
        backend::device::attention_backward(c, Heads, Causal, cmat(q.first), cmat(k.first), cmat(v.first), gm, scratch, dot,
                                            mat(q.second), mat(k.second), mat(v.second)))
      return;
    if (q.second.data) backend::device::for_n(rows, QueryGrad<T>{r, gm, dot, mat(q.second)});
    if (k.second.data || v.second.data)
      backend::device::for_n(c.B * Heads * c.Tk, KeyValueGrad<T>{r, gm, dot, mat(k.second), mat(v.second)});
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
