// loom/backend/cpu/winograd.hpp — 3x3, stride-1 convolution on the host by Winograd's minimal
// filtering F(MxM, 3x3), M = 2 or 4: per M x M outputs and channel pair, (M + 2)^2 multiplications
// (16 for 4 outputs, 36 for 16) where the direct kernels (plane_conv.hpp) do 9 per output.
//
// The output is cut into M x M tiles, each reading an a x a patch d (a = M + 2) of the padded input.
// With the weight g (3x3) transformed once per call to U = G g G^T and each patch to V = B^T d B (a x a
// each), a tile's output is A^T M A, where M = the sum over input channels of U (.) V, elementwise. So
// the a^2 entries xi of the transforms are independent products M[xi] = U[xi] (O x C) . V[xi] (C x
// tiles), run by plane_conv's register-blocked kernel (one tap). The input gradient is the same over the
// padded output gradient with the weight reversed and its channel axes swapped; the weight gradient runs
// it backwards: dU[xi] += dM[xi] . V[xi]^T with dM = A dY A^T per tile, summed over tiles and samples in
// vector partial sums, and dg = G^T dU G once per call. The matrices are Lavin & Gray's; every
// transform is "apply a small constant matrix along rows, then along columns" (transform2d), its zero
// coefficients skipped and its +-1 ones added, at compile time.
//
// Every transform runs on vectors of tiles along a tile row. Strided access (a tile starts every M-th
// column) is avoided by keeping the padded input (and the output, and the output gradient) as split
// planes: each row's columns x = 0, M, 2M, ..., then x = 1, M + 1, ..., (M phases). Tiles are numbered
// t = i * tw + j (tile row i, column j, tw per row) without gaps; a tile row's last vector writes past
// its end into the next row, which is written after it (lanes past tw are junk, never read as tiles).
#pragma once
#include <algorithm>
#include <cstddef>
#include <type_traits>
#include <utility>

#include "plane_conv.hpp"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace loom::backend::cpu::winograd {

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"  // Eigen's packets carry vector attributes
#endif

using plane_conv::lanes;
using plane_conv::Packet;
namespace ei = Eigen::internal;

/// Calls of the Winograd path on this thread, by tile size (the tests check which path ran).
struct Stats {
  std::size_t forwards = 0, backwards = 0, f4 = 0;
};
inline Stats& stats() {
  static thread_local Stats s;
  return s;
}

// ---- the transforms' matrices and their application -------------------------------------------------

