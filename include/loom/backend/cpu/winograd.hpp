// loom/backend/cpu/winograd.hpp — 3x3, stride-1 convolution on the host by Winograd's F(2x2, 3x3):
// 16 multiplications per 2x2 outputs per channel pair where the direct kernels (plane_conv.hpp) do 36.
//
// The output is cut into 2x2 tiles, each reading a 4x4 patch d of the padded input. With the weight
// g (3x3) transformed once per call to U = G g G^T and each patch to V = B^T d B (4x4 each), a tile's
// output is A^T M A, where M = the sum over input channels of U (.) V, elementwise. So the 16 entries
// xi of the 4x4 transforms are 16 independent products M[xi] = U[xi] (O x C) . V[xi] (C x tiles), run
// by plane_conv's register-blocked kernel (one tap). The input gradient is the same computation over the
// padded output gradient with the weight reversed and its channel axes swapped; the weight gradient
// runs it backwards: dU[xi] += dM[xi] . V[xi]^T, with dM = A dY A^T per tile, summed over tiles and
// samples in vector partial sums, and dg = G^T dU G once per call.
//
// Every transform runs on vectors of tiles along a tile row. Stride-2 access (a tile starts every
// second column) is avoided by keeping the padded input (and the output, and the output gradient) as
// split planes: each row's even columns, then its odd ones. Tiles are numbered t = i * tw + j (tile
// row i, column j, tw per row) without gaps; a tile row's last vector writes past its end into the
// next row, which is written after it (its lanes past tw are junk there, never read as tiles).
#pragma once
#include <algorithm>
#include <cstddef>
#include <type_traits>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "plane_conv.hpp"

namespace loom::backend::cpu::winograd {

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"  // Eigen's packets carry vector attributes
#endif

using plane_conv::lanes;
using plane_conv::Packet;
namespace ei = Eigen::internal;

/// Calls of the Winograd path on this thread (the tests check which path ran).
struct Stats {
  std::size_t forwards = 0, backwards = 0;
};
inline Stats& stats() {
  static thread_local Stats s;
  return s;
}

/// One direction of a 3x3 stride-1 convolution: C channels of H x W, padded by P on every side, to O
/// channels of HO x WO, in th x tw tiles; and the layout of its buffers (offsets in elements, each
/// rounded to 64 bytes).
template <class T>
struct Plan {
  static constexpr std::size_t V = lanes<T>;
  std::size_t C, O, H, W, P, HO, WO, th, tw, tiles, tp, rows, pitch, opitch;
  std::size_t vs, ms;  // one xi's block of V (C x tp) and of M (O x tp), see spread()
  std::size_t split_in, v, m, split_out, size;
  Plan(std::size_t C_, std::size_t O_, std::size_t H_, std::size_t W_, std::size_t P_)
      : C(C_), O(O_), H(H_), W(W_), P(P_), HO(H_ + 2 * P_ - 2), WO(W_ + 2 * P_ - 2), th((HO + 1) / 2), tw((WO + 1) / 2),
        tiles(th * tw), tp(up(tiles) + V), rows(2 * th + 2), pitch(tw + 1), opitch(up(tw)), vs(spread(C * tp)),
        ms(spread(O * tp)) {
    split_in = 0;
    v = split_in + align(C * rows * 2 * pitch + 2 * V);  // (a row's vectors read up to V past its end)
    m = v + 16 * vs;
    split_out = m + 16 * ms;
    size = split_out + align(O * 2 * th * 2 * opitch);
  }
  static std::size_t up(std::size_t n) { return (n + V - 1) / V * V; }
  static std::size_t align(std::size_t n) {
    constexpr std::size_t A = std::max<std::size_t>(1, 64 / sizeof(T));
    return (n + A - 1) / A * A;
  }
  /// n elements rounded up to an odd number of 64-byte lines: the 16 blocks of a transform, written (or
  /// read) side by side, then fall into 16 different sets of a 4 KiB-aliased L1 cache. (With blocks a
  /// multiple of 4 KiB apart — 32 x 224 floats is 7 x 4 KiB — the transforms' 16 stores per tile
  /// evicted one another and took three times as long.)
  static std::size_t spread(std::size_t n) {
    constexpr std::size_t L = std::max<std::size_t>(1, 64 / sizeof(T));
    const std::size_t lines = (n + L - 1) / L;
    return (lines | 1) * L;
  }
  /// Tiles rounded up to whole vectors: the products' extent.
  std::size_t tiles_v() const { return up(tiles); }
};

/// U[xi * O * C + o * C + c] = (G g G^T)[xi] for the weight g(o, c) = w[o * wo + c * wc + k * wt], k = ki * 3 + kj.
template <class T>
void transform_weights(std::size_t O, std::size_t C, const T* w, std::ptrdiff_t wo, std::ptrdiff_t wc, std::ptrdiff_t wt, T* U) {
  const T h = T(0.5);
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t c = 0; c < C; ++c) {
      const T* g = w + static_cast<std::ptrdiff_t>(o) * wo + static_cast<std::ptrdiff_t>(c) * wc;
      auto at = [&](std::size_t r, std::size_t s) { return g[static_cast<std::ptrdiff_t>(r * 3 + s) * wt]; };
      T gg[4][3];  // G g
      for (std::size_t s = 0; s < 3; ++s) {
        gg[0][s] = at(0, s);
        gg[1][s] = h * (at(0, s) + at(1, s) + at(2, s));
        gg[2][s] = h * (at(0, s) - at(1, s) + at(2, s));
        gg[3][s] = at(2, s);
      }
      for (std::size_t a = 0; a < 4; ++a) {  // (G g) G^T
        const T u[4] = {gg[a][0], h * (gg[a][0] + gg[a][1] + gg[a][2]), h * (gg[a][0] - gg[a][1] + gg[a][2]), gg[a][2]};
        for (std::size_t b = 0; b < 4; ++b) U[((a * 4 + b) * O + o) * C + c] = u[b];
      }
    }
}

