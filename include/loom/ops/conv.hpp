// loom/ops/conv.hpp — 2-D convolution (NCHW, stride, padding, dilation) and max pooling. Spatial
// extents flow through the static shape, so a following Flatten/Linear is checked.
//   conv:  out_n = W[Cout, Cin*K*K] @ im2col(x_n)          dW += g_n @ im2col(x_n)^T,  dx_n += col2im(W^T @ g_n)
//          on a device and for strides > 1; stride 1 on the host runs register-blocked kernels over
//          zero-padded planes instead (backend/cpu/plane_conv.hpp: no im2col matrix, no GEMM packing)
//   pool:  out = max over each window (argmax kept)         dx[argmax] += g
#pragma once
#include <algorithm>

#include "../backend/cpu/gemm.hpp"
#include "../backend/cpu/parallel.hpp"
#include "../backend/cpu/plane_conv.hpp"
#include "../backend/cpu/winograd.hpp"
#include "../backend/exec.hpp"
#include "op.hpp"

namespace loom {

namespace detail {
template <bool Ok, class X, class W>
struct check_conv2d {
  static_assert(Ok, "loom::conv2d: input [N, Cin, H, W] and weight [Cout, Cin, K, K] disagree on rank, channels or "
                    "kernel size, or the kernel does not fit (see check_conv2d below)");
  static constexpr bool value = Ok;
};
/// Tags of conv2d's per-thread host buffers: one im2col buffer and one weight-gradient partial per
/// thread, shared by every convolution (grown to the largest; calls never overlap on a thread).
struct ConvColTag;
struct ConvWeightGradTag;
constexpr std::size_t conv_out(std::size_t in, std::size_t k, std::size_t s, std::size_t p, std::size_t d) {
  if (in == dyn || k == dyn) return dyn;
  const std::size_t span = d * (k - 1) + 1;
  return in + 2 * p < span ? 0 : (in + 2 * p - span) / s + 1;
}
}  // namespace detail

namespace device {
/// The most elements a device convolution holds in column buffers at once (the im2col matrices of a chunk
/// of samples, and the weight gradient's per-sample products); larger batches run in chunks of samples.
/// Default 2^26 (256 MB of floats); lower it where device memory is tight.
inline std::size_t& conv_workspace_limit() {
  static std::size_t elements = std::size_t{1} << 26;
  return elements;
}
}  // namespace device

namespace host {
/// Whether a host convolution that fits Winograd's minimal filtering (3x3, stride 1, no dilation,
/// padding up to 2, at least 8 channels in and out) takes it (backend/cpu/winograd.hpp); false: the
/// direct kernels (to compare the two). Default true.
inline bool& winograd_conv() {
  static bool on = true;
  return on;
}
/// The Winograd path's tile: 0 (default) picks F(4x4, 3x3) where the output is at least 8 x 8 and
/// F(2x2, 3x3) below; 2 or 4 force one (to compare them).
inline std::size_t& winograd_tile() {
  static std::size_t m = 0;
  return m;
}
}  // namespace host

namespace ops {

template <std::size_t S, std::size_t P, std::size_t D>
struct Conv2d {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "conv2d";
  template <class X, class W>
  using shape = Shape<X::extents[0], W::extents[0], detail::conv_out(X::extents[2], W::extents[2], S, P, D),
                      detail::conv_out(X::extents[3], W::extents[3], S, P, D)>;

  Dims<4> dims(const Dims<4>& x, const Dims<4>& w) const {
    const std::size_t ho = detail::conv_out(x[2], w[2], S, P, D), wo = detail::conv_out(x[3], w[3], S, P, D);
    if (x[1] != w[1] || ho == 0 || wo == 0)
      throw shape_error("loom::conv2d: input " + to_string(x) + " and weight " + to_string(w) +
                        " do not fit (channels differ or the kernel is larger than the padded input)");
    return {x[0], w[0], ho, wo};
  }
  /// One sample's im2col matrix [Cin*K*K, Hout*Wout] (the host at strides > 1), or at least the direct
  /// path's buffers (the host at stride 1), whichever is larger. (A device does not use it: its column
  /// buffers hold a chunk of samples and come from the device memory cache.)
  std::size_t scratch(const Dims<4>& x, const Dims<4>& w) const {
    const auto o = dims(x, w);
    const std::size_t im2col = x[1] * w[2] * w[3] * o[2] * o[3];
    if (winograd_fits(w))  // (any of the paths may run: the settings below are read per call; elements of
                           // float or double: their vectors' lanes, and so the plans' layouts, differ)
      return std::max({direct_scratch(x, w), WinogradPlan<float, 2>(x, w).size, WinogradPlan<float, 4>(x, w).size,
                       WinogradPlan<double, 2>(x, w).size, WinogradPlan<double, 4>(x, w).size});
    return direct(w) ? std::max(im2col, direct_scratch(x, w)) : im2col;
  }