/// B^T (a x a), G (a x 3) and A^T (M x a) of F(MxM, 3x3).
template <std::size_t M>
struct Tables;
template <>
struct Tables<2> {
  static constexpr double bt[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr double g[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static constexpr double at[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};
template <>
struct Tables<4> {
  static constexpr double bt[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                      {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr double g[6][3] = {{1.0 / 4, 0, 0},           {-1.0 / 6, -1.0 / 6, -1.0 / 6}, {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6}, {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
  static constexpr double at[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

/// A constant R x C matrix: Which selects B^T (0), G (1) or A^T (2) of F(MxM, 3x3), Tr its transpose.
template <std::size_t M, int Which, bool Tr>
struct Mat {
  static constexpr std::size_t a = M + 2;
  static constexpr std::size_t src_rows = Which == 2 ? M : a, src_cols = Which == 1 ? 3 : a;
  static constexpr std::size_t rows = Tr ? src_cols : src_rows, cols = Tr ? src_rows : src_cols;
  static constexpr double at(std::size_t i, std::size_t j) {
    const std::size_t r = Tr ? j : i, c = Tr ? i : j;
    if constexpr (Which == 0) return Tables<M>::bt[r][c];
    else if constexpr (Which == 1) return Tables<M>::g[r][c];
    else return Tables<M>::at[r][c];
  }
  static constexpr std::size_t first_nonzero(std::size_t i) {
    for (std::size_t j = 0; j < cols; ++j)
      if (at(i, j) != 0) return j;
    return cols;
  }
};

/// acc + c x (c == 0: acc; +-1: an add or a subtraction), for a packet or a scalar X.
template <double C, class X>
EIGEN_ALWAYS_INLINE X accumulate(const X& acc, const X& x) {
  using S = typename ei::unpacket_traits<X>::type;
  if constexpr (C == 0) return acc;
  else if constexpr (C == 1) return ei::padd(acc, x);
  else if constexpr (C == -1) return ei::psub(acc, x);
  else return ei::pmadd(ei::pset1<X>(static_cast<S>(C)), x, acc);
}
template <double C, class X>
EIGEN_ALWAYS_INLINE X scaled(const X& x) {
  using S = typename ei::unpacket_traits<X>::type;
  if constexpr (C == 1) return x;
  else if constexpr (C == -1) return ei::pnegate(x);
  else return ei::pmul(ei::pset1<X>(static_cast<S>(C)), x);
}
/// Row I of Mat times in (Mat::cols values).
template <class Mat, std::size_t I, class X>
EIGEN_ALWAYS_INLINE X dot_row(const X* in) {
  constexpr std::size_t f = Mat::first_nonzero(I);
  static_assert(f < Mat::cols, "a zero row");
  X acc = scaled<Mat::at(I, f)>(in[f]);
  [&]<std::size_t... J>(std::index_sequence<J...>) {
    ((acc = accumulate<(J > f ? Mat::at(I, J) : 0.0)>(acc, in[J])), ...);
  }(std::make_index_sequence<Mat::cols>{});
  return acc;
}
/// out = Mat . in (vectors of Mat::cols and Mat::rows values).
template <class Mat, class X>
EIGEN_ALWAYS_INLINE void apply(const X* in, X* out) {
  [&]<std::size_t... I>(std::index_sequence<I...>) { ((out[I] = dot_row<Mat, I>(in)), ...); }(std::make_index_sequence<Mat::rows>{});
}
/// out = L . in . R^T: R applied along every row of in, then L along every column.
template <class L, class R, class X>
EIGEN_ALWAYS_INLINE void transform2d(const X (&in)[L::cols][R::cols], X (&out)[L::rows][R::rows]) {
  X t[L::cols][R::rows];
  for (std::size_t k = 0; k < L::cols; ++k) apply<R>(in[k], t[k]);
  for (std::size_t b = 0; b < R::rows; ++b) {
    X col[L::cols], r[L::rows];
    for (std::size_t k = 0; k < L::cols; ++k) col[k] = t[k][b];
    apply<L>(col, r);
    for (std::size_t a = 0; a < L::rows; ++a) out[a][b] = r[a];
  }
}

// ---- plans and buffers -------------------------------------------------------------------------------

/// One direction of a 3x3 stride-1 convolution by F(MxM, 3x3): C channels of H x W, padded by P on every
/// side, to O channels of HO x WO, in th x tw tiles; and the layout of its buffers (offsets in elements,
/// each rounded to 64 bytes).
template <class T, std::size_t M>
struct Plan {
  static constexpr std::size_t V = lanes<T>, a = M + 2, XI = a * a;
  std::size_t C, O, H, W, P, HO, WO, th, tw, tiles, batch, tp, rows, pitch, opitch;
  std::size_t vs, ms;  // one xi's block of V (C x tp) and of M (O x tp), see spread()
  std::size_t split_in, v, m, split_out, size;
  /// batch: samples whose tiles the buffers hold side by side (the weight gradient's: sample k's tiles
  /// at k * tiles_v() of each row, so that its dot products run over all of them at once).
  Plan(std::size_t C_, std::size_t O_, std::size_t H_, std::size_t W_, std::size_t P_, std::size_t batch_ = 1)
      : C(C_), O(O_), H(H_), W(W_), P(P_), HO(H_ + 2 * P_ - 2), WO(W_ + 2 * P_ - 2), th((HO + M - 1) / M), tw((WO + M - 1) / M),
        tiles(th * tw), batch(batch_), tp(batch_ * up(tiles) + V), rows(M * th + 2), pitch(tw + 1), opitch(up(tw)),
        vs(spread(C * tp)), ms(spread(O * tp)) {
    split_in = 0;
    v = split_in + align(C * rows * M * pitch + M * pitch + 2 * V);  // (a row's vectors read past its end)
    m = v + XI * vs;
    split_out = m + XI * ms;
    size = split_out + align(O * M * th * M * opitch);
  }
  static std::size_t up(std::size_t n) { return (n + V - 1) / V * V; }
  static std::size_t align(std::size_t n) {
    constexpr std::size_t A = std::max<std::size_t>(1, 64 / sizeof(T));
    return (n + A - 1) / A * A;
  }
  /// n elements rounded up to an odd number of 64-byte lines: the a^2 blocks of a transform, written (or
  /// read) side by side, then fall into different sets of a 4 KiB-aliased L1 cache. (With blocks a
  /// multiple of 4 KiB apart — 32 x 224 floats is 7 x 4 KiB — the transforms' stores per tile evicted
  /// one another and took three times as long.)
  static std::size_t spread(std::size_t n) {
    constexpr std::size_t L = std::max<std::size_t>(1, 64 / sizeof(T));
    const std::size_t lines = (n + L - 1) / L;
    return (lines | 1) * L;
  }
  /// Tiles rounded up to whole vectors: the products' extent.
  std::size_t tiles_v() const { return up(tiles); }
};

// ---- splitting rows into phases and merging them back ------------------------------------------------

#if defined(__AVX512F__)
/// The low n bits (n <= 16).
inline __mmask16 low_bits(std::size_t n) { return static_cast<__mmask16>(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }
#endif

/// Whether split_chunk / zip have vector code for T (AVX-512 and Eigen's 512-bit packets).
template <class T>
inline constexpr bool vector_phases =
#if defined(__AVX512F__)
    (std::is_same_v<T, float> && lanes<T> == 16) || (std::is_same_v<T, double> && lanes<T> == 8);
#else
    false;
#endif

/// Source elements x0 + [0, n) (n <= M V) of a row into the split row d (M phases at pitch): element x
/// to phase (x + left) % M, index (x + left) / M. Loads M vectors (masked to n), sorts them into the M
/// residues of x mod M with permutes (two levels for M = 4), stores each residue where it goes. Only
/// where vector_phases<T>.
template <std::size_t M, class T>
void split_chunk(const T* s, std::size_t x0, std::size_t n, T* d, std::size_t pitch, std::size_t left) {
#if defined(__AVX512F__)
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  auto mask = [](std::size_t k) {
    if constexpr (std::is_same_v<T, float>) return low_bits(k);
    else return static_cast<__mmask8>(low_bits(k));
  };
  auto load = [&](std::size_t at) {
    const std::size_t k = n > at ? std::min(n - at, V) : 0;
    if constexpr (std::is_same_v<T, float>) return _mm512_maskz_loadu_ps(mask(k), s + x0 + at);
    else return _mm512_maskz_loadu_pd(mask(k), s + x0 + at);
  };
  auto evens = [](const Pk& a, const Pk& b) {  // a[0], a[2], ..., b[0], b[2], ...
    if constexpr (std::is_same_v<T, float>)
      return _mm512_permutex2var_ps(a, _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30), b);
    else return _mm512_permutex2var_pd(a, _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), b);
  };
  auto odds = [](const Pk& a, const Pk& b) {
    if constexpr (std::is_same_v<T, float>)
      return _mm512_permutex2var_ps(a, _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31), b);
    else return _mm512_permutex2var_pd(a, _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15), b);
  };
  Pk r[M];  // r[q]: the elements x = x0 + M k + q
  if constexpr (M == 2) {
    const Pk a = load(0), b = load(V);
    r[0] = evens(a, b), r[1] = odds(a, b);
  } else {
    const Pk a = load(0), b = load(V), c = load(2 * V), e = load(3 * V);
    const Pk e1 = evens(a, b), o1 = odds(a, b), e2 = evens(c, e), o2 = odds(c, e);
    r[0] = evens(e1, e2), r[2] = odds(e1, e2), r[1] = evens(o1, o2), r[3] = odds(o1, o2);
  }
  for (std::size_t q = 0; q < M; ++q) {
    const std::size_t k = n > q ? (n - q + M - 1) / M : 0;  // elements of residue q in the chunk
    T* at = d + ((q + left) % M) * pitch + (x0 + q + left) / M;
    if constexpr (std::is_same_v<T, float>) _mm512_mask_storeu_ps(at, mask(k), r[q]);
    else _mm512_mask_storeu_pd(at, mask(k), r[q]);
  }
#else
  (void)s, (void)x0, (void)n, (void)d, (void)pitch, (void)left;
  static_assert(vector_phases<T>, "no vector code here");
#endif
}

/// e and o zipped: lo = e[0], o[0], e[1], o[1], ... (the first V), hi the next V. Only where vector_phases<T>.
template <class T>
void zip(const Packet<T>& e, const Packet<T>& o, Packet<T>& lo, Packet<T>& hi) {
#if defined(__AVX512F__)
  if constexpr (std::is_same_v<T, float> && lanes<T> == 16) {
    lo = _mm512_permutex2var_ps(e, _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23), o);
    hi = _mm512_permutex2var_ps(e, _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31), o);
  } else if constexpr (std::is_same_v<T, double> && lanes<T> == 8) {
    lo = _mm512_permutex2var_pd(e, _mm512_setr_epi64(0, 8, 1, 9, 2, 10, 3, 11), o);
    hi = _mm512_permutex2var_pd(e, _mm512_setr_epi64(4, 12, 5, 13, 6, 14, 7, 15), o);
  }
#else
  static_assert(vector_phases<T>, "no vector code here");
#endif
}
/// d[0, n) = (or += with Add) the vectors r[0..k) one after another, n <= k V (masked where short).
template <bool Add, class T, std::size_t K>
void store_n(const Packet<T> (&r)[K], std::size_t n, T* d) {
#if defined(__AVX512F__)
  for (std::size_t k = 0; k < K && k * lanes<T> < n; ++k) {
    const std::size_t left = n - k * lanes<T>;
    T* at = d + k * lanes<T>;
    if constexpr (std::is_same_v<T, float>) {
      const __mmask16 mk = low_bits(left);
      __m512 v = r[k];
      if constexpr (Add) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, at));
      _mm512_mask_storeu_ps(at, mk, v);
    } else {
      const auto mk = static_cast<__mmask8>(low_bits(left));
      __m512d v = r[k];
      if constexpr (Add) v = _mm512_add_pd(v, _mm512_maskz_loadu_pd(mk, at));
      _mm512_mask_storeu_pd(at, mk, v);
    }
  }
#else
  static_assert(vector_phases<T>, "no vector code here");
#endif
}
/// The M phases y[q] (element j of phase q is output column M j + q) of a row written (or added) as
/// n <= M V consecutive elements of d.
template <bool Add, class T, std::size_t M>
void interleave_store(const Packet<T> (&y)[M], std::size_t n, T* d) {
  using Pk = Packet<T>;
  if constexpr (M == 2) {
    Pk r[2];
    zip<T>(y[0], y[1], r[0], r[1]);
    store_n<Add>(r, n, d);
  } else {
    static_assert(M == 4);
    Pk a0, a1, b0, b1, r[4];
    zip<T>(y[0], y[2], a0, a1);
    zip<T>(y[1], y[3], b0, b1);
    zip<T>(a0, b0, r[0], r[1]);
    zip<T>(a1, b1, r[2], r[3]);
    store_n<Add>(r, n, d);
  }
}

/// Copies a source of C x H x W (element (c, h, w) at src[c * sc + h * sh + w * sw]) into split planes of
/// `rows` rows of M phases at `pitch`: column x of the padded plane (the source offset by (top, left)) at
/// phase x % M, index x / M. Writes columns [0, left + W) of the source's rows (the left padding zero)
/// and nothing else: the caller zeroes the buffer once.
template <std::size_t M, class T>
void split(const T* src, std::ptrdiff_t sc, std::ptrdiff_t sh, std::ptrdiff_t sw, std::size_t C, std::size_t H, std::size_t W,
           T* dst, std::size_t rows, std::size_t pitch, std::size_t top, std::size_t left) {
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t y = 0; y < H; ++y) {
      const T* s = src + static_cast<std::ptrdiff_t>(c) * sc + static_cast<std::ptrdiff_t>(y) * sh;
      T* d = dst + (c * rows + y + top) * M * pitch;
      if constexpr (vector_phases<T>) {
        if (sw == 1) {
          for (std::size_t x = 0; x < W; x += M * lanes<T>) split_chunk<M>(s, x, std::min(W - x, M * lanes<T>), d, pitch, left);
          continue;
        }
      }
      for (std::size_t x = 0; x < W; ++x) d[((x + left) % M) * pitch + (x + left) / M] = s[static_cast<std::ptrdiff_t>(x) * sw];
    }
}

// ---- the transforms ------------------------------------------------------------------------------------

/// U[xi * O * C + o * C + c] = (G g G^T)[xi] for the weight g(o, c) = w[o * wo + c * wc + k * wt], k = ki * 3 + kj.
template <std::size_t M, class T>
void transform_weights(std::size_t O, std::size_t C, const T* w, std::ptrdiff_t wo, std::ptrdiff_t wc, std::ptrdiff_t wt, T* U) {
  using G = Mat<M, 1, false>;
  constexpr std::size_t a = M + 2;
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t c = 0; c < C; ++c) {
      const T* g = w + static_cast<std::ptrdiff_t>(o) * wo + static_cast<std::ptrdiff_t>(c) * wc;
      T in[3][3], u[a][a];
      for (std::size_t r = 0; r < 3; ++r)
        for (std::size_t s = 0; s < 3; ++s) in[r][s] = g[static_cast<std::ptrdiff_t>(r * 3 + s) * wt];
      transform2d<G, G>(in, u);
      for (std::size_t x = 0; x < a; ++x)
        for (std::size_t b = 0; b < a; ++b) U[((x * a + b) * O + o) * C + c] = u[x][b];
    }
}