/// dw(o, c) += (G^T dU G) for the 16 x O x C sums dU (as U's layout); dw(o, c, k) at w[o * wo + c * wc + k * wt].
template <class T>
void add_weight_grad(std::size_t O, std::size_t C, const T* dU, T* dw, std::ptrdiff_t wo, std::ptrdiff_t wc, std::ptrdiff_t wt) {
  const T h = T(0.5);
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t c = 0; c < C; ++c) {
      auto at = [&](std::size_t a, std::size_t b) { return dU[((a * 4 + b) * O + o) * C + c]; };
      T r[4][3];  // dU G
      for (std::size_t a = 0; a < 4; ++a) {
        r[a][0] = at(a, 0) + h * (at(a, 1) + at(a, 2));
        r[a][1] = h * (at(a, 1) - at(a, 2));
        r[a][2] = h * (at(a, 1) + at(a, 2)) + at(a, 3);
      }
      T* g = dw + static_cast<std::ptrdiff_t>(o) * wo + static_cast<std::ptrdiff_t>(c) * wc;
      for (std::size_t s = 0; s < 3; ++s) {  // G^T (dU G)
        g[static_cast<std::ptrdiff_t>(0 * 3 + s) * wt] += r[0][s] + h * (r[1][s] + r[2][s]);
        g[static_cast<std::ptrdiff_t>(1 * 3 + s) * wt] += h * (r[1][s] - r[2][s]);
        g[static_cast<std::ptrdiff_t>(2 * 3 + s) * wt] += h * (r[1][s] + r[2][s]) + r[3][s];
      }
    }
}

#if defined(__AVX512F__)
/// The low n bits (n <= 16).
inline __mmask16 low_bits(std::size_t n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }
#endif