  // ---- the host's Winograd path (3x3, stride 1): backend/cpu/winograd.hpp -------------------------------
  /// Winograd applies: a 3x3 kernel at stride 1, no dilation, padding up to 2 (the input gradient's
  /// padding is 2 - P), and at least 8 channels each side (with fewer, its transforms cost more than the
  /// multiplications it saves: the direct kernels take those).
  static bool winograd_fits(const Dims<4>& w) {
    return S == 1 && D == 1 && P <= 2 && w[2] == 3 && w[3] == 3 && w[0] >= 8 && w[1] >= 8;
  }
  static bool winograd(const Dims<4>& w) { return winograd_fits(w) && host::winograd_conv(); }
  /// Calls f.template operator()<M>() with the tile M for input x (host::winograd_tile()).
  template <class F>
  static void with_tile(const Dims<4>& x, F&& f) {
    std::size_t m = host::winograd_tile();
    if (m != 2 && m != 4) m = std::min(x[2] + 2 * P - 2, x[3] + 2 * P - 2) >= 8 ? 4 : 2;
    if (m == 4) f.template operator()<4>();
    else f.template operator()<2>();
  }
  /// The scratch of the Winograd path: the transformed weight, shared by the threads (the forward's, or
  /// the input gradient's: reversed, channel axes swapped), then one thread's buffers: the forward's
  /// plan f, or in the backward the weight gradient's plan fw with its buffers, the input gradient's
  /// plan b, and the 16 x O x C sums dU. The weight gradient always tiles by F(2x2, 3x3): its vector
  /// partial sums (one per tile entry and channel pair, 16 x O x C vectors: 0.5 MB at 16 -> 32
  /// channels) stay in cache, where F(4x4, 3x3)'s 36 x O x C left it waiting on memory (7.0 ms against
  /// 6.7 for conv2d 32x16->32 28x28 forward + backward, though its forward was faster).
  template <class T, std::size_t M>
  struct WinogradPlan {
    backend::cpu::winograd::Plan<T, M> f, b;
    backend::cpu::winograd::Plan<T, 2> fw;
    backend::cpu::winograd::GradPlan<T, 2> g;
    std::size_t u, per_thread, bwd_b, bwd_du, size;
    WinogradPlan(const Dims<4>& x, const Dims<4>& w)
        : f(x[1], w[0], x[2], x[3], P), b(w[0], x[1], f.HO, f.WO, 2 - P),
          fw(x[1], w[0], x[2], x[3], P, weight_grad_batch(backend::cpu::winograd::Plan<T, 2>(x[1], w[0], x[2], x[3], P))), g(fw) {
      u = f.align(f.XI * w[0] * w[1]);
      bwd_b = g.size;
      bwd_du = bwd_b + b.size;
      per_thread = std::max(f.size, bwd_du + fw.XI * w[0] * w[1]);
      size = u + per_thread;
    }
    /// Samples the weight gradient transforms before its dot products run over all their tiles at once:
    /// a sample's tiles are few vectors (28 x 28: 13, 14 x 14: 4), and the dot kernel's partial sums go
    /// back to memory after each run. Up to 8 samples, ~32 vectors, within 4 MiB of transformed tiles
    /// (a^2 x (C + O) rows). Measured (conv2d 32 -> 64 at 14 x 14, batch 64, forward + backward, 1 thread,
    /// fastest of 5 alternations): one sample at a time 17.0-19.8 ms; up to 2 samples 17.4-18.6, 3: 15.8-17.8,
    /// 4: 14.5-16.2, 8: 14.4-15.8, 16: 15.1.
    static std::size_t weight_grad_batch(const backend::cpu::winograd::Plan<T, 2>& one) {
      const std::size_t vectors = one.tiles_v() / backend::cpu::winograd::lanes<T>;
      std::size_t k = std::clamp<std::size_t>((32 + vectors - 1) / vectors, 1, 8);
      while (k > 1 && one.XI * (one.C + one.O) * (k * one.tiles_v()) * sizeof(T) > (std::size_t{4096} << 10)) --k;
      return k;
    }
  };

  // ---- the host's direct path (stride 1): backend/cpu/plane_conv.hpp --------------------------------------
  /// Stride 1, with a padding the input gradient's reversed correlation can express (P <= D (K - 1)),
  /// kernels up to plane_conv::max_taps taps.
  static bool direct(const Dims<4>& w) {
    return S == 1 && P <= D * (w[2] - 1) && P <= D * (w[3] - 1) && w[2] * w[3] <= backend::cpu::plane_conv::max_taps;
  }
  /// The direct path's plan for one sample: the forward's planes (the input, padded by P) and the input
  /// gradient's (the output gradient, padded by D (K - 1) - P: its correlation with the reversed kernel
  /// has the input's extents), and the scratch's layout (offsets in elements, each 64-byte aligned when
  /// the scratch is): the padded input at 0, the output gradient spread to the input's pitch (gz; the
  /// forward's outputs use it too), the padded output gradient (gp) and the input gradient's outputs.
  template <class T>
  struct DirectPlan {
    backend::cpu::plane_conv::Geometry<T> f, b;
    std::size_t gz, gp, dx_q, size;
    DirectPlan(const Dims<4>& x, const Dims<4>& w)
        : f(x[1], x[2], x[3], w[2], w[3], D, P, P), b(w[0], f.HO, f.WO, w[2], w[3], D, D * (w[2] - 1) - P, D * (w[3] - 1) - P) {
      constexpr std::size_t A = std::max<std::size_t>(1, 64 / sizeof(T));
      auto up = [](std::size_t n) { return (n + A - 1) / A * A; };
      gz = up(f.padded_size());
      gp = gz + up(w[0] * f.Qv);
      dx_q = gp + up(b.padded_size());
      size = dx_q + x[1] * b.Qv;
    }
  };
  /// Sized for float's vectors, the widest in elements of loom's host dtypes (and the coarsest alignment).
  static std::size_t direct_scratch(const Dims<4>& x, const Dims<4>& w) {
    static_assert(backend::cpu::plane_conv::lanes<float> >= backend::cpu::plane_conv::lanes<double>);
    return DirectPlan<float>(x, w).size;
  }

