// loom/backend/cpu/plane_conv.hpp — stride-1 convolution on the host without im2col: register-blocked
// kernels over zero-padded, flattened planes.
//
// A sample's channels are copied into planes of Hp x Wp (the padding zeroed), one after another. With
// the plane flattened, output (oh, ow) of a stride-1 convolution is q = oh * Wp + ow and reads input
// q + ki * D * Wp + kj * D for tap (ki, kj): every output channel is one contiguous run of q, and each
// tap a fixed offset. The kernel computes all q in [0, HO * Wp) (the Wp - WO columns at the end of each
// row read across a row boundary and are dropped when the outputs are copied out), a block of CB output
// channels x SB vectors of q at a time in registers: per (input channel, tap) SB loads, CB weight
// broadcasts and CB * SB fused multiply-adds. The input gradient is the same kernel over the padded
// output gradient with the taps reversed and the weight's two channel axes swapped; the weight
// gradient is a dot kernel: a block of output channels x taps, each a sum over q of g[q] * x[q + tap].
#pragma once
#include <Eigen/Core>
#include <cstddef>

namespace loom::backend::cpu::plane_conv {

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-attributes"  // Eigen's packets carry vector attributes
#endif

template <class T>
using Packet = typename Eigen::internal::packet_traits<T>::type;
/// Elements per vector register (1 where Eigen does not vectorize T).
template <class T>
inline constexpr std::size_t lanes = static_cast<std::size_t>(Eigen::internal::unpacket_traits<Packet<T>>::size);
/// Output channels per register block: 8 x 3 accumulators where there are 32 vector registers, 4 x 3 with 16.
inline constexpr std::size_t channel_block = EIGEN_ARCH_DEFAULT_NUMBER_OF_REGISTERS >= 32 ? 8 : 4;
inline constexpr std::size_t vector_block = 3, tap_block = 3;
/// Kernels of up to 16 x 16 taps (their offsets live on the stack); larger ones take im2col + GEMM.
inline constexpr std::size_t max_taps = 256;

/// One direction of a stride-1 convolution: C channels of planes Hp x Wp read (zero-padded by pad_h /
/// pad_w around the source's H x W), taps at offsets ki * D * Wp + kj * D, HO x WO outputs per channel
/// computed as Qv = HO * Wp rounded up to whole vectors.
template <class T>
struct Geometry {
  std::size_t C, H, W, pad_h, pad_w, Hp, Wp, HO, WO, Qv, slack;
  std::size_t KH, KW, D;
  Geometry(std::size_t C_, std::size_t H_, std::size_t W_, std::size_t KH_, std::size_t KW_, std::size_t D_, std::size_t ph,
           std::size_t pw)
      : C(C_), H(H_), W(W_), pad_h(ph), pad_w(pw), Hp(H_ + 2 * ph), Wp(W_ + 2 * pw), HO(Hp - D_ * (KH_ - 1)),
        WO(Wp - D_ * (KW_ - 1)), Qv((HO * Wp + lanes<T> - 1) / lanes<T> * lanes<T>), slack(Qv - HO * Wp + D_ * (KW_ - 1)),
        KH(KH_), KW(KW_), D(D_) {}
  std::size_t plane() const { return Hp * Wp; }
  /// The padded planes, with the slack the last channel's last outputs read past its end.
  std::size_t padded_size() const { return C * plane() + slack; }
  std::ptrdiff_t tap(std::size_t k) const { return static_cast<std::ptrdiff_t>((k / KW) * D * Wp + (k % KW) * D); }
};

/// d[0, n) = s[0, n), in vectors (the last one overlapping) rather than a libc call per short row.
template <class T>
void copy_row(const T* s, T* d, std::size_t n) {
  using P = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  if (n < V) {
    for (std::size_t i = 0; i < n; ++i) d[i] = s[i];
    return;
  }
  std::size_t i = 0;
  for (; i + V <= n; i += V) Eigen::internal::pstoreu(d + i, Eigen::internal::ploadu<P>(s + i));
  if (i < n) Eigen::internal::pstoreu(d + n - V, Eigen::internal::ploadu<P>(s + n - V));
}

/// Copies a source of C x H x W (element (c, h, w) at src[c * sc + h * sh + w * sw]) into rows of pitch
/// `row`, channels `plane` apart, from dst on; writes nothing else.
template <class T>
void copy_in(const T* src, std::ptrdiff_t sc, std::ptrdiff_t sh, std::ptrdiff_t sw, std::size_t C, std::size_t H, std::size_t W, T* dst,
             std::size_t plane, std::size_t row) {
  for (std::size_t c = 0; c < C; ++c)
    for (std::size_t h = 0; h < H; ++h) {
      const T* s = src + static_cast<std::ptrdiff_t>(c) * sc + static_cast<std::ptrdiff_t>(h) * sh;
      T* d = dst + c * plane + h * row;
      if (sw == 1) copy_row(s, d, W);
      else
        for (std::size_t w = 0; w < W; ++w) d[w] = s[static_cast<std::ptrdiff_t>(w) * sw];
    }
}

/// Copies channels [0, C) of a source whose element (c, h, w) is src[c * sc + h * sh + w * sw] into the
/// padded planes dst (padded_size() elements). Only the interior is written: the caller clears the
/// buffer once, and its padding stays zero from sample to sample.
template <class T>
void pad(const Geometry<T>& g, const T* src, std::ptrdiff_t sc, std::ptrdiff_t sh, std::ptrdiff_t sw, T* dst) {
  copy_in(src, sc, sh, sw, g.C, g.H, g.W, dst + g.pad_h * g.Wp + g.pad_w, g.plane(), g.Wp);
}

/// Copies (or adds, Add) the O channels of computed outputs (pitch Wp, Qv per channel) into a
/// destination whose element (o, h, w) is dst[o * so + h * sh + w * sw].
template <bool Add, class T>
void unpad(const Geometry<T>& g, std::size_t O, const T* src, T* dst, std::ptrdiff_t so, std::ptrdiff_t sh, std::ptrdiff_t sw) {
  for (std::size_t o = 0; o < O; ++o)
    for (std::size_t h = 0; h < g.HO; ++h) {
      const T* s = src + o * g.Qv + h * g.Wp;
      T* d = dst + static_cast<std::ptrdiff_t>(o) * so + static_cast<std::ptrdiff_t>(h) * sh;
      if (sw == 1) {  // contiguous rows
        if constexpr (Add)
          for (std::size_t w = 0; w < g.WO; ++w) d[w] += s[w];
        else copy_row(s, d, g.WO);
        continue;
      }
      for (std::size_t w = 0; w < g.WO; ++w) {
        T& r = d[static_cast<std::ptrdiff_t>(w) * sw];
        if constexpr (Add) r += s[w];
        else r = s[w];
      }
    }
}

/// dst (O x Qv) = the outputs-shaped source (element (o, h, w) at src[o * so + h * sh + w * sw], h < HO,
/// w < WO) at the computed outputs' positions; the rest (columns past WO, the tail) stays as the caller
/// cleared it, zero: the output gradient for weight_grad.
template <class T>
void spread(const Geometry<T>& g, std::size_t O, const T* src, std::ptrdiff_t so, std::ptrdiff_t sh, std::ptrdiff_t sw, T* dst) {
  copy_in(src, so, sh, sw, O, g.HO, g.WO, dst, g.Qv, g.Wp);
}

/// out[o][q .. q + SB lanes) for CB output channels: the sum over input channels c and taps t of
/// w[o * wo + c * wc + t * wt] * in[c * plane + q + tap[t]] (in, out and w already offset to q and o).
/// One flat loop over the taps: nested ki / kj loops made g++ spill the accumulators per kernel row.
template <std::size_t CB, std::size_t SB, class T>
void correlate_block(const T* in, std::size_t plane, std::size_t C, const std::ptrdiff_t* tap, std::size_t taps, const T* w,
                     std::ptrdiff_t wo, std::ptrdiff_t wc, std::ptrdiff_t wt, T* out, std::size_t out_plane) {
  using P = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  P acc[CB][SB];
  for (std::size_t o = 0; o < CB; ++o)
    for (std::size_t s = 0; s < SB; ++s) acc[o][s] = Eigen::internal::pset1<P>(T{0});
  for (std::size_t c = 0; c < C; ++c) {
    const T* src = in + c * plane;
    const T* wc_ = w + static_cast<std::ptrdiff_t>(c) * wc;
    for (std::size_t t = 0; t < taps; ++t) {
      P x[SB];
      for (std::size_t s = 0; s < SB; ++s) x[s] = Eigen::internal::ploadu<P>(src + tap[t] + static_cast<std::ptrdiff_t>(s * V));
      const T* wk = wc_ + static_cast<std::ptrdiff_t>(t) * wt;
      for (std::size_t o = 0; o < CB; ++o) {
        const P b = Eigen::internal::pset1<P>(wk[static_cast<std::ptrdiff_t>(o) * wo]);
        for (std::size_t s = 0; s < SB; ++s) acc[o][s] = Eigen::internal::pmadd(b, x[s], acc[o][s]);
      }
    }
  }
  for (std::size_t o = 0; o < CB; ++o)
    for (std::size_t s = 0; s < SB; ++s) Eigen::internal::pstoreu(out + o * out_plane + s * V, acc[o][s]);
}

/// out[o][q] for all O output channels and q in [0, Qv) (out: O x Qv) from the padded planes `in`
/// (geometry g); weight element (o, c, t) at w[o * wo + c * wc + t * wt]. Blocks of vector_block
/// vectors of q (their inputs stay in L1 across the channel blocks), channel_block channels each.
template <class T>
void correlate(const Geometry<T>& g, const T* in, std::size_t O, const T* w, std::ptrdiff_t wo, std::ptrdiff_t wc, std::ptrdiff_t wt,
               T* out) {
  constexpr std::size_t V = lanes<T>, CB = channel_block, SB = vector_block;
  std::ptrdiff_t tap[max_taps];
  const std::size_t taps = g.KH * g.KW;
  for (std::size_t k = 0; k < taps; ++k) tap[k] = g.tap(k);
  auto blocks = [&]<std::size_t sb>(std::size_t q) {
    std::size_t o = 0;
    for (; o + CB <= O; o += CB)
      correlate_block<CB, sb>(in + q, g.plane(), g.C, tap, taps, w + static_cast<std::ptrdiff_t>(o) * wo, wo, wc, wt, out + o * g.Qv + q, g.Qv);
    for (; o < O; ++o)
      correlate_block<1, sb>(in + q, g.plane(), g.C, tap, taps, w + static_cast<std::ptrdiff_t>(o) * wo, wo, wc, wt, out + o * g.Qv + q, g.Qv);
  };
  std::size_t q = 0;
  for (; q + SB * V <= g.Qv; q += SB * V) blocks.template operator()<SB>(q);
  for (; q < g.Qv; q += V) blocks.template operator()<1>(q);
}

/// dw[o * wo + t * wt] += the sum over q in [0, Qv) of gz[o * Qv + q] * x[q + tap[t]], for CB output
/// channels and TB taps (gz zero wherever q is not an output).
template <std::size_t CB, std::size_t TB, class T>
void dot_block(const T* gz, std::size_t Qv, const T* x, const std::ptrdiff_t* tap, T* dw, std::ptrdiff_t wo, std::ptrdiff_t wt) {
  using P = Packet<T>;
  constexpr std::size_t V = lanes<T>;
  P acc[CB][TB];
  for (std::size_t o = 0; o < CB; ++o)
    for (std::size_t t = 0; t < TB; ++t) acc[o][t] = Eigen::internal::pset1<P>(T{0});
  for (std::size_t q = 0; q < Qv; q += V) {
    P xs[TB];
    for (std::size_t t = 0; t < TB; ++t) xs[t] = Eigen::internal::ploadu<P>(x + static_cast<std::ptrdiff_t>(q) + tap[t]);
    for (std::size_t o = 0; o < CB; ++o) {
      const P gv = Eigen::internal::ploadu<P>(gz + o * Qv + q);
      for (std::size_t t = 0; t < TB; ++t) acc[o][t] = Eigen::internal::pmadd(gv, xs[t], acc[o][t]);
    }
  }
  for (std::size_t o = 0; o < CB; ++o)
    for (std::size_t t = 0; t < TB; ++t)
      dw[static_cast<std::ptrdiff_t>(o) * wo + static_cast<std::ptrdiff_t>(t) * wt] += Eigen::internal::predux(acc[o][t]);
}

/// The weight gradient of one sample: dw[o * wo + c * wc + t * wt] += sum_q gz[o * Qv + q] * x[c * plane
/// + q + tap(t)] for the O output channels of gz (O x Qv, zero where q is not an output: the columns
/// past WO and the tail) and the C padded input planes x (geometry g).
template <class T>
void weight_grad(const Geometry<T>& g, const T* gz, std::size_t O, const T* x, T* dw, std::ptrdiff_t wo, std::ptrdiff_t wc,
                 std::ptrdiff_t wt) {
  constexpr std::size_t CB = channel_block, TB = tap_block;
  const std::size_t taps = g.KH * g.KW;
  for (std::size_t c = 0; c < g.C; ++c) {
    const T* xc = x + c * g.plane();
    T* dwc = dw + static_cast<std::ptrdiff_t>(c) * wc;
    auto over_taps = [&]<std::size_t cb>(std::size_t o) {
      std::ptrdiff_t tap[TB];
      std::size_t t = 0;
      for (; t + TB <= taps; t += TB) {
        for (std::size_t k = 0; k < TB; ++k) tap[k] = g.tap(t + k);
        dot_block<cb, TB>(gz + o * g.Qv, g.Qv, xc, tap, dwc + static_cast<std::ptrdiff_t>(o) * wo + static_cast<std::ptrdiff_t>(t) * wt, wo, wt);
      }
      for (; t < taps; ++t) {
        tap[0] = g.tap(t);
        dot_block<cb, 1>(gz + o * g.Qv, g.Qv, xc, tap, dwc + static_cast<std::ptrdiff_t>(o) * wo + static_cast<std::ptrdiff_t>(t) * wt, wo, wt);
      }
    };
    std::size_t o = 0;
    for (; o + CB <= O; o += CB) over_taps.template operator()<CB>(o);
    for (; o < O; ++o) over_taps.template operator()<1>(o);
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

}  // namespace loom::backend::cpu::plane_conv