/// The first n (<= 2V, V = lanes<T>) elements of s split: even[k] = s[2k], odd[k] = s[2k + 1]. Returns
/// false where there is no vector code for it (the caller loops over elements).
template <class T>
bool deinterleave(const T* s, std::size_t n, T* even, T* odd) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && lanes<T> == 16) {
    const __m512 a = _mm512_maskz_loadu_ps(low_bits(n), s), b = _mm512_maskz_loadu_ps(low_bits(n > 16 ? n - 16 : 0), s + 16);
    _mm512_mask_storeu_ps(even, low_bits((n + 1) / 2),
                          _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b));
    _mm512_mask_storeu_ps(odd, low_bits(n / 2),
                          _mm512_permutex2var_ps(a, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), b));
    return true;
  } else if constexpr (std::is_same_v<T, double> && lanes<T> == 8) {
    const auto m8 = [](std::size_t k) { return static_cast<__mmask8>(low_bits(k)); };
    const __m512d a = _mm512_maskz_loadu_pd(m8(n), s), b = _mm512_maskz_loadu_pd(m8(n > 8 ? n - 8 : 0), s + 8);
    _mm512_mask_storeu_pd(even, m8((n + 1) / 2), _mm512_permutex2var_pd(a, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), b));
    _mm512_mask_storeu_pd(odd, m8(n / 2), _mm512_permutex2var_pd(a, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), b));
    return true;
  }
#endif
  (void)s, (void)n, (void)even, (void)odd;
  return false;
}
/// Whether interleave_store has vector code for T (AVX-512 and Eigen's 512-bit packets).
template <class T>
inline constexpr bool vector_interleave =
#if defined(__AVX512F__)
    (std::is_same_v<T, float> && lanes<T> == 16) || (std::is_same_v<T, double> && lanes<T> == 8);
#else
    false;
#endif
/// The inverse for n (<= 2V) elements: d[2k] = e[k], d[2k + 1] = o[k], or added to d (Add). Only where
/// vector_interleave<T>.
template <bool Add, class T>
void interleave_store(const Packet<T>& e, const Packet<T>& o, std::size_t n, T* d) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && lanes<T> == 16) {
    const __mmask16 ml = low_bits(n), mh = low_bits(n > 16 ? n - 16 : 0);
    __m512 lo = _mm512_permutex2var_ps(e, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), o);
    __m512 hi = _mm512_permutex2var_ps(e, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), o);
    if constexpr (Add) lo = _mm512_add_ps(lo, _mm512_maskz_loadu_ps(ml, d)), hi = _mm512_add_ps(hi, _mm512_maskz_loadu_ps(mh, d + 16));
    _mm512_mask_storeu_ps(d, ml, lo);
    _mm512_mask_storeu_ps(d + 16, mh, hi);
  } else if constexpr (std::is_same_v<T, double> && lanes<T> == 8) {
    const auto m8 = [](std::size_t k) { return static_cast<__mmask8>(low_bits(k)); };
    const __mmask8 ml = m8(n), mh = m8(n > 8 ? n - 8 : 0);
    __m512d lo = _mm512_permutex2var_pd(e, _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), o);
    __m512d hi = _mm512_permutex2var_pd(e, _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), o);
    if constexpr (Add) lo = _mm512_add_pd(lo, _mm512_maskz_loadu_pd(ml, d)), hi = _mm512_add_pd(hi, _mm512_maskz_loadu_pd(mh, d + 8));
    _mm512_mask_storeu_pd(d, ml, lo);
    _mm512_mask_storeu_pd(d + 8, mh, hi);
  }
#else
  static_assert(vector_interleave<T>, "no vector interleave here");
#endif
}