  /// The output columns [lo, hi) whose input column ow * S + kj * D - P lies inside [0, W): the rest
  /// read padding. Lets im2col / col2im run branch-free (and as plain copies at stride 1).
  static std::pair<std::size_t, std::size_t> valid_columns(std::size_t kj, std::size_t W, std::size_t WO) {
    const auto off = static_cast<std::ptrdiff_t>(kj * D) - static_cast<std::ptrdiff_t>(P);  // iw = ow * S + off
    const std::ptrdiff_t lo = off >= 0 ? 0 : (-off + static_cast<std::ptrdiff_t>(S) - 1) / static_cast<std::ptrdiff_t>(S);
    const std::ptrdiff_t last = static_cast<std::ptrdiff_t>(W) - 1 - off;  // ow * S <= last
    const std::ptrdiff_t hi = last < 0 ? 0 : std::min<std::ptrdiff_t>(static_cast<std::ptrdiff_t>(WO), last / static_cast<std::ptrdiff_t>(S) + 1);
    return {static_cast<std::size_t>(std::min(lo, hi)), static_cast<std::size_t>(hi)};
  }
  /// Walks one sample's im2col matrix [Cin*K*K, Hout*Wout] a row of Wout columns at a time: calls
  /// run(row, at, lo, hi) for every row, where the columns [lo, hi) read the input and the rest read
  /// padding; when hi > lo, `at` is the offset (in elements, from the tensor's start) of the input
  /// element that column lo reads, and column ow reads at + (ow - lo) * S * stride_w. One walk serves the
  /// gather (im2col) and the scatter-add (col2im).
  template <class T, class Run>
  static void for_each_run(const detail::View<T, 4>& x, std::size_t n, const Dims<4>& w, const Dims<4>& o, Run&& run) {
    const std::size_t H = x.dims[2], HO = o[2];
    for_each_tap(x, n, w, o, [&](std::size_t k, std::ptrdiff_t plane, std::size_t ki, std::size_t kj, std::size_t lo, std::size_t hi) {
      const std::size_t row = k * HO;
      const auto iw0 = static_cast<std::ptrdiff_t>(lo * S + kj * D) - static_cast<std::ptrdiff_t>(P);
      for (std::size_t oh = 0; oh < HO; ++oh) {
        const auto ih = static_cast<std::ptrdiff_t>(oh * S + ki * D) - static_cast<std::ptrdiff_t>(P);
        if (ih < 0 || ih >= static_cast<std::ptrdiff_t>(H) || hi == lo) {
          run(row + oh, std::ptrdiff_t{0}, std::size_t{0}, std::size_t{0});
          continue;
        }
        run(row + oh, plane + ih * x.strides[2] + iw0 * x.strides[3], lo, hi);
      }
    });
  }
  /// Calls tap(k, plane, ki, kj, lo, hi) for every (input channel c, kernel row ki, kernel column kj)
  /// of one sample: k = (c KH + ki) KW + kj indexes the im2col matrix's blocks of Hout rows, plane is
  /// the offset of sample n's channel c, [lo, hi) the output columns that read the input (valid_columns).
  template <class T, class Tap>
  static void for_each_tap(const detail::View<T, 4>& x, std::size_t n, const Dims<4>& w, const Dims<4>& o, Tap&& tap) {
    std::size_t k = 0;
    for (std::size_t c = 0; c < x.dims[1]; ++c)
      for (std::size_t ki = 0; ki < w[2]; ++ki)
        for (std::size_t kj = 0; kj < w[3]; ++kj, ++k) {
          const auto [lo, hi] = valid_columns(kj, x.dims[3], o[3]);
          tap(k, static_cast<std::ptrdiff_t>(n) * x.strides[0] + static_cast<std::ptrdiff_t>(c) * x.strides[1], ki, kj, lo, hi);
        }
  }
  template <class T>
  static void im2col(const detail::View<T, 4>& x, std::size_t n, const Dims<4>& w, const Dims<4>& o, T* col) {
    const std::size_t WO = o[3];
    const std::ptrdiff_t step = static_cast<std::ptrdiff_t>(S) * x.strides[3];
    for_each_run(x, n, w, o, [&](std::size_t row, std::ptrdiff_t at, std::size_t lo, std::size_t hi) {
      T* r = col + row * WO;
      std::fill_n(r, lo, T{0});
      if (hi > lo) {
        const T* src = x.data + at;
        if (step == 1) std::copy_n(src, hi - lo, r + lo);
        else
          for (std::size_t ow = lo; ow < hi; ++ow) r[ow] = src[static_cast<std::ptrdiff_t>(ow - lo) * step];
      }
      std::fill_n(r + hi, WO - hi, T{0});
    });
  }
  /// dx_n += col2im(col).
  template <class T>
  static void col2im_add(T* col, const detail::View<T, 4>& dx, std::size_t n, const Dims<4>& w, const Dims<4>& o) {
    const std::size_t WO = o[3];
    const std::ptrdiff_t step = static_cast<std::ptrdiff_t>(S) * dx.strides[3];
    for_each_run(dx, n, w, o, [&](std::size_t row, std::ptrdiff_t at, std::size_t lo, std::size_t hi) {
      if (hi == lo) return;
      T* dst = dx.data + at;
      const T* r = col + row * WO;
      if (step == 1)
        for (std::size_t ow = lo; ow < hi; ++ow) dst[ow - lo] += r[ow];
      else
        for (std::size_t ow = lo; ow < hi; ++ow) dst[static_cast<std::ptrdiff_t>(ow - lo) * step] += r[ow];
    });
  }
  template <class T>
  static detail::View<T, 2> weight_matrix(const detail::View<T, 4>& w) {
    const std::size_t r = w.dims[0], c = w.dims[1] * w.dims[2] * w.dims[3];
    if (w.strides[3] != 1 || w.strides[2] != static_cast<std::ptrdiff_t>(w.dims[3]) ||
        w.strides[1] != static_cast<std::ptrdiff_t>(w.dims[2] * w.dims[3]))
      throw shape_error("loom::conv2d: the weight must be contiguous within each output channel");
    return {w.data, {r, c}, {w.strides[0], 1}};
  }
  template <class T>
  static detail::View<T, 2> sample(const detail::View<T, 4>& v, std::size_t n) {
    if (v.strides[3] != 1 || v.strides[2] != static_cast<std::ptrdiff_t>(v.dims[3]))
      throw shape_error("loom::conv2d: output gradients must be contiguous per channel");
    return {v.data + static_cast<std::ptrdiff_t>(n) * v.strides[0], {v.dims[1], v.dims[2] * v.dims[3]}, {v.strides[1], 1}};
  }