/// dw(o, c) += (G^T dU G) for the a^2 x O x C sums dU (as U's layout); dw(o, c, k) at w[o * wo + c * wc + k * wt].
template <std::size_t M, class T>
void add_weight_grad(std::size_t O, std::size_t C, const T* dU, T* dw, std::ptrdiff_t wo, std::ptrdiff_t wc, std::ptrdiff_t wt) {
  using GT = Mat<M, 1, true>;
  constexpr std::size_t a = M + 2;
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t c = 0; c < C; ++c) {
      T in[a][a], r[3][3];
      for (std::size_t x = 0; x < a; ++x)
        for (std::size_t b = 0; b < a; ++b) in[x][b] = dU[((x * a + b) * O + o) * C + c];
      transform2d<GT, GT>(in, r);
      T* g = dw + static_cast<std::ptrdiff_t>(o) * wo + static_cast<std::ptrdiff_t>(c) * wc;
      for (std::size_t k = 0; k < 9; ++k) g[static_cast<std::ptrdiff_t>(k) * wt] += r[k / 3][k % 3];
    }
}

/// For every channel c < channels and tile t: the n x n patch d of split planes (each channel `rows`
/// rows of M phases at `pitch`; patch column s at phase s % M, index s / M; n = L::cols) transformed to
/// L d R^T (a x a), entry xi of it stored at out[xi * block + c * tp + t]. The input transform (B^T d B
/// from the padded input) and the output gradient's (A dY A^T).
template <class L, class R, std::size_t M, class T>
void transform_tiles(const Plan<T, M>& p, std::size_t channels, const T* planes, std::size_t rows, std::size_t pitch, T* out,
                     std::size_t block) {
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>, n = L::cols, a = L::rows;
  for (std::size_t c = 0; c < channels; ++c)
    for (std::size_t i = 0; i < p.th; ++i)
      for (std::size_t j = 0; j < p.tw; j += V) {
        Pk d[n][n], r[a][a];
        for (std::size_t k = 0; k < n; ++k) {
          const T* row = planes + (c * rows + M * i + k) * M * pitch + j;
          for (std::size_t s = 0; s < n; ++s) d[k][s] = ei::ploadu<Pk>(row + (s % M) * pitch + s / M);
        }
        transform2d<L, R>(d, r);
        T* o = out + c * p.tp + i * p.tw + j;
        for (std::size_t x = 0; x < a; ++x)
          for (std::size_t b = 0; b < a; ++b) ei::pstoreu(o + (x * a + b) * block, r[x][b]);
      }
}
/// V[xi][c][t] = (B^T d B)[xi] for every tile t and input channel c, from the split padded input.
template <std::size_t M, class T>
void transform_input(const Plan<T, M>& p, const T* si, T* Vb) {
  using BT = Mat<M, 0, false>;
  transform_tiles<BT, BT>(p, p.C, si, p.rows, p.pitch, Vb, p.vs);
}