/// Copies a source of C x H x W (element (c, h, w) at src[c * sc + h * sh + w * sw]) into split planes
/// of `rows` rows at `pitch` (a row's even columns, then its odd ones, column x of the padded plane at
/// half x % 2, index x / 2), offset by (top, left); writes nothing else (the caller zeroes the buffer once).
template <class T>
void split(const T* src, std::ptrdiff_t sc, std::ptrdiff_t sh, std::ptrdiff_t sw, std::size_t C, std::size_t H, std::size_t W,
           T* dst, std::size_t rows, std::size_t pitch, std::size_t top, std::size_t left) {
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t y = 0; y < H; ++y) {
      const T* s = src + static_cast<std::ptrdiff_t>(c) * sc + static_cast<std::ptrdiff_t>(y) * sh;
      T* d = dst + (c * rows + y + top) * 2 * pitch;
      T* half[2] = {d + left / 2, d + pitch + left / 2};
      const std::size_t first = left % 2;  // the half column 0 of the source goes to
      T* even = half[first];               // source columns 0, 2, 4, ...
      T* odd = half[1 - first] + first;    // source columns 1, 3, ... (one further along when left is odd)
      if (sw == 1) {
        std::size_t x = 0;
        for (; x < W && deinterleave(s + x, std::min(W - x, 2 * lanes<T>), even + x / 2, odd + x / 2); x += 2 * lanes<T>) {}
        if (x >= W) continue;
        for (; x + 1 < W; x += 2) even[x / 2] = s[x], odd[x / 2] = s[x + 1];
        if (W % 2) even[W / 2] = s[W - 1];
      } else {
        for (std::size_t x = 0; x < W; ++x) (x % 2 ? odd : even)[x / 2] = s[static_cast<std::ptrdiff_t>(x) * sw];
      }
    }
}

/// V[xi][c][t] = (B^T d B)[xi] for every tile t and input channel c, from the split padded input.
template <class T>
void transform_input(const Plan<T>& p, const T* si, T* Vb) {
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  const std::size_t cs = p.vs;  // one xi's block
  for (std::size_t c = 0; c < p.C; ++c)
    for (std::size_t i = 0; i < p.th; ++i)
      for (std::size_t j = 0; j < p.tw; j += V) {
        Pk r[4][4];  // d B for the patch's rows 2i .. 2i + 3
        for (std::size_t k = 0; k < 4; ++k) {
          const T* e = si + (c * p.rows + 2 * i + k) * 2 * p.pitch + j;
          const T* o = e + p.pitch;
          const Pk e0 = ei::ploadu<Pk>(e), e1 = ei::ploadu<Pk>(e + 1), o0 = ei::ploadu<Pk>(o), o1 = ei::ploadu<Pk>(o + 1);
          r[k][0] = ei::psub(e0, e1);
          r[k][1] = ei::padd(o0, e1);
          r[k][2] = ei::psub(e1, o0);
          r[k][3] = ei::psub(o0, o1);
        }
        T* out = Vb + c * p.tp + i * p.tw + j;
        for (std::size_t b = 0; b < 4; ++b) {  // B^T (d B)
          ei::pstoreu(out + (0 * 4 + b) * cs, ei::psub(r[0][b], r[2][b]));
          ei::pstoreu(out + (1 * 4 + b) * cs, ei::padd(r[1][b], r[2][b]));
          ei::pstoreu(out + (2 * 4 + b) * cs, ei::psub(r[2][b], r[1][b]));
          ei::pstoreu(out + (3 * 4 + b) * cs, ei::psub(r[1][b], r[3][b]));
        }
      }
}