  // ---- device: the samples in chunks; per chunk im2col and col2im are one kernel each (col2im gathers per
  // input element: no atomics) and each product one strided-batched GEMM (cuBLAS on CUDA); the weight
  // gradient's per-sample products are summed over the chunk by one more kernel. The column buffers come
  // from the device memory cache (reused from the first step on), within device::conv_workspace_limit() ---
  /// The im2col matrices of samples n0, n0 + 1, ...: element e = n per + ((c KH + ki) KW + kj) HO WO + oh WO + ow.
  template <class T>
  struct Im2Col {
    const T* x;
    std::ptrdiff_t s0, s1, s2, s3;
    std::size_t H, W, KH, KW, HO, WO, per;
    T* col;
    LOOM_HOST_DEVICE void operator()(std::size_t e) const {
      const std::size_t n = e / per, f = e % per;
      const std::size_t ow = f % WO, oh = (f / WO) % HO, r = f / (WO * HO), kj = r % KW, ki = (r / KW) % KH, c = r / (KW * KH);
      const auto ih = static_cast<std::ptrdiff_t>(oh * S + ki * D) - static_cast<std::ptrdiff_t>(P);
      const auto iw = static_cast<std::ptrdiff_t>(ow * S + kj * D) - static_cast<std::ptrdiff_t>(P);
      const bool in = ih >= 0 && ih < static_cast<std::ptrdiff_t>(H) && iw >= 0 && iw < static_cast<std::ptrdiff_t>(W);
      col[e] = in ? x[static_cast<std::ptrdiff_t>(n) * s0 + static_cast<std::ptrdiff_t>(c) * s1 + ih * s2 + iw * s3] : T{0};
    }
  };
  /// dx[n, c, ih, iw] += every entry of sample n's column matrix that im2col read from there.
  template <class T>
  struct Col2Im {
    const T* col;
    T* dx;
    std::ptrdiff_t s0, s1, s2, s3;
    std::size_t C, H, W, KH, KW, HO, WO, per;
    LOOM_HOST_DEVICE void operator()(std::size_t e) const {
      const std::size_t iw = e % W, ih = (e / W) % H, c = (e / (W * H)) % C, n = e / (W * H * C);
      const T* cn = col + n * per;
      T acc{0};
      for (std::size_t ki = 0; ki < KH; ++ki) {
        const auto y = static_cast<std::ptrdiff_t>(ih + P) - static_cast<std::ptrdiff_t>(ki * D);  // = oh * S
        if (y < 0 || y % static_cast<std::ptrdiff_t>(S) != 0 || static_cast<std::size_t>(y) / S >= HO) continue;
        for (std::size_t kj = 0; kj < KW; ++kj) {
          const auto z = static_cast<std::ptrdiff_t>(iw + P) - static_cast<std::ptrdiff_t>(kj * D);
          if (z < 0 || z % static_cast<std::ptrdiff_t>(S) != 0 || static_cast<std::size_t>(z) / S >= WO) continue;
          acc += cn[((c * KH + ki) * KW + kj) * HO * WO + (static_cast<std::size_t>(y) / S) * WO + static_cast<std::size_t>(z) / S];
        }
      }
      dx[static_cast<std::ptrdiff_t>(n) * s0 + static_cast<std::ptrdiff_t>(c) * s1 + static_cast<std::ptrdiff_t>(ih) * s2 +
         static_cast<std::ptrdiff_t>(iw) * s3] += acc;
    }
  };
  /// dW[o, r] += the chunk's per-sample products part[n, o, r], in sample order.
  template <class T>
  struct AddSamples {
    const T* part;
    T* dw;
    std::ptrdiff_t ds0;
    std::size_t cols, size, samples;
    LOOM_HOST_DEVICE void operator()(std::size_t e) const {
      T acc = part[e];
      for (std::size_t n = 1; n < samples; ++n) acc += part[n * size + e];
      dw[static_cast<std::ptrdiff_t>(e / cols) * ds0 + static_cast<std::ptrdiff_t>(e % cols)] += acc;
    }
  };
  template <class T>
  static void device_im2col(const detail::View<T, 4>& x, std::size_t n0, std::size_t nb, const Dims<4>& w, const Dims<4>& o,
                            T* col) {
    const std::size_t per = x.dims[1] * w[2] * w[3] * o[2] * o[3];
    backend::device::for_n(nb * per, Im2Col<T>{x.data + static_cast<std::ptrdiff_t>(n0) * x.strides[0], x.strides[0],
                                               x.strides[1], x.strides[2], x.strides[3], x.dims[2], x.dims[3], w[2], w[3], o[2],
                                               o[3], per, col});
  }
  /// Samples per chunk: as many as keep the buffers (`per_sample` elements per sample) within the limit.
  static std::size_t device_chunk(std::size_t samples, std::size_t per_sample) {
    return std::clamp<std::size_t>(device::conv_workspace_limit() / std::max<std::size_t>(per_sample, 1), 1,
                                   std::max<std::size_t>(samples, 1));
  }
  template <class Dev, class T>
    requires(!HostDevice<Dev>)
  void forward(on<Dev>, const detail::View<T, 4>& out, const detail::View<T, 4>& x, const detail::View<T, 4>& w, T*) const {
    const auto wm = weight_matrix(w);
    const std::size_t HW = out.dims[2] * out.dims[3], per = wm.dims[1] * HW, N = x.dims[0], chunk = device_chunk(N, per);
    auto col = detail::DeviceMemory<Dev>::template allocate<T>(chunk * per);
    const detail::View<T, 2> cv{col.get(), {wm.dims[1], HW}, {static_cast<std::ptrdiff_t>(HW), 1}};
    for (std::size_t n0 = 0; n0 < N; n0 += chunk) {
      const std::size_t nb = std::min(chunk, N - n0);
      device_im2col(x, n0, nb, w.dims, out.dims, col.get());
      backend::device::gemm_batched(sample(out, n0), wm, cv, false, nb, out.strides[0], 0, static_cast<std::ptrdiff_t>(per));
    }
  }
  template <class Dev, class T>
    requires(!HostDevice<Dev>)
  void backward(on<Dev>, const detail::View<T, 4>& g, const detail::View<T, 4>& out,
                const std::pair<detail::View<T, 4>, detail::View<T, 4>>& x,
                const std::pair<detail::View<T, 4>, detail::View<T, 4>>& w, T*) const {
    const auto wm = weight_matrix(w.first);
    const auto& dx = x.second;
    const std::size_t HW = out.dims[2] * out.dims[3], CKK = wm.dims[1], per = CKK * HW, N = x.first.dims[0];
    const std::size_t wsize = wm.dims[0] * CKK, chunk = device_chunk(N, per + (w.second.data ? wsize : 0));
    auto col = detail::DeviceMemory<Dev>::template allocate<T>(chunk * per);
    decltype(col) part;  // the weight gradient's per-sample products, where it is wanted
    if (w.second.data) part = detail::DeviceMemory<Dev>::template allocate<T>(chunk * wsize);
    const detail::View<T, 2> cv{col.get(), {CKK, HW}, {static_cast<std::ptrdiff_t>(HW), 1}};
    const auto bg = g.strides[0], bcol = static_cast<std::ptrdiff_t>(per);
    for (std::size_t n0 = 0; n0 < N; n0 += chunk) {
      const std::size_t nb = std::min(chunk, N - n0);
      if (w.second.data) {
        device_im2col(x.first, n0, nb, w.first.dims, out.dims, col.get());
        const detail::View<T, 2> products{part.get(), {wm.dims[0], CKK}, {static_cast<std::ptrdiff_t>(CKK), 1}};
        backend::device::gemm_batched(products, sample(g, n0), backend::cpu::transposed(cv), false, nb,
                                      static_cast<std::ptrdiff_t>(wsize), bg, bcol);
        const auto dwm = weight_matrix(w.second);
        backend::device::for_n(wsize, AddSamples<T>{part.get(), dwm.data, dwm.strides[0], CKK, wsize, nb});
      }
      if (dx.data) {
        backend::device::gemm_batched(cv, backend::cpu::transposed(wm), sample(g, n0), false, nb, bcol, 0, bg);
        const auto& k = w.first.dims;
        backend::device::for_n(nb * dx.dims[1] * dx.dims[2] * dx.dims[3],
                               Col2Im<T>{col.get(), dx.data + static_cast<std::ptrdiff_t>(n0) * dx.strides[0], dx.strides[0],
                                         dx.strides[1], dx.strides[2], dx.strides[3], dx.dims[1], dx.dims[2], dx.dims[3], k[2], k[3],
                                         out.dims[2], out.dims[3], per});
      }
    }
  }