/// M[xi] (O x tiles) = U[xi] (O x C) . V[xi] (C x tiles) for every xi: plane_conv's register-blocked
/// kernel with one tap (channels tp apart, the weight U[xi][o][c]).
template <std::size_t M, class T>
void products(const Plan<T, M>& p, const T* U, const T* Vb, T* Mb) {
  constexpr std::size_t V = lanes<T>, CB = plane_conv::channel_block, SB = plane_conv::vector_block;
  const std::ptrdiff_t tap[1] = {0};
  const std::size_t n = p.tiles_v();
  const auto C = static_cast<std::ptrdiff_t>(p.C);
  for (std::size_t xi = 0; xi < p.XI; ++xi) {
    const T* u = U + xi * p.O * p.C;
    const T* in = Vb + xi * p.vs;
    T* out = Mb + xi * p.ms;
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

/// A^T M A for every tile: out(o, y, j, y_phases) receives output row y's M phases (tiles j .. j + V of
/// output channel o; rows y = M i .. M i + M - 1 of tile row i; lanes past tw are junk).
template <std::size_t M, class T, class Out>
void transform_output(const Plan<T, M>& p, const T* Mb, Out&& out) {
  using Pk = Packet<T>;
  using AT = Mat<M, 2, false>;
  constexpr std::size_t V = lanes<T>, a = M + 2;
  for (std::size_t o = 0; o < p.O; ++o)
    for (std::size_t i = 0; i < p.th; ++i)
      for (std::size_t j = 0; j < p.tw; j += V) {
        const T* m = Mb + o * p.tp + i * p.tw + j;
        Pk in[a][a], y[M][M];
        for (std::size_t x = 0; x < a; ++x)
          for (std::size_t b = 0; b < a; ++b) in[x][b] = ei::ploadu<Pk>(m + (x * a + b) * p.ms);
        transform2d<AT, AT>(in, y);
        for (std::size_t r = 0; r < M; ++r) out(o, M * i + r, j, y[r]);
      }
}

/// Writes (or adds, Add) the split output's HO x WO into dst (element (o, h, w) at dst[o * so + h * sh + w * sw]).
template <bool Add, std::size_t M, class T>
void merge(const Plan<T, M>& p, const T* sp, T* dst, std::ptrdiff_t so, std::ptrdiff_t sh, std::ptrdiff_t sw) {
  for (std::size_t o = 0; o < p.O; ++o)
    for (std::size_t y = 0; y < p.HO; ++y) {
      const T* row = sp + (o * M * p.th + y) * M * p.opitch;
      T* d = dst + static_cast<std::ptrdiff_t>(o) * so + static_cast<std::ptrdiff_t>(y) * sh;
      for (std::size_t x = 0; x < p.WO; ++x) {
        T& r = d[static_cast<std::ptrdiff_t>(x) * sw];
        const T v = row[(x % M) * p.opitch + x / M];
        if constexpr (Add) r += v;
        else r = v;
      }
    }
}

/// Zeroes what split() leaves as it is (the padding rows and columns) before a call's first sample.
template <std::size_t M, class T>
void clear_split(const Plan<T, M>& p, T* buf) {
  std::fill(buf + p.split_in, buf + p.v, T{0});
}

/// One sample: dst (O x HO x WO, added into where Add) = the convolution of src (C x H x W) with the
/// transformed weight U. buf: p.size elements, cleared by clear_split() before the call's first sample.
/// Rows of dst with unit stride take the output transform's rows straight, interleaved in registers;
/// others go through the split output buffer.
template <bool Add, std::size_t M, class T>
void convolve(const Plan<T, M>& p, const T* U, const T* src, std::ptrdiff_t sc, std::ptrdiff_t sh, std::ptrdiff_t sw, T* dst,
              std::ptrdiff_t dc, std::ptrdiff_t dh, std::ptrdiff_t dw, T* buf) {
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  split<M>(src, sc, sh, sw, p.C, p.H, p.W, buf + p.split_in, p.rows, p.pitch, p.P, p.P);
  transform_input(p, buf + p.split_in, buf + p.v);
  products(p, U, buf + p.v, buf + p.m);
  if constexpr (vector_phases<T>) {
    if (dw == 1) {
      transform_output(p, buf + p.m, [&](std::size_t o, std::size_t y, std::size_t j, const Pk(&ph)[M]) {
        if (y < p.HO)
          interleave_store<Add>(ph, std::min(p.WO - M * j, M * V),
                                dst + static_cast<std::ptrdiff_t>(o) * dc + static_cast<std::ptrdiff_t>(y) * dh + static_cast<std::ptrdiff_t>(M * j));
      });
      return;
    }
  }
  T* so = buf + p.split_out;
  transform_output(p, buf + p.m, [&](std::size_t o, std::size_t y, std::size_t j, const Pk(&ph)[M]) {
    T* row = so + (o * M * p.th + y) * M * p.opitch + j;
    for (std::size_t q = 0; q < M; ++q) ei::pstoreu(row + q * p.opitch, ph[q]);
  });
  merge<Add>(p, so, dst, dc, dh, dw);
}

// ---- the weight gradient -------------------------------------------------------------------------------

/// The weight gradient's buffers beyond a forward plan's: the split output gradient (as the split
/// output), dM, and the vector partial sums of dU (a^2 x O x C vectors).
template <class T, std::size_t M>
struct GradPlan {
  std::size_t sg, dm, acc, size;
  explicit GradPlan(const Plan<T, M>& p) {
    sg = p.size;
    dm = sg + Plan<T, M>::align(p.O * M * p.th * M * p.opitch);
    acc = dm + p.XI * p.ms;
    size = acc + p.XI * p.O * p.C * lanes<T>;
  }
};

/// dM[xi][o][t] = (A dy A^T)[xi] for the M x M output gradient dy of every tile (zero past HO x WO).
template <std::size_t M, class T>
void transform_grad(const Plan<T, M>& p, const T* sg, T* dM) {
  using A = Mat<M, 2, true>;
  transform_tiles<A, A>(p, p.O, sg, M * p.th, p.opitch, dM, p.ms);
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

/// Zeroes, before a call's first sample, what the weight gradient's samples leave as it is: the split
/// input's and output gradient's padding, the partial sums, and the tiles past the last of dM and of V,
/// which the dot products read (their last tile row's vectors write some of them with junk, finite, in
/// V, and zero in dM, from the gradient's zero padding; the rest would be whatever the memory held).
template <std::size_t M, class T>
void clear_weight_grad(const Plan<T, M>& p, const GradPlan<T, M>& q, T* buf) {
  clear_split(p, buf);
  std::fill(buf + q.sg, buf + q.dm, T{0});
  std::fill(buf + q.acc, buf + q.size, T{0});
  auto tails = [&](T* block, std::size_t block_stride, std::size_t channels) {
    for (std::size_t xi = 0; xi < p.XI; ++xi)
      for (std::size_t k = 0; k < channels; ++k)
        for (std::size_t s = 0; s < p.batch; ++s) {  // (each sample's segment of the row)
          T* row = block + xi * block_stride + k * p.tp + s * p.tiles_v();
          std::fill(row + p.tiles, row + p.tiles_v(), T{0});
        }
  };
  tails(buf + q.dm, p.ms, p.O);
  tails(buf + p.v, p.vs, p.C);
}

/// The dot products of the first k samples' tiles (k <= p.batch) into the vector partial sums.
template <std::size_t M, class T>
void weight_grad_dots(const Plan<T, M>& p, const GradPlan<T, M>& q, std::size_t k, T* buf) {
  constexpr std::size_t V = lanes<T>, CB = plane_conv::channel_block, CC = 3;
  const std::size_t n = k * p.tiles_v();
  for (std::size_t xi = 0; xi < p.XI; ++xi) {
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

/// One sample's weight gradient (g: the output gradient, O x HO x WO at strides go, gh, gw; src: the
/// input, as for convolve): its tiles transformed into segment `pending` of the buffers, then, once
/// p.batch samples are there, their dot products into the vector partial sums (pending back to 0).
/// buf cleared by clear_weight_grad() before the call's first sample; finish_weight_grad() takes the rest.
template <std::size_t M, class T>
void accumulate_weight_grad(const Plan<T, M>& p, const GradPlan<T, M>& q, const T* src, std::ptrdiff_t sc, std::ptrdiff_t sh,
                            std::ptrdiff_t sw, const T* g, std::ptrdiff_t go, std::ptrdiff_t gh, std::ptrdiff_t gw, T* buf,
                            std::size_t& pending) {
  const std::size_t at = pending * p.tiles_v();
  split<M>(src, sc, sh, sw, p.C, p.H, p.W, buf + p.split_in, p.rows, p.pitch, p.P, p.P);
  transform_input(p, buf + p.split_in, buf + p.v + at);
  split<M>(g, go, gh, gw, p.O, p.HO, p.WO, buf + q.sg, M * p.th, p.opitch, 0, 0);
  transform_grad(p, buf + q.sg, buf + q.dm + at);
  if (++pending == p.batch) {
    weight_grad_dots(p, q, pending, buf);
    pending = 0;
  }
}

/// dw += the weight gradient of the partial sums accumulated so far (their lanes added, then G^T dU G);
/// dU: a^2 x O x C elements of scratch.
template <std::size_t M, class T>
void finish_weight_grad(const Plan<T, M>& p, const GradPlan<T, M>& q, T* buf, std::size_t pending, T* dU, T* dw,
                        std::ptrdiff_t wo, std::ptrdiff_t wc, std::ptrdiff_t wt) {
  using Pk = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  if (pending > 0) weight_grad_dots(p, q, pending, buf);
  for (std::size_t k = 0; k < p.XI * p.O * p.C; ++k) dU[k] = ei::predux(ei::ploadu<Pk>(buf + q.acc + k * V));
  add_weight_grad<M>(p.O, p.C, dU, dw, wo, wc, wt);
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace loom::backend::cpu::winograd