/// M[xi] (O x tiles) = U[xi] (O x C) . V[xi] (C x tiles) for the 16 xi: plane_conv's register-blocked
/// kernel with one tap (channels tp apart, the weight U[xi][o][c]).
template <class T>
void products(const Plan<T>& p, const T* U, const T* Vb, T* M) {
  constexpr std::size_t V = lanes<T>, CB = plane_conv::channel_block, SB = plane_conv::vector_block;
  const std::ptrdiff_t tap[1] = {0};
  const std::size_t n = p.tiles_v();
  const auto C = static_cast<std::ptrdiff_t>(p.C);
  for (std::size_t xi = 0; xi < 16; ++xi) {
    const T* u = U + xi * p.O * p.C;
    const T* in = Vb + xi * p.vs;
    T* out = M + xi * p.ms;
    auto blocks = [&]<std::size_t sb>(std::size_t t) {
      std::size_t o = 0;
      for (; o + CB <= p.O; o += CB)
        plane_conv::correlate_block<CB, sb>(in + t, p.tp, p.C, tap, 1, u + o * p.C, C, 1, 0, out + o * p.tp + t, p.tp);
      for (; o < p.O; ++o)
        plane_conv::correlate_block<1, sb>(in + t, p.tp, p.C, tap, 1, u + o * p.C, C, 1, 0, out + o * p.tp + t, p.tp);
    };
    std::size_t t = 0;
    for (; t + SB * V <= n; t += SB * V) blocks.template operator()<SB>(t);
    for (; t < n; t += V) blocks.template operator()<1>(t);
  }
}

/// A^T M A for every tile: out(o, y, j, even, odd) receives output row y's even and odd columns of
/// tiles j .. j + V of output channel o (rows y = 2i and 2i + 1 of tile row i; lanes past tw are junk).
template <class T, class Out>
void transform_output(const Plan<T>& p, const T* M, Out&& out) {
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  const std::size_t os = p.ms;
  for (std::size_t o = 0; o < p.O; ++o)
    for (std::size_t i = 0; i < p.th; ++i)
      for (std::size_t j = 0; j < p.tw; j += V) {
        const T* m = M + o * p.tp + i * p.tw + j;
        Pk s0[4], s1[4];  // M A, row by row
        for (std::size_t a = 0; a < 4; ++a) {
          const Pk m0 = ei::ploadu<Pk>(m + (a * 4 + 0) * os), m1 = ei::ploadu<Pk>(m + (a * 4 + 1) * os);
          const Pk m2 = ei::ploadu<Pk>(m + (a * 4 + 2) * os), m3 = ei::ploadu<Pk>(m + (a * 4 + 3) * os);
          s0[a] = ei::padd(ei::padd(m0, m1), m2);
          s1[a] = ei::psub(ei::psub(m1, m2), m3);
        }
        out(o, 2 * i, j, ei::padd(ei::padd(s0[0], s0[1]), s0[2]), ei::padd(ei::padd(s1[0], s1[1]), s1[2]));
        out(o, 2 * i + 1, j, ei::psub(ei::psub(s0[1], s0[2]), s0[3]), ei::psub(ei::psub(s1[1], s1[2]), s1[3]));
      }
}

/// Writes (or adds, Add) the split output's HO x WO into dst (element (o, h, w) at dst[o * so + h * sh + w * sw]).
template <bool Add, class T>
void merge(const Plan<T>& p, const T* sp, T* dst, std::ptrdiff_t so, std::ptrdiff_t sh, std::ptrdiff_t sw) {
  for (std::size_t o = 0; o < p.O; ++o)
    for (std::size_t y = 0; y < p.HO; ++y) {
      const T* even = sp + (o * 2 * p.th + y) * 2 * p.opitch;
      const T* odd = even + p.opitch;
      T* d = dst + static_cast<std::ptrdiff_t>(o) * so + static_cast<std::ptrdiff_t>(y) * sh;
      auto put = [&](std::size_t x, T v) {
        T& r = d[static_cast<std::ptrdiff_t>(x) * sw];
        if constexpr (Add) r += v;
        else r = v;
      };
      for (std::size_t x = 0; x + 1 < p.WO; x += 2) put(x, even[x / 2]), put(x + 1, odd[x / 2]);
      if (p.WO % 2) put(p.WO - 1, even[p.WO / 2]);
    }
}