  // ---- host: samples split over OpenMP threads (one parallel region per call; the GEMMs inside run
  // single-threaded), each thread with its own im2col buffer and, for the weight gradient, its own
  // partial sum, added into dW in thread order (deterministic for a given thread count) --------------------
  /// Calls body(n0, n1, col, t, nt) on every thread t of nt, samples [n0, n1) each (possibly empty),
  /// col a buffer of col_size elements: the planned scratch for thread 0, a grow-only thread-local
  /// one for the others. One call with every sample when there is one thread (or one sample).
  template <class T, class Body>
  static void over_samples(std::size_t N, std::size_t col_size, T* col, Body&& body) {
#ifdef _OPENMP
    if (N > 1 && backend::cpu::free_threads() > 1) {
#pragma omp parallel
      {
        const auto t = static_cast<std::size_t>(omp_get_thread_num()), nt = static_cast<std::size_t>(omp_get_num_threads());
        body(N * t / nt, N * (t + 1) / nt, t == 0 ? col : backend::cpu::detail_gemm::workspace<T, detail::ConvColTag>(col_size), t, nt);
      }
      return;
    }
#endif
    (void)col_size;
    body(std::size_t{0}, N, col, std::size_t{0}, std::size_t{1});
  }
  template <class T>
  void forward(const detail::View<T, 4>& out, const detail::View<T, 4>& x, const detail::View<T, 4>& w, T* col) const {
    namespace pc = backend::cpu::plane_conv;
    const auto wm = weight_matrix(w);
    const std::size_t HW = out.dims[2] * out.dims[3], O = wm.dims[0];
    (void)sample(out, 0);  // checks the layout here: nothing may throw on the threads
    if (winograd(w.dims)) {
      with_tile(x.dims, [&]<std::size_t M>() {
        namespace wg = backend::cpu::winograd;
        const WinogradPlan<T, M> plan(x.dims, w.dims);
        const auto& f = plan.f;
        ++wg::stats().forwards;
        wg::stats().f4 += M == 4;
        wg::transform_weights<M>(f.O, f.C, w.data, w.strides[0], w.strides[1], 1, col);
        over_samples(x.dims[0], plan.per_thread, col + plan.u, [&](std::size_t n0, std::size_t n1, T* c, std::size_t, std::size_t) {
          wg::clear_split(f, c);
          for (std::size_t n = n0; n < n1; ++n)
            wg::convolve<false>(f, col, x.data + static_cast<std::ptrdiff_t>(n) * x.strides[0], x.strides[1], x.strides[2], x.strides[3],
                                out.data + static_cast<std::ptrdiff_t>(n) * out.strides[0], out.strides[1], out.strides[2], out.strides[3], c);
        });
      });
      return;
    }
    if (direct(w.dims)) {
      const DirectPlan<T> plan(x.dims, w.dims);
      const auto& f = plan.f;
      over_samples(x.dims[0], direct_scratch(x.dims, w.dims), col, [&](std::size_t n0, std::size_t n1, T* c, std::size_t, std::size_t) {
        T* out_q = c + plan.gz;
        std::fill_n(c, f.padded_size(), T{0});  // the padding, which pad() leaves as it is
        for (std::size_t n = n0; n < n1; ++n) {
          pc::pad(f, x.data + static_cast<std::ptrdiff_t>(n) * x.strides[0], x.strides[1], x.strides[2], x.strides[3], c);
          pc::correlate(f, c, O, w.data, w.strides[0], w.strides[1], 1, out_q);
          pc::unpad<false>(f, O, out_q, out.data + static_cast<std::ptrdiff_t>(n) * out.strides[0], out.strides[1], out.strides[2], out.strides[3]);
        }
      });
      return;
    }
    over_samples(x.dims[0], wm.dims[1] * HW, col, [&](std::size_t n0, std::size_t n1, T* c, std::size_t, std::size_t) {
      for (std::size_t n = n0; n < n1; ++n) {
        im2col(x, n, w.dims, out.dims, c);
        backend::cpu::gemm(sample(out, n), wm, detail::View<T, 2>{c, {wm.dims[1], HW}, {static_cast<std::ptrdiff_t>(HW), 1}}, false);
      }
    });
  }
  template <class T>
  void backward(const detail::View<T, 4>& g, const detail::View<T, 4>& out,
                const std::pair<detail::View<T, 4>, detail::View<T, 4>>& x,
                const std::pair<detail::View<T, 4>, detail::View<T, 4>>& w, T* col) const {
    const auto wm = weight_matrix(w.first);
    const std::size_t HW = out.dims[2] * out.dims[3], R = wm.dims[0], CKK = wm.dims[1];
    const bool want_w = w.second.data != nullptr, want_x = x.second.data != nullptr;
    const auto dw = want_w ? weight_matrix(w.second) : detail::View<T, 2>{};
    (void)sample(g, 0);  // checks the layout here: nothing may throw on the threads
    if (winograd(w.first.dims)) {
      with_tile(x.first.dims, [&]<std::size_t M>() {
        const WinogradPlan<T, M> plan(x.first.dims, w.first.dims);
        ++backend::cpu::winograd::stats().backwards;
        if (want_x)  // the input gradient's transformed weight: reversed taps, channel axes swapped
          backend::cpu::winograd::transform_weights<M>(plan.b.O, plan.b.C, w.first.data + 8, w.first.strides[1], w.first.strides[0],
                                                       std::ptrdiff_t{-1}, col);
        over_samples_into(dw, R, CKK, plan.per_thread, x.first.dims[0], col + plan.u,
                          [&](std::size_t n0, std::size_t n1, T* c, const detail::View<T, 2>& dw_t) {
                            backward_winograd(plan, g, x, col, dw_t, want_w, want_x, n0, n1, c);
                          });
      });
      return;
    }
    const bool dir = direct(w.first.dims);
    const std::size_t col_size = dir ? direct_scratch(x.first.dims, w.first.dims) : CKK * HW;
    over_samples_into(dw, R, CKK, col_size, x.first.dims[0], col,
                      [&](std::size_t n0, std::size_t n1, T* c, const detail::View<T, 2>& dw_t) {
      if (dir) backward_direct(g, x, w.first, dw_t, want_w, want_x, n0, n1, c);
      else {
        const detail::View<T, 2> cv{c, {CKK, HW}, {static_cast<std::ptrdiff_t>(HW), 1}};
        for (std::size_t n = n0; n < n1; ++n) {
          if (want_w) {
            im2col(x.first, n, w.first.dims, out.dims, c);
            backend::cpu::gemm(dw_t, sample(g, n), backend::cpu::transposed(cv), true);
          }
          if (want_x) {
            backend::cpu::gemm(cv, backend::cpu::transposed(wm), sample(g, n), false);
            col2im_add(c, x.second, n, w.first.dims, out.dims);
          }
        }
      }
    });
  }
  /// over_samples for a backward: body(n0, n1, col, dw_t) with dw_t = dw ([R, CKK]; no data where the
  /// weight gradient is not wanted) on thread 0 and a zeroed partial of its own on the others, the
  /// partials added into dw in thread order (deterministic for a given thread count).
  template <class T, class Body>
  static void over_samples_into(const detail::View<T, 2>& dw, std::size_t R, std::size_t CKK, std::size_t col_size, std::size_t N, T* col,
                                Body&& body) {
    const bool want_w = dw.data != nullptr;
    over_samples(N, col_size, col, [&](std::size_t n0, std::size_t n1, T* c, std::size_t t, std::size_t nt) {
      T* part = want_w && t > 0 ? backend::cpu::detail_gemm::workspace<T, detail::ConvWeightGradTag>(R * CKK) : nullptr;
      if (part) std::fill_n(part, R * CKK, T{0});
      body(n0, n1, c, part ? detail::View<T, 2>{part, {R, CKK}, {static_cast<std::ptrdiff_t>(CKK), 1}} : dw);
      if (!want_w || nt == 1) return;
#ifdef _OPENMP
#pragma omp for ordered schedule(static, 1)
      for (std::size_t k = 0; k < nt; ++k) {
#pragma omp ordered
        if (part)  // iteration k runs on thread k, after thread k - 1 added its partial
          for (std::size_t i = 0; i < R; ++i)
            for (std::size_t j = 0; j < CKK; ++j) dw.data[static_cast<std::ptrdiff_t>(i) * dw.strides[0] + static_cast<std::ptrdiff_t>(j)] += part[i * CKK + j];
      }
#endif
    });
  }
  /// Samples [n0, n1) of the host's Winograd backward: dW (dw_t: [Cout, Cin 3 3]) += the weight gradient
  /// summed over the samples in vector partial sums, finished once; dx += the output gradient (padded by
  /// 2 - P) convolved with the transformed reversed weight ub.
  template <class T, std::size_t M>
  void backward_winograd(const WinogradPlan<T, M>& plan, const detail::View<T, 4>& g,
                         const std::pair<detail::View<T, 4>, detail::View<T, 4>>& x, const T* ub, const detail::View<T, 2>& dw_t,
                         bool want_w, bool want_x, std::size_t n0, std::size_t n1, T* c) const {
    namespace wg = backend::cpu::winograd;
    const auto& f = plan.fw;  // (F(2x2, 3x3); b tiles by M)
    const auto& b = plan.b;
    const auto& gp = plan.g;
    T* const cb = c + plan.bwd_b;
    const auto& dx = x.second;
    if (want_w) wg::clear_weight_grad(f, gp, c);
    if (want_x) wg::clear_split(b, cb);
    std::size_t pending = 0;  // samples transformed, their dot products not yet run (see accumulate_weight_grad)
    for (std::size_t n = n0; n < n1; ++n) {
      const T* gn = g.data + static_cast<std::ptrdiff_t>(n) * g.strides[0];
      if (want_w)
        wg::accumulate_weight_grad(f, gp, x.first.data + static_cast<std::ptrdiff_t>(n) * x.first.strides[0], x.first.strides[1],
                                   x.first.strides[2], x.first.strides[3], gn, g.strides[1], g.strides[2], g.strides[3], c, pending);
      if (want_x)
        wg::convolve<true>(b, ub, gn, g.strides[1], g.strides[2], g.strides[3], dx.data + static_cast<std::ptrdiff_t>(n) * dx.strides[0],
                           dx.strides[1], dx.strides[2], dx.strides[3], cb);
    }
    if (want_w && n1 > n0)
      wg::finish_weight_grad<2>(f, gp, c, pending, c + plan.bwd_du, dw_t.data, dw_t.strides[0], std::ptrdiff_t{9}, std::ptrdiff_t{1});
  }
  /// Samples [n0, n1) of the host's stride-1 backward: dW (dw_t: [Cout, Cin K K]) += the dot kernel of the
  /// output gradient (spread to the input's pitch) with the padded input; dx += the output gradient
  /// (padded) correlated with the weight's taps reversed, its channel axes swapped.
  template <class T>
  void backward_direct(const detail::View<T, 4>& g, const std::pair<detail::View<T, 4>, detail::View<T, 4>>& x, const detail::View<T, 4>& w,
                       const detail::View<T, 2>& dw_t, bool want_w, bool want_x, std::size_t n0, std::size_t n1, T* c) const {
    namespace pc = backend::cpu::plane_conv;
    const DirectPlan<T> plan(x.first.dims, w.dims);
    const auto &f = plan.f, &b = plan.b;
    const std::size_t O = w.dims[0], C = w.dims[1], KK = w.dims[2] * w.dims[3];
    T* const xp = c;
    T* const gz = c + plan.gz;
    T* const gp = c + plan.gp;
    T* const dx_q = c + plan.dx_q;
    const auto& dx = x.second;
    std::fill(xp, dx_q, T{0});  // the padding and the dropped columns, which pad() and spread() leave as they are
    for (std::size_t n = n0; n < n1; ++n) {
      const T* gn = g.data + static_cast<std::ptrdiff_t>(n) * g.strides[0];
      if (want_w) {
        pc::pad(f, x.first.data + static_cast<std::ptrdiff_t>(n) * x.first.strides[0], x.first.strides[1], x.first.strides[2],
                x.first.strides[3], xp);
        pc::spread(f, O, gn, g.strides[1], g.strides[2], g.strides[3], gz);
        pc::weight_grad(f, gz, O, xp, dw_t.data, dw_t.strides[0], static_cast<std::ptrdiff_t>(KK), 1);
      }
      if (want_x) {
        pc::pad(b, gn, g.strides[1], g.strides[2], g.strides[3], gp);
        pc::correlate(b, gp, C, w.data + (KK - 1), w.strides[1], w.strides[0], -1, dx_q);
        pc::unpad<true>(b, C, dx_q, dx.data + static_cast<std::ptrdiff_t>(n) * dx.strides[0], dx.strides[1], dx.strides[2], dx.strides[3]);
      }
    }
  }
};

template <std::size_t K, std::size_t S>
struct MaxPool2d {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "max_pool2d";
  template <class X>
  using shape = Shape<X::extents[0], X::extents[1], detail::conv_out(X::extents[2], K, S, 0, 1),
                      detail::conv_out(X::extents[3], K, S, 0, 1)>;
  Dims<4> dims(const Dims<4>& x) const {
    const std::size_t ho = detail::conv_out(x[2], K, S, 0, 1), wo = detail::conv_out(x[3], K, S, 0, 1);
    if (ho == 0 || wo == 0)
      throw shape_error("loom::max_pool2d: window " + std::to_string(K) + " is larger than the input " + to_string(x));
    return {x[0], x[1], ho, wo};
  }
  /// The position (i * K + j) of each output's maximum in its window (kept for backward).
  std::size_t scratch(const Dims<4>& x) const { return numel(dims(x)); }
  /// Calls f(k, offset of window element (i, j)) over outputs k, the (n, c) planes on threads where
  /// x's planes are disjoint (the backward writes through x: a plane's windows touch only that plane).
  template <class T, class F>
  static void windows(const Dims<4>& o, const detail::View<T, 4>& x, F&& f) {
    auto plane = [&](std::size_t p) {
      const std::size_t n = p / o[1], c = p % o[1];
      std::size_t k = p * o[2] * o[3];
      for (std::size_t oh = 0; oh < o[2]; ++oh)
        for (std::size_t ow = 0; ow < o[3]; ++ow, ++k) {
          const std::ptrdiff_t base = static_cast<std::ptrdiff_t>(n) * x.strides[0] + static_cast<std::ptrdiff_t>(c) * x.strides[1] +
                                      static_cast<std::ptrdiff_t>(oh * S) * x.strides[2] + static_cast<std::ptrdiff_t>(ow * S) * x.strides[3];
          f(k, [&](std::size_t i, std::size_t j) {
            return base + static_cast<std::ptrdiff_t>(i) * x.strides[2] + static_cast<std::ptrdiff_t>(j) * x.strides[3];
          });
        }
    };
    const bool disjoint = (o[0] < 2 || x.strides[0] != 0) && (o[1] < 2 || x.strides[1] != 0);
    if (disjoint) backend::cpu::each_row(o[0] * o[1], o[2] * o[3] * K * K, plane);
    else
      for (std::size_t p = 0; p < o[0] * o[1]; ++p) plane(p);
  }
  template <class Dev, class T>
    requires(!HostDevice<Dev>)
  void forward(on<Dev>, const detail::View<T, 4>& out, const detail::View<T, 4>& x, T* arg) const;
  template <class Dev, class T>
    requires(!HostDevice<Dev>)
  void backward(on<Dev>, const detail::View<T, 4>& g, const detail::View<T, 4>&,
                const std::pair<detail::View<T, 4>, detail::View<T, 4>>& x, T* arg) const;
  template <class T>
  void forward(const detail::View<T, 4>& out, const detail::View<T, 4>& x, T* arg) const {
    windows(out.dims, x, [&](std::size_t k, auto at) {
      std::size_t best = 0;
      T m = x.data[at(0, 0)];
      for (std::size_t i = 0; i < K; ++i)
        for (std::size_t j = 0; j < K; ++j) {  // no branches: which element wins is data, and unpredictable
          const T v = x.data[at(i, j)];
          const auto gt = static_cast<std::size_t>(v > m);
          m = v > m ? v : m;                  // maxss
          best += (i * K + j - best) * gt;  // (a select g++ turns back into a branch)
        }
      out.data[k] = m;
      arg[k] = static_cast<T>(best);
    });
  }
  template <class T>
  void backward(const detail::View<T, 4>& g, const detail::View<T, 4>&,
                const std::pair<detail::View<T, 4>, detail::View<T, 4>>& x, T* arg) const {
    if (!x.second.data) return;
    windows(g.dims, x.second, [&](std::size_t k, auto at) {
      const auto w = static_cast<std::size_t>(arg[k]);
      x.second.data[at(w / K, w % K)] += g.data[k];
    });
  }
};

/// Pooling on a device: a thread per output (forward) or per input element (backward: it gathers from
/// the windows that contain it, so overlapping windows need no atomics). Max keeps the argmax as the host.
template <std::size_t K, std::size_t S, bool Max>
struct PoolKernels {
  template <class T>
  struct Geometry {
    std::size_t C, H, W, HO, WO;
    std::ptrdiff_t x0, x1, x2, x3;  // strides of the input (or of its gradient)
    LOOM_HOST_DEVICE std::ptrdiff_t at(std::size_t n, std::size_t c, std::size_t h, std::size_t w) const {
      return static_cast<std::ptrdiff_t>(n) * x0 + static_cast<std::ptrdiff_t>(c) * x1 + static_cast<std::ptrdiff_t>(h) * x2 +
             static_cast<std::ptrdiff_t>(w) * x3;
    }
  };
  template <class T>
  static Geometry<T> geometry(const detail::View<T, 4>& x, const Dims<4>& o) {
    return {x.dims[1], x.dims[2], x.dims[3], o[2], o[3], x.strides[0], x.strides[1], x.strides[2], x.strides[3]};
  }
  template <class T>
  struct Forward {  // out is the kernel's own contiguous buffer
    Geometry<T> gm;
    const T* x;
    T *out, *arg;
    LOOM_HOST_DEVICE void operator()(std::size_t k) const {
      const std::size_t ow = k % gm.WO, oh = (k / gm.WO) % gm.HO, c = (k / (gm.WO * gm.HO)) % gm.C, n = k / (gm.WO * gm.HO * gm.C);
      T m = x[gm.at(n, c, oh * S, ow * S)], sum{0};
      std::size_t best = 0;
      for (std::size_t i = 0; i < K; ++i)
        for (std::size_t j = 0; j < K; ++j) {
          const T v = x[gm.at(n, c, oh * S + i, ow * S + j)];
          if (v > m) m = v, best = i * K + j;
          sum += v;
        }
      if constexpr (Max) {
        out[k] = m;
        arg[k] = static_cast<T>(best);
      } else {
        out[k] = sum / T(K * K);
      }
    }
  };
  template <class T>
  struct Backward {
    Geometry<T> gm;  // strides of dx
    const T *g, *arg;
    T* dx;
    LOOM_HOST_DEVICE void operator()(std::size_t e) const {
      const std::size_t w = e % gm.W, h = (e / gm.W) % gm.H, c = (e / (gm.W * gm.H)) % gm.C, n = e / (gm.W * gm.H * gm.C);
      T acc{0};
      const std::size_t oh0 = h + 1 > K ? (h + 1 - K + S - 1) / S : 0, ow0 = w + 1 > K ? (w + 1 - K + S - 1) / S : 0;
      for (std::size_t oh = oh0; oh < gm.HO && oh * S <= h; ++oh)
        for (std::size_t ow = ow0; ow < gm.WO && ow * S <= w; ++ow) {
          const std::size_t k = ((n * gm.C + c) * gm.HO + oh) * gm.WO + ow;
          if constexpr (Max) {
            if (static_cast<std::size_t>(arg[k]) == (h - oh * S) * K + (w - ow * S)) acc += g[k];
          } else {
            acc += g[k] / T(K * K);
          }
        }
      dx[gm.at(n, c, h, w)] += acc;
    }
  };
  template <class T>
  static void forward(const detail::View<T, 4>& out, const detail::View<T, 4>& x, T* arg) {
    backend::device::for_n(out.size(), Forward<T>{geometry(x, out.dims), x.data, out.data, arg});
  }
  template <class T>
  static void backward(const detail::View<T, 4>& g, const detail::View<T, 4>& dx, const T* arg) {
    if (!dx.data) return;
    backend::device::for_n(dx.size(), Backward<T>{geometry(dx, g.dims), g.data, arg, dx.data});
  }
};

/// Mean over K x K windows moved by S (no padding).   dx[window] += g / K^2
template <std::size_t K, std::size_t S>
struct AvgPool2d {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "avg_pool2d";
  template <class X>
  using shape = typename MaxPool2d<K, S>::template shape<X>;
  Dims<4> dims(const Dims<4>& x) const { return MaxPool2d<K, S>{}.dims(x); }
  template <class Dev, class T>
    requires(!HostDevice<Dev>)
  void forward(on<Dev>, const detail::View<T, 4>& out, const detail::View<T, 4>& x) const {
    PoolKernels<K, S, false>::forward(out, x, static_cast<T*>(nullptr));
  }
  template <class Dev, class T>
    requires(!HostDevice<Dev>)
  void backward(on<Dev>, const detail::View<T, 4>& g, const detail::View<T, 4>&,
                const std::pair<detail::View<T, 4>, detail::View<T, 4>>& x) const {
    PoolKernels<K, S, false>::backward(g, x.second, static_cast<const T*>(nullptr));
  }
  template <class T>
  void forward(const detail::View<T, 4>& out, const detail::View<T, 4>& x) const {
    MaxPool2d<K, S>::windows(out.dims, x, [&](std::size_t k, auto at) {
      T s{0};
      for (std::size_t i = 0; i < K; ++i)
        for (std::size_t j = 0; j < K; ++j) s += x.data[at(i, j)];
      out.data[k] = s / T(K * K);
    });
  }
  template <class T>
  void backward(const detail::View<T, 4>& g, const detail::View<T, 4>&,
                const std::pair<detail::View<T, 4>, detail::View<T, 4>>& x) const {
    if (!x.second.data) return;
    MaxPool2d<K, S>::windows(g.dims, x.second, [&](std::size_t k, auto at) {
      for (std::size_t i = 0; i < K; ++i)
        for (std::size_t j = 0; j < K; ++j) x.second.data[at(i, j)] += g.data[k] / T(K * K);
    });
  }
};

template <std::size_t K, std::size_t S>
template <class Dev, class T>
  requires(!HostDevice<Dev>)
void MaxPool2d<K, S>::forward(on<Dev>, const detail::View<T, 4>& out, const detail::View<T, 4>& x, T* arg) const {
  PoolKernels<K, S, true>::forward(out, x, arg);
}
template <std::size_t K, std::size_t S>
template <class Dev, class T>
  requires(!HostDevice<Dev>)
void MaxPool2d<K, S>::backward(on<Dev>, const detail::View<T, 4>& g, const detail::View<T, 4>&,
                               const std::pair<detail::View<T, 4>, detail::View<T, 4>>& x, T* arg) const {
  PoolKernels<K, S, true>::backward(g, x.second, arg);
}

}  // namespace ops

/// Mean over K x K windows moved by Stride (default K).
template <std::size_t K, std::size_t Stride = K, Expression X>
auto avg_pool2d(const X& x) {
  static_assert(shape_t<X>::rank == 4, "loom::avg_pool2d: needs an input [N, C, H, W]");
  return make_node(ops::AvgPool2d<K, Stride>{}, x);
}

/// Convolution of x [N, Cin, H, W] with w [Cout, Cin, K, K] (no bias; add it as a broadcast).
template <std::size_t Stride = 1, std::size_t Pad = 0, std::size_t Dilation = 1, Expression X, Expression W>
auto conv2d(const X& x, const W& w) {
  using SX = shape_t<X>;
  using SW = shape_t<W>;
  constexpr bool ok = [] {
    if constexpr (SX::rank != 4 || SW::rank != 4) return false;
    else
      return (SX::extents[1] == SW::extents[1] || SX::extents[1] == dyn || SW::extents[1] == dyn) &&
             detail::conv_out(SX::extents[2], SW::extents[2], Stride, Pad, Dilation) != 0 &&
             detail::conv_out(SX::extents[3], SW::extents[3], Stride, Pad, Dilation) != 0;
  }();
  detail::check_conv2d<ok, SX, SW>{};
  if constexpr (ok) return make_node(ops::Conv2d<Stride, Pad, Dilation>{}, x, w);
}
/// Max over K x K windows moved by Stride (default K).
template <std::size_t K, std::size_t Stride = K, Expression X>
auto max_pool2d(const X& x) {
  static_assert(shape_t<X>::rank == 4, "loom::max_pool2d: needs an input [N, C, H, W]");
  return make_node(ops::MaxPool2d<K, Stride>{}, x);
}

}  // namespace loom
