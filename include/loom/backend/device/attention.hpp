// loom/backend/device/attention.hpp — CUDA kernels of multi-head attention (ops/attention.hpp) for float
// heads of 16, 32 or 64 features, in the FlashAttention style: a block takes 64 query rows (forward, dQ) or
// 64 key rows (dK, dV) of one (batch, head), a thread one row, its accumulators in registers; the other
// side's rows pass through shared memory a tile at a time, so each key and value is read from global
// memory once per 64 queries (the portable kernels read them once per query). The scores are recomputed,
// never stored; masks and dropout are the op's own (its context's visible() and drop()). Elsewhere (other
// widths, double, the host device systems) these return false and the op runs its portable thread-per-row
// kernels.
#pragma once
#include <cstddef>
#include <limits>
#include <type_traits>

#include "fused.hpp"

namespace loom::backend::device {

#if defined(LOOM_CUDA)
namespace attn {
constexpr int Rows = 64;      // query (forward, dQ) or key (dK, dV) rows per block: a thread each
constexpr int KTile = 64;     // keys per shared-memory tile (forward, dQ)
constexpr int QTile = 32;     // queries per shared-memory tile (dK, dV)

/// Element (b, r0 + r, d0 + d) of operand m, 0 past `valid` rows.
template <class T, class M>
__device__ T element(const M& m, std::size_t b, std::size_t r0, int r, std::size_t valid, std::size_t d0, int d) {
  const std::size_t row = r0 + static_cast<std::size_t>(r);
  return row < valid ? m(b, row, d0 + static_cast<std::size_t>(d)) : T(0);
}
/// Rows [r0, r0 + n) of the head's features of operand m into s[n][Dh] (zeros past `valid` rows).
template <int Dh, class M, class T>
__device__ void load_rows(T (*s)[Dh], const M& m, std::size_t b, std::size_t r0, std::size_t valid, std::size_t d0, int n) {
  for (int e = static_cast<int>(threadIdx.x); e < n * Dh; e += static_cast<int>(blockDim.x))
    s[e / Dh][e % Dh] = element<T>(m, b, r0, e / Dh, valid, d0, e % Dh);
}
/// The same, transposed: s[Dh][n] (each thread then reads its own row conflict-free).
template <int Dh, class M, class T>
__device__ void load_cols(T (*s)[Rows], const M& m, std::size_t b, std::size_t r0, std::size_t valid, std::size_t d0, int n) {
  for (int e = static_cast<int>(threadIdx.x); e < n * Dh; e += static_cast<int>(blockDim.x))
    s[e % Dh][e / Dh] = element<T>(m, b, r0, e / Dh, valid, d0, e % Dh);
}
/// p, as far as the compiler knows, another pointer: a shared row read twice is read again rather than
/// kept in (Dh more) registers between the two uses (which made the wide kernels spill).
template <class T>
__device__ const T* reread(const T* p) {
  asm volatile("" : "+l"(p));
  return p;
}
/// The sum of term(0), ..., term(Dh - 1) in 8 interleaved partial sums, added pairwise at the end: 8
/// independent chains of multiply-adds instead of one Dh long (whose latency bound the kernels: a block
/// has few warps, its registers being the rows).
template <int Dh, class T, class F>
__device__ T sum_of(const F& term) {
  constexpr int P = Dh < 8 ? Dh : 8;
  T part[P];
#pragma unroll
  for (int p = 0; p < P; ++p) part[p] = T(0);
#pragma unroll
  for (int d = 0; d < Dh; ++d) part[d % P] += term(d);
#pragma unroll
  for (int w = P / 2; w > 0; w /= 2)
#pragma unroll
    for (int p = 0; p < w; ++p) part[p] += part[p + w];
  return part[0];
}
template <int Dh, class T>
__device__ T dot(const T (&a)[Dh], const T* b) {
  return sum_of<Dh, T>([&](int d) { return a[d] * b[d]; });
}

/// The walk over the keys of the forward and dQ: tiles of KT keys below `last` (the block's widest row)
/// into ks / vs, then body(jj, j) for each key j = tile start + jj that this thread's row sees (j < vis).
template <int KT, int Dh, class CM, class T, class F>
__device__ void over_keys(T (*ks)[Dh], T (*vs)[Dh], const CM& k, const CM& v, std::size_t b, std::size_t end, std::size_t d0,
                          std::size_t last, std::size_t vis, const F& body) {
  for (std::size_t j0 = 0; j0 < last; j0 += KT) {
    load_rows<Dh>(ks, k, b, j0, end, d0, KT);
    load_rows<Dh>(vs, v, b, j0, end, d0, KT);
    __syncthreads();
    const int n = vis > j0 ? static_cast<int>(vis - j0 < KT ? vis - j0 : KT) : 0;
#pragma unroll 1
    for (int jj = 0; jj < n; ++jj) body(jj, j0 + static_cast<std::size_t>(jj));
    __syncthreads();
  }
}

/// Forward: out rows and each row's log-sum-exp. Grid (query blocks, B * heads).
template <int Dh, class C, class CM, class WM, class T>
__global__ void __launch_bounds__(Rows) forward(C c, std::size_t heads, CM q, CM k, CM v, WM out, T* lse) {
  __shared__ T ks[KTile][Dh], vs[KTile][Dh];
  const std::size_t bh = blockIdx.y, b = bh / heads, h = bh % heads, d0 = h * Dh;
  const std::size_t i0 = static_cast<std::size_t>(blockIdx.x) * Rows, i = i0 + threadIdx.x;
  const bool row = i < c.Tq;
  const std::size_t end = c.kv_end(b);
  const std::size_t vis = row ? c.visible(end, i) : 0;
  const std::size_t last = c.visible(end, (i0 + Rows < c.Tq ? i0 + Rows : c.Tq) - 1);  // the block's widest row
  T qr[Dh], acc[Dh];
#pragma unroll
  for (int d = 0; d < Dh; ++d) qr[d] = row ? q(b, i, d0 + d) : T(0), acc[d] = T(0);
  T m = -std::numeric_limits<T>::infinity(), l = 0;
  over_keys<KTile>(ks, vs, k, v, b, end, d0, last, vis, [&](int jj, std::size_t j) {
    const T s = dot<Dh>(qr, ks[jj]) * c.scale;
    T e;
    if (s > m) {  // a new maximum: rescale what was summed so far
      const T corr = std::exp(m - s);
      l = l * corr + T(1);
#pragma unroll
      for (int d = 0; d < Dh; ++d) acc[d] *= corr;
      m = s, e = T(1);
    } else {
      e = std::exp(s - m);
      l += e;
    }
    const T p = e * c.drop(bh, i, j);
#pragma unroll
    for (int d = 0; d < Dh; ++d) acc[d] += p * vs[jj][d];
  });
  if (!row) return;
  const T inv = l > T(0) ? T(1) / l : T(0);
#pragma unroll
  for (int d = 0; d < Dh; ++d) out(b, i, d0 + d) = acc[d] * inv;
  lse[bh * c.Tq + i] = l > T(0) ? m + std::log(l) : std::numeric_limits<T>::infinity();
}

/// Heads of 64 features keep one more row in shared memory (transposed, so each thread reads its own row
/// without bank conflicts) instead of registers, where registers would spill, and take smaller tiles.
template <int Dh>
constexpr bool wide = Dh > 32;

/// dQ += scale * sum_j dS_ij k_j. Grid (query blocks, B * heads).
template <int Dh, class C, class CM, class WM, class T>
__global__ void __launch_bounds__(Rows) query_grad(C c, std::size_t heads, CM q, CM k, CM v, CM g, const T* lse,
                                                    const T* rowdot, WM dq) {
  constexpr int KT = wide<Dh> ? KTile / 2 : KTile;
  __shared__ T ks[KT][Dh], vs[KT][Dh];
  __shared__ T gt[wide<Dh> ? Dh : 1][Rows];  // wide heads: dO rows, transposed
  const std::size_t bh = blockIdx.y, b = bh / heads, h = bh % heads, d0 = h * Dh;
  const std::size_t i0 = static_cast<std::size_t>(blockIdx.x) * Rows, i = i0 + threadIdx.x;
  const bool row = i < c.Tq;
  const std::size_t end = c.kv_end(b);
  const std::size_t vis = row ? c.visible(end, i) : 0;
  const std::size_t last = c.visible(end, (i0 + Rows < c.Tq ? i0 + Rows : c.Tq) - 1);
  T qr[Dh], gr[wide<Dh> ? 1 : Dh], acc[Dh];
#pragma unroll
  for (int d = 0; d < Dh; ++d) qr[d] = row ? q(b, i, d0 + d) : T(0), acc[d] = T(0);
  if constexpr (wide<Dh>) {
    load_cols<Dh>(gt, g, b, i0, c.Tq, d0, Rows);
  } else {
#pragma unroll
    for (int d = 0; d < Dh; ++d) gr[d] = row ? g(b, i, d0 + d) : T(0);
  }
  const T lse_i = row ? lse[bh * c.Tq + i] : T(0), dot_i = row ? rowdot[bh * c.Tq + i] : T(0);
  over_keys<KT>(ks, vs, k, v, b, end, d0, last, vis, [&](int jj, std::size_t j) {
    const T P = std::exp(dot<Dh>(qr, ks[jj]) * c.scale - lse_i);
    T dp;
    if constexpr (wide<Dh>) dp = sum_of<Dh, T>([&](int d) { return gt[d][threadIdx.x] * vs[jj][d]; });
    else dp = dot<Dh>(gr, vs[jj]);
    const T dS = P * (dp * c.drop(bh, i, j) - dot_i) * c.scale;
    const T* kj = reread(ks[jj]);
#pragma unroll
    for (int d = 0; d < Dh; ++d) acc[d] += dS * kj[d];
  });
  if (!row) return;
#pragma unroll
  for (int d = 0; d < Dh; ++d) dq(b, i, d0 + d) += acc[d];
}

/// dK += scale * sum_i dS_ij q_i and dV += sum_i P~_ij dO_i (either may be absent: a null pointer). Grid
/// (key blocks, B * heads); each thread reads its value row from a transposed shared copy, and its key row
/// from registers (wide heads: from a transposed shared copy too).
template <int Dh, class C, class CM, class WM, class T>
__global__ void __launch_bounds__(Rows) key_value_grad(C c, std::size_t heads, bool causal, CM q, CM k, CM v, CM g,
                                                        const T* lse, const T* rowdot, WM dk, WM dv) {
  constexpr int QT = wide<Dh> ? QTile / 2 : QTile;
  __shared__ T qs[QT][Dh], gs[QT][Dh], vt[Dh][Rows];
  __shared__ T kt[wide<Dh> ? Dh : 1][Rows];
  __shared__ T ls[QT], ds[QT];
  const std::size_t bh = blockIdx.y, b = bh / heads, h = bh % heads, d0 = h * Dh;
  const std::size_t j0 = static_cast<std::size_t>(blockIdx.x) * Rows, j = j0 + threadIdx.x;
  const std::size_t end = c.kv_end(b);
  const bool key = j < end;  // padding keys (and rows past Tk) take no gradient
  load_cols<Dh>(vt, v, b, j0, end, d0, Rows);
  T kr[wide<Dh> ? 1 : Dh], dka[Dh], dva[Dh];
#pragma unroll
  for (int d = 0; d < Dh; ++d) dka[d] = T(0), dva[d] = T(0);
  if constexpr (wide<Dh>) {
    load_cols<Dh>(kt, k, b, j0, end, d0, Rows);
  } else {
#pragma unroll
    for (int d = 0; d < Dh; ++d) kr[d] = key ? k(b, j, d0 + d) : T(0);
  }
  const std::size_t first = causal && j0 > c.q0 ? j0 - c.q0 : 0;  // the first query that sees key j0 (q0 + i + 1 > j0)
  for (std::size_t t0 = first / QT * QT; t0 < c.Tq && j0 < end; t0 += QT) {
    __syncthreads();  // (the previous tile is read by every thread)
    load_rows<Dh>(qs, q, b, t0, c.Tq, d0, QT);
    load_rows<Dh>(gs, g, b, t0, c.Tq, d0, QT);
    for (int r = static_cast<int>(threadIdx.x); r < QT; r += static_cast<int>(blockDim.x)) {
      const std::size_t i = t0 + static_cast<std::size_t>(r);
      ls[r] = i < c.Tq ? lse[bh * c.Tq + i] : T(0);
      ds[r] = i < c.Tq ? rowdot[bh * c.Tq + i] : T(0);
    }
    __syncthreads();
    if (!key) continue;
    const int n = c.Tq - t0 < QT ? static_cast<int>(c.Tq - t0) : QT;
#pragma unroll 1
    for (int r = 0; r < n; ++r) {
      const std::size_t i = t0 + static_cast<std::size_t>(r);
      if (j >= c.visible(end, i)) continue;
      T s;
      if constexpr (wide<Dh>) s = sum_of<Dh, T>([&](int d) { return qs[r][d] * kt[d][threadIdx.x]; });
      else s = dot<Dh>(kr, qs[r]);
      const T dp = sum_of<Dh, T>([&](int d) { return gs[r][d] * vt[d][threadIdx.x]; });
      const T P = std::exp(s * c.scale - ls[r]), M = c.drop(bh, i, j);
      const T dS = P * (dp * M - ds[r]) * c.scale, pm = P * M;
      const T *qi = reread(qs[r]), *gi = reread(gs[r]);
#pragma unroll
      for (int d = 0; d < Dh; ++d) dka[d] += dS * qi[d], dva[d] += pm * gi[d];
    }
  }
  if (!key) return;
  if (dk.p)
#pragma unroll
    for (int d = 0; d < Dh; ++d) dk(b, j, d0 + d) += dka[d];
  if (dv.p)
#pragma unroll
    for (int d = 0; d < Dh; ++d) dv(b, j, d0 + d) += dva[d];
}

/// Calls f(std::integral_constant<int, Dh>) for the widths with kernels; false for others.
template <class F>
bool with_width(std::size_t dh, F&& f) {
  switch (dh) {
    case 16: f(std::integral_constant<int, 16>{}); return true;
    case 32: f(std::integral_constant<int, 32>{}); return true;
    case 64: f(std::integral_constant<int, 64>{}); return true;
    default: return false;
  }
}
inline dim3 grid(std::size_t rows, std::size_t bh) {
  return dim3(static_cast<unsigned>((rows + Rows - 1) / Rows), static_cast<unsigned>(bh));
}
}  // namespace attn

/// The attention forward on CUDA's tiled kernels: false (nothing done) where they do not apply.
template <class C, class CM, class WM, class T>
bool attention_forward(const C& c, std::size_t heads, const CM& q, const CM& k, const CM& v, const WM& out, T* lse) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (c.B * heads > 65535) return false;
    return attn::with_width(c.dh, [&](auto w) {
      attn::forward<decltype(w)::value><<<attn::grid(c.Tq, c.B * heads), attn::Rows, 0, loom::device::current_stream()>>>(
          c, heads, q, k, v, out, lse);
      launched();
    });
  }
}
/// The attention backward (after the row dots) on CUDA's tiled kernels: false where they do not apply.
template <class C, class CM, class WM, class T>
bool attention_backward(const C& c, std::size_t heads, bool causal, const CM& q, const CM& k, const CM& v, const CM& g,
                        const T* lse, const T* rowdot, const WM& dq, const WM& dk, const WM& dv) {
  if constexpr (!std::is_same_v<T, float>) {
    return false;
  } else {
    if (c.B * heads > 65535) return false;
    return attn::with_width(c.dh, [&](auto w) {
      constexpr int Dh = decltype(w)::value;
      if (dq.p) {
        attn::query_grad<Dh><<<attn::grid(c.Tq, c.B * heads), attn::Rows, 0, loom::device::current_stream()>>>(
            c, heads, q, k, v, g, lse, rowdot, dq);
        launched();
      }
      if (dk.p || dv.p) {
        attn::key_value_grad<Dh><<<attn::grid(c.Tk, c.B * heads), attn::Rows, 0, loom::device::current_stream()>>>(
            c, heads, causal, q, k, v, g, lse, rowdot, dk, dv);
        launched();
      }
    });
  }
}
#else
template <class C, class CM, class WM, class T>
bool attention_forward(const C&, std::size_t, const CM&, const CM&, const CM&, const WM&, T*) {
  return false;
}
template <class C, class CM, class WM, class T>
bool attention_backward(const C&, std::size_t, bool, const CM&, const CM&, const CM&, const CM&, const T*, const T*,
                        const WM&, const WM&, const WM&) {
  return false;
}
#endif

}  // namespace loom::backend::device