/// One sample: dst (O x HO x WO, added into where Add) = the convolution of src (C x H x W) with the
/// transformed weight U. buf: p.size elements, whose split input part was zeroed before the first
/// sample (split() writes only the interior, so the padding stays zero). Rows of dst with unit stride
/// take the output transform's rows straight, interleaved in registers; others go through the split
/// output buffer.
template <bool Add, class T>
void convolve(const Plan<T>& p, const T* U, const T* src, std::ptrdiff_t sc, std::ptrdiff_t sh, std::ptrdiff_t sw, T* dst,
              std::ptrdiff_t dc, std::ptrdiff_t dh, std::ptrdiff_t dw, T* buf) {
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  split(src, sc, sh, sw, p.C, p.H, p.W, buf + p.split_in, p.rows, p.pitch, p.P, p.P);
  transform_input(p, buf + p.split_in, buf + p.v);
  products(p, U, buf + p.v, buf + p.m);
  if constexpr (vector_interleave<T>) {
    if (dw == 1) {
      transform_output(p, buf + p.m, [&](std::size_t o, std::size_t y, std::size_t j, const Pk& e, const Pk& od) {
        if (y < p.HO)
          interleave_store<Add>(e, od, std::min(p.WO - 2 * j, 2 * V),
                                dst + static_cast<std::ptrdiff_t>(o) * dc + static_cast<std::ptrdiff_t>(y) * dh + static_cast<std::ptrdiff_t>(2 * j));
      });
      return;
    }
  }
  T* so = buf + p.split_out;
  transform_output(p, buf + p.m, [&](std::size_t o, std::size_t y, std::size_t j, const Pk& e, const Pk& od) {
    T* row = so + (o * 2 * p.th + y) * 2 * p.opitch + j;
    ei::pstoreu(row, e);
    ei::pstoreu(row + p.opitch, od);
  });
  merge<Add>(p, so, dst, dc, dh, dw);
}

/// The weight gradient's buffers beyond a forward plan's: the split output gradient (as the split
/// output) and the vector partial sums of dU (16 x O x C vectors).
template <class T>
struct GradPlan {
  std::size_t sg, dm, acc, size;
  explicit GradPlan(const Plan<T>& p) {
    sg = p.size;
    dm = sg + Plan<T>::align(p.O * 2 * p.th * 2 * p.opitch);
    acc = dm + 16 * p.ms;
    size = acc + 16 * p.O * p.C * lanes<T>;
  }
};

/// dM[xi][o][t] = (A dy A^T)[xi] for the 2x2 output gradient dy of every tile (zero past HO x WO).
template <class T>
void transform_grad(const Plan<T>& p, const T* sg, T* dM) {
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  const std::size_t os = p.ms;
  for (std::size_t o = 0; o < p.O; ++o)
    for (std::size_t i = 0; i < p.th; ++i)
      for (std::size_t j = 0; j < p.tw; j += V) {
        const T* row0 = sg + (o * 2 * p.th + 2 * i) * 2 * p.opitch + j;
        const T* row1 = row0 + 2 * p.opitch;
        Pk z[2][4];  // dy A^T
        for (std::size_t r = 0; r < 2; ++r) {
          const T* e = r ? row1 : row0;
          const Pk a = ei::ploadu<Pk>(e), b = ei::ploadu<Pk>(e + p.opitch);
          z[r][0] = a;
          z[r][1] = ei::padd(a, b);
          z[r][2] = ei::psub(a, b);
          z[r][3] = ei::pnegate(b);
        }
        T* out = dM + o * p.tp + i * p.tw + j;
        for (std::size_t b = 0; b < 4; ++b) {  // A (dy A^T)
          ei::pstoreu(out + (0 * 4 + b) * os, z[0][b]);
          ei::pstoreu(out + (1 * 4 + b) * os, ei::padd(z[0][b], z[1][b]));
          ei::pstoreu(out + (2 * 4 + b) * os, ei::psub(z[0][b], z[1][b]));
          ei::pstoreu(out + (3 * 4 + b) * os, ei::pnegate(z[1][b]));
        }
      }
}

/// acc[xi][o][c] (a vector each) += the lane-wise sums over tile vectors of dM[xi][o][t] * V[xi][c][t],
/// for CB output channels and CC input channels.
template <std::size_t CB, std::size_t CC, class T>
void dot_block(const T* dm, const T* v, std::size_t tp, std::size_t n, T* acc, std::size_t C) {
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  Pk a[CB][CC];
  for (std::size_t o = 0; o < CB; ++o)
    for (std::size_t c = 0; c < CC; ++c) a[o][c] = ei::ploadu<Pk>(acc + (o * C + c) * V);
  for (std::size_t t = 0; t < n; t += V) {
    Pk x[CC];
    for (std::size_t c = 0; c < CC; ++c) x[c] = ei::ploadu<Pk>(v + c * tp + t);
    for (std::size_t o = 0; o < CB; ++o) {
      const Pk g = ei::ploadu<Pk>(dm + o * tp + t);
      for (std::size_t c = 0; c < CC; ++c) a[o][c] = ei::pmadd(g, x[c], a[o][c]);
    }
  }
  for (std::size_t o = 0; o < CB; ++o)
    for (std::size_t c = 0; c < CC; ++c) ei::pstoreu(acc + (o * C + c) * V, a[o][c]);
}

/// One sample's weight gradient, into the vector partial sums (g: the output gradient, O x HO x WO at
/// strides go, gh, gw; src: the input, as for convolve). The split input and split output gradient
/// parts of buf and its partial sums were zeroed before the first sample; the tiles past `tiles` of dM
/// stay zero (transform_grad writes them from the gradient's zero padding, or not at all).
template <class T>
void accumulate_weight_grad(const Plan<T>& p, const GradPlan<T>& q, const T* src, std::ptrdiff_t sc, std::ptrdiff_t sh,
                            std::ptrdiff_t sw, const T* g, std::ptrdiff_t go, std::ptrdiff_t gh, std::ptrdiff_t gw, T* buf) {
  constexpr std::size_t V = lanes<T>, CB = plane_conv::channel_block, CC = 3;
  split(src, sc, sh, sw, p.C, p.H, p.W, buf + p.split_in, p.rows, p.pitch, p.P, p.P);
  transform_input(p, buf + p.split_in, buf + p.v);
  split(g, go, gh, gw, p.O, p.HO, p.WO, buf + q.sg, 2 * p.th, p.opitch, 0, 0);
  transform_grad(p, buf + q.sg, buf + q.dm);
  const std::size_t n = p.tiles_v();
  for (std::size_t xi = 0; xi < 16; ++xi) {
    const T* dm = buf + q.dm + xi * p.ms;
    const T* v = buf + p.v + xi * p.vs;
    T* acc = buf + q.acc + xi * p.O * p.C * V;
    auto over_c = [&]<std::size_t cb>(std::size_t o) {
      std::size_t c = 0;
      for (; c + CC <= p.C; c += CC) dot_block<cb, CC>(dm + o * p.tp, v + c * p.tp, p.tp, n, acc + (o * p.C + c) * V, p.C);
      for (; c < p.C; ++c) dot_block<cb, 1>(dm + o * p.tp, v + c * p.tp, p.tp, n, acc + (o * p.C + c) * V, p.C);
    };
    std::size_t o = 0;
    for (; o + CB <= p.O; o += CB) over_c.template operator()<CB>(o);
    for (; o < p.O; ++o) over_c.template operator()<1>(o);
  }
}

/// dw += the weight gradient of the partial sums accumulated so far (their lanes added, then G^T dU G);
/// dU: 16 x O x C elements of scratch.
template <class T>
void finish_weight_grad(const Plan<T>& p, const GradPlan<T>& q, const T* buf, T* dU, T* dw, std::ptrdiff_t wo, std::ptrdiff_t wc,
                        std::ptrdiff_t wt) {
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  for (std::size_t k = 0; k < 16 * p.O * p.C; ++k) dU[k] = ei::predux(ei::ploadu<Pk>(buf + q.acc + k * V));
  add_weight_grad(p.O, p.C, dU, dw, wo, wc, wt);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace loom::backend::cpu::winograd
