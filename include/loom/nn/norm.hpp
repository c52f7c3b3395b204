// loom/nn/norm.hpp — BatchNorm (running statistics, momentum, train/eval), LayerNorm, Dropout (seeded).
// Mode is a run-time flag the module shares with its op, so one compiled program serves both modes.
//   batch norm (training): y = (x - mu_B) / sqrt(var_B + eps) * gamma + beta over axes {0, 2, 3}
//     dx = gamma / sigma * (g - mean(g) - xhat * mean(g * xhat)),  dgamma = sum(g * xhat),  dbeta = sum(g)
//   dropout: y = x * mask / (1 - p) with mask ~ Bernoulli(1 - p) (identity in eval)
#pragma once
#ifdef _OPENMP
#include <omp.h>
#endif
#include <memory>

#include "../backend/cpu/parallel.hpp"
#include "../ops/reduce.hpp"
#include "../ops/shape.hpp"
#include "layers.hpp"

namespace loom::nn {

namespace ops {

/// Device kernels of the norms: per-channel / per-column sums go through backend::device::segment_sums
/// (double accumulation, as on the host); the elementwise passes are one thread per element or row.
namespace norm_kernels {
using loom::detail::Layout;
/// The doubles a norm's device backward or forward accumulates into: its scratch after the first
/// `used` elements of T (the scratch is allocated aligned, and `used` elements of 4 or 8 bytes keep
/// that 8-byte alignment when `used` is even).
template <class T>
double* double_workspace(T* scratch, std::size_t used) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "loom::nn norms: float or double");
  return reinterpret_cast<double*>(scratch + used);
}
/// Offset of term i of channel c of a contiguous [N, C, S] tensor (i runs over N * S).
struct ChannelIndex {
  std::size_t C, S;
  LOOM_HOST_DEVICE std::size_t operator()(std::size_t c, std::size_t i) const { return ((i / S) * C + c) * S + i % S; }
};
template <class T>
struct ChannelValues {  // x[n, c, k]
  ChannelIndex at;
  const T* x;
  LOOM_HOST_DEVICE double operator()(std::size_t c, std::size_t i) const { return x[at(c, i)]; }
};
template <class T>
struct ChannelSquares {  // (x[n, c, k] - mean_c)^2, mean_c = sum_c * inv_m
  ChannelIndex at;
  const T* x;
  const double* sum;
  double inv_m;
  LOOM_HOST_DEVICE double operator()(std::size_t c, std::size_t i) const {
    const double d = x[at(c, i)] - sum[c] * inv_m;
    return d * d;
  }
};
template <class T>
struct ChannelGradXhat {  // g * (x - mu_c) * inv_c, with (mu, inv) interleaved in stats
  ChannelIndex at;
  const T* g;
  const T* x;
  const T* stats;
  LOOM_HOST_DEVICE double operator()(std::size_t c, std::size_t i) const {
    const std::size_t j = at(c, i);
    return double(g[j]) * (double(x[j]) - stats[2 * c]) * stats[2 * c + 1];
  }
};
/// Turns the channel sums of x and of its squared deviations into (mean, variance) in place and the
/// kernel's (mean, 1 / sqrt(var + eps)) into stats (inv_m = 1: stats from a given mean and variance).
template <class T>
struct ChannelMoments {
  double* sums;  // [sum x | sum (x - mean)^2] -> [mean | var]
  std::size_t C;
  double inv_m, eps;
  T* stats;
  LOOM_HOST_DEVICE void operator()(std::size_t c) const {
    const double mu = sums[c] * inv_m, var = sums[C + c] * inv_m;
    sums[c] = mu, sums[C + c] = var;
    stats[2 * c] = T(mu), stats[2 * c + 1] = T(1 / std::sqrt(var + eps));
  }
};
template <class T>
struct Normalize {  // out = (x - mu_c) * inv_c * gamma_c + beta_c
  std::size_t C, S;
  const T* x;
  T* out;
  const T* stats;
  const T* gamma;
  std::ptrdiff_t gs;
  const T* beta;
  std::ptrdiff_t bs;
  LOOM_HOST_DEVICE void operator()(std::size_t i) const {
    const auto c = static_cast<std::ptrdiff_t>((i / S) % C);
    out[i] = T((double(x[i]) - stats[2 * c]) * stats[2 * c + 1] * gamma[c * gs] + beta[c * bs]);
  }
};
template <class T>
struct ChannelInputGrad {  // batch norm's dx (training: through the batch statistics)
  std::size_t C, S;
  const T* g;
  const T* x;
  T* dx;
  const T* stats;
  const double* sums;  // [sum g | sum g * xhat]
  const T* gamma;
  std::ptrdiff_t gs;
  double M;
  bool training;
  LOOM_HOST_DEVICE void operator()(std::size_t i) const {
    const auto c = static_cast<std::ptrdiff_t>((i / S) % C);
    const double inv = stats[2 * c + 1], ga = gamma[c * gs], xhat = (double(x[i]) - stats[2 * c]) * inv;
    dx[i] += T(training ? ga * inv / M * (M * g[i] - sums[c] - xhat * sums[C + c]) : ga * inv * g[i]);
  }
};
/// dgamma += sum g * xhat, dbeta += sum g (either may be absent).
template <class T>
struct AffineGrads {
  const double* sum_gxhat;
  const double* sum_g;
  T* dgamma;
  std::ptrdiff_t dgs;
  T* dbeta;
  std::ptrdiff_t dbs;
  LOOM_HOST_DEVICE void operator()(std::size_t c) const {
    const auto ci = static_cast<std::ptrdiff_t>(c);
    if (dgamma) dgamma[ci * dgs] += T(sum_gxhat[c]);
    if (dbeta) dbeta[ci * dbs] += T(sum_g[c]);
  }
};
/// Layer norm: row k of x (the last axis) normalized into the kernel's own contiguous output.
template <class T, std::size_t R>
struct RowForward {
  const T* x;
  Layout<R> xl;
  std::size_t D;
  const T* gamma;
  std::ptrdiff_t gs;
  const T* beta;
  std::ptrdiff_t bs;
  T* out;
  T* stats;
  T eps;
  LOOM_HOST_DEVICE void operator()(std::size_t k) const {
    const T* row = x + xl.row(k);
    const std::ptrdiff_t xs = xl.st[R - 1];
    const auto n = static_cast<std::ptrdiff_t>(D);
    T mu = 0, var = 0;
    for (std::ptrdiff_t d = 0; d < n; ++d) mu += row[d * xs];
    mu /= T(D);
    for (std::ptrdiff_t d = 0; d < n; ++d) var += (row[d * xs] - mu) * (row[d * xs] - mu);
    const T rstd = T(1) / std::sqrt(var / T(D) + eps);
    stats[2 * k] = mu, stats[2 * k + 1] = rstd;
    T* o = out + k * D;
    for (std::ptrdiff_t d = 0; d < n; ++d) o[d] = (row[d * xs] - mu) * rstd * gamma[d * gs] + beta[d * bs];
  }
};
template <class T, std::size_t R>
struct RowInputGrad {  // dx = rstd * (g gamma - mean(g gamma) - xhat * mean(g gamma xhat))
  const T* x;
  Layout<R> xl;
  const T* gy;
  Layout<R> gl;
  T* dx;
  Layout<R> dl;
  std::size_t D;
  const T* gamma;
  std::ptrdiff_t gs;
  const T* stats;
  LOOM_HOST_DEVICE void operator()(std::size_t k) const {
    const T* row = x + xl.row(k);
    const T* grow = gy + gl.row(k);
    T* drow = dx + dl.row(k);
    const std::ptrdiff_t xs = xl.st[R - 1], gys = gl.st[R - 1], ds = dl.st[R - 1];
    const T mu = stats[2 * k], rstd = stats[2 * k + 1];
    const auto n = static_cast<std::ptrdiff_t>(D);
    T m1 = 0, m2 = 0;
    for (std::ptrdiff_t d = 0; d < n; ++d) {
      const T gg = grow[d * gys] * gamma[d * gs];
      m1 += gg, m2 += gg * (row[d * xs] - mu);
    }
    m1 /= T(D), m2 *= rstd / T(D);
    for (std::ptrdiff_t d = 0; d < n; ++d)
      drow[d * ds] += rstd * (grow[d * gys] * gamma[d * gs] - m1 - (row[d * xs] - mu) * (rstd * m2));
  }
};
template <class T, std::size_t R>
struct ColumnTerm {  // column d, row k: g (or g * xhat when Xhat)
  const T* x;
  Layout<R> xl;
  const T* gy;
  Layout<R> gl;
  const T* stats;
  bool xhat;
  LOOM_HOST_DEVICE double operator()(std::size_t d, std::size_t k) const {
    const double g = gy[gl.row(k) + static_cast<std::ptrdiff_t>(d) * gl.st[R - 1]];
    if (!xhat) return g;
    return g * (double(x[xl.row(k) + static_cast<std::ptrdiff_t>(d) * xl.st[R - 1]]) - stats[2 * k]) * stats[2 * k + 1];
  }
};
/// Dropout: mask k is drawn from the counter hash of (seed, k), so the host and the device agree.
template <class T>
LOOM_HOST_DEVICE inline T drop_mask(std::uint64_t seed, std::size_t k, double p, T keep) {
  return hash_uniform(seed ^ (static_cast<std::uint64_t>(k) * 0xD6E8FEB86659FD93ull)) >= p ? keep : T(0);
}
template <class T, std::size_t R>
struct DropForward {
  const T* x;
  Layout<R> xl;
  T* out;
  T* mask;
  std::uint64_t seed;
  double p;
  T keep;
  bool on;
  LOOM_HOST_DEVICE void operator()(std::size_t k) const {
    mask[k] = on ? drop_mask(seed, k, p, keep) : T(1);
    out[k] = x[xl.at(k)] * mask[k];
  }
};
template <class T, std::size_t R>
struct DropBackward {
  const T* g;
  const T* mask;
  T* dx;
  Layout<R> dl;
  LOOM_HOST_DEVICE void operator()(std::size_t k) const { dx[dl.at(k)] += g[k] * mask[k]; }
};
}  // namespace norm_kernels

using backend::cpu::each_row;
/// A row (or parameter vector) as an Eigen array: compile-time unit stride when Unit (vectorized).
template <bool Unit, class T>
auto arr(T* p, std::size_t n, std::ptrdiff_t stride) {
  using A = Eigen::Array<std::remove_const_t<T>, Eigen::Dynamic, 1>;
  using M = std::conditional_t<std::is_const_v<T>, const A, A>;
  if constexpr (Unit) return Eigen::Map<M>(p, static_cast<Eigen::Index>(n));
  else return Eigen::Map<M, 0, Eigen::InnerStride<>>(p, static_cast<Eigen::Index>(n), Eigen::InnerStride<>(stride));
}

/// Channel statistics of x [N, C, ...] with affine parameters gamma, beta [C].
struct BatchNorm {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "batch_norm";
  template <class X, class G, class B>
  using shape = X;
  std::shared_ptr<Mode> mode;
  std::shared_ptr<std::vector<double>> running_mean, running_var;
  double momentum = 0.1, eps = 1e-5;
  /// Device runs: the 2C channel moments copied to the host (sized on the first step, reused after).
  std::shared_ptr<std::vector<double>> host_moments = std::make_shared<std::vector<double>>();

  template <std::size_t R>
  Dims<R> dims(const Dims<R>& x, const Dims<1>& g, const Dims<1>& b) const {
    if (x[1] != g[0] || x[1] != b[0])
      throw shape_error("loom::nn::batch_norm: input " + to_string(x) + " has " + std::to_string(x[1]) +
                        " channels but the parameters have " + to_string(g));
    return x;
  }
  /// Per channel: mean and inverse standard deviation used by the last forward; then (device runs) 2C
  /// doubles of channel sums (4C elements cover them for float and double).
  template <std::size_t R>
  std::size_t scratch(const Dims<R>& x, const Dims<1>&, const Dims<1>&) const { return 6 * x[1]; }

  /// x as [N, C, S] (S = product of the spatial extents); batch norm needs a contiguous input.
  template <class T, std::size_t R>
  static std::array<std::size_t, 3> layout(const loom::detail::View<T, R>& v, const char* what) {
    if (!v.data) return {0, 0, 0};
    if (!v.contiguous()) throw shape_error(std::string("loom::nn::batch_norm: the ") + what + " must be contiguous");
    std::size_t S = 1;
    for (std::size_t i = 2; i < R; ++i) S *= v.dims[i];
    return {v.dims[0], v.dims[1], S};
  }
  // Host: channels are independent (threads); within a channel, each sample's run of S contiguous
  // elements is one vectorized Eigen expression, its partial sums added up in double.
  template <class T, std::size_t R>
  void forward(const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x, const loom::detail::View<T, 1>& gamma,
               const loom::detail::View<T, 1>& beta, T* stats) const {
    const auto [N, C, S] = layout(x, "input");
    const double M = double(N * S);
    const bool training = mode->training;
    each_row(C, N * S, [&, N = N, C = C, S = S](std::size_t c) {
      auto run = [&](const T* base, std::size_t n) { return arr<true>(base + (n * C + c) * S, S, 1); };
      double mu = (*running_mean)[c], var = (*running_var)[c];
      if (training) {
        double s = 0, s2 = 0;
        for (std::size_t n = 0; n < N; ++n) s += double(run(x.data, n).sum());
        mu = s / M;
        for (std::size_t n = 0; n < N; ++n) s2 += double((run(x.data, n) - T(mu)).square().sum());
        var = s2 / M;
        update_running(c, mu, var, M);
      }
      const double inv = 1.0 / std::sqrt(var + eps);
      stats[2 * c] = T(mu);
      stats[2 * c + 1] = T(inv);
      const T scale = T(inv * gamma.data[c * gamma.strides[0]]), shift = beta.data[c * beta.strides[0]];
      for (std::size_t n = 0; n < N; ++n)
        arr<true>(out.data + (n * C + c) * S, S, 1) = (run(x.data, n) - T(mu)) * scale + shift;
    });
  }
  /// dx = gamma * inv * (g - mean(g) - xhat * mean(g * xhat)) in training mode (gamma * inv * g in eval).
  template <class T, std::size_t R>
  void backward(const loom::detail::View<T, R>& g, const loom::detail::View<T, R>&,
                const std::pair<loom::detail::View<T, R>, loom::detail::View<T, R>>& x,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& gamma,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& beta, T* stats) const {
    const auto [N, C, S] = layout(x.first, "input");
    layout(x.second, "input gradient");
    layout(g, "incoming gradient");
    const double M = double(N * S);
    const bool training = mode->training;
    each_row(C, N * S, [&, N = N, C = C, S = S](std::size_t c) {
      auto run = [&](const T* base, std::size_t n) { return arr<true>(base + (n * C + c) * S, S, 1); };
      const double mu = stats[2 * c], inv = stats[2 * c + 1], ga = gamma.first.data[c * gamma.first.strides[0]];
      double gs = 0, gxs = 0;  // sum of g, sum of g * xhat
      for (std::size_t n = 0; n < N; ++n) {
        const auto gr = run(g.data, n);
        gs += double(gr.sum());
        gxs += double((gr * (run(x.first.data, n) - T(mu))).sum());
      }
      gxs *= inv;
      if (gamma.second.data) gamma.second.data[c * gamma.second.strides[0]] += T(gxs);
      if (beta.second.data) beta.second.data[c * beta.second.strides[0]] += T(gs);
      if (!x.second.data) return;
      const T a = T(ga * inv), b = T(ga * inv * gs / M), k = T(ga * inv * inv * gxs / M);
      for (std::size_t n = 0; n < N; ++n) {
        auto dx = arr<true>(x.second.data + (n * C + c) * S, S, 1);
        if (training) dx += a * run(g.data, n) - b - (run(x.first.data, n) - T(mu)) * k;
        else dx += a * run(g.data, n);  // (the statistics are constants)
      }
    });
  }

  /// The running statistics after a training batch with mean mu and (biased) variance var over M terms.
  void update_running(std::size_t c, double mu, double var, double M) const {
    (*running_mean)[c] = (1 - momentum) * (*running_mean)[c] + momentum * mu;
    (*running_var)[c] = (1 - momentum) * (*running_var)[c] + momentum * (M > 1 ? var * M / (M - 1) : var);
  }
  template <class Dev, class T, std::size_t R>
    requires(!HostDevice<Dev>)
  void forward(on<Dev>, const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x,
               const loom::detail::View<T, 1>& gamma, const loom::detail::View<T, 1>& beta, T* stats) const {
    using namespace norm_kernels;
    const auto [N, C, S] = layout(x, "input");
    const double M = double(N * S);
    double* sums = double_workspace(stats, 2 * C);
    auto& mv = *host_moments;  // the running statistics live on the host (checkpoints, eval)
    mv.resize(2 * C);
    if (mode->training) {
      const ChannelIndex at{C, S};
      backend::device::segment_sums(C, N * S, ChannelValues<T>{at, x.data}, sums);
      backend::device::segment_sums(C, N * S, ChannelSquares<T>{at, x.data, sums, 1 / M}, sums + C);
      backend::device::for_n(C, ChannelMoments<T>{sums, C, 1 / M, eps, stats});
      loom::detail::DeviceMemory<Dev>::to_host(mv.data(), sums, 2 * C);
      for (std::size_t c = 0; c < C; ++c) update_running(c, mv[c], mv[C + c], M);
    } else {  // [running mean | running variance] to the device, turned into stats there
      std::copy(running_mean->begin(), running_mean->end(), mv.begin());
      std::copy(running_var->begin(), running_var->end(), mv.begin() + static_cast<std::ptrdiff_t>(C));
      loom::detail::DeviceMemory<Dev>::from_host(sums, mv.data(), 2 * C);
      backend::device::for_n(C, ChannelMoments<T>{sums, C, 1.0, eps, stats});
    }
    backend::device::for_n(N * C * S, Normalize<T>{C, S, x.data, out.data, stats, gamma.data, gamma.strides[0], beta.data,
                                                   beta.strides[0]});
  }
  template <class Dev, class T, std::size_t R>
    requires(!HostDevice<Dev>)
  void backward(on<Dev>, const loom::detail::View<T, R>& g, const loom::detail::View<T, R>&,
                const std::pair<loom::detail::View<T, R>, loom::detail::View<T, R>>& x,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& gamma,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& beta, T* stats) const {
    using namespace norm_kernels;
    const auto [N, C, S] = layout(x.first, "input");
    layout(x.second, "input gradient");
    const ChannelIndex at{C, S};
    double* sums = double_workspace(stats, 2 * C);  // [sum g | sum g * xhat]
    backend::device::segment_sums(C, N * S, ChannelValues<T>{at, g.data}, sums);
    backend::device::segment_sums(C, N * S, ChannelGradXhat<T>{at, g.data, x.first.data, stats}, sums + C);
    if (gamma.second.data || beta.second.data)
      backend::device::for_n(C, AffineGrads<T>{sums + C, sums, gamma.second.data, gamma.second.strides[0],
                                               beta.second.data, beta.second.strides[0]});
    if (x.second.data)
      backend::device::for_n(N * C * S, ChannelInputGrad<T>{C, S, g.data, x.first.data, x.second.data, stats, sums,
                                                            gamma.first.data, gamma.first.strides[0], double(N * S),
                                                            mode->training});
  }
};

/// y = x * mask / (1 - p), mask ~ Bernoulli(1 - p) drawn from the layer's generator each training step.
struct Dropout {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "dropout";
  template <class X>
  using shape = X;
  std::shared_ptr<Mode> mode;
  std::shared_ptr<Generator> gen;
  double p = 0.5;
  template <std::size_t R>
  Dims<R> dims(const Dims<R>& x) const { return x; }
  template <std::size_t R>
  std::size_t scratch(const Dims<R>& x) const { return numel(x); }
  /// This forward's seed (a fresh one per training step); 0 and unused when the mask is all ones.
  std::uint64_t draw_seed() const { return active() ? gen->next() : 0; }
  bool active() const { return mode->training && p != 0; }
  template <class T, std::size_t R>
  void forward(const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x, T* mask) const {
    const bool on = active();
    const std::uint64_t seed = draw_seed();
    const T keep = T(1 / (1 - p));
    std::size_t k = 0;
    loom::detail::for_each_offset(x.dims, x.strides, [&](std::ptrdiff_t o) {
      mask[k] = on ? norm_kernels::drop_mask(seed, k, p, keep) : T{1};
      out.data[k] = x.data[o] * mask[k];
      ++k;
    });
  }
  template <class T, std::size_t R>
  void backward(const loom::detail::View<T, R>& g, const loom::detail::View<T, R>&,
                const std::pair<loom::detail::View<T, R>, loom::detail::View<T, R>>& x, T* mask) const {
    if (!x.second.data) return;
    std::size_t k = 0;
    loom::detail::for_each_offset(x.second.dims, x.second.strides, [&](std::ptrdiff_t o) {
      x.second.data[o] += g.data[k] * mask[k];
      ++k;
    });
  }
  template <class Dev, class T, std::size_t R>
    requires(!HostDevice<Dev>)
  void forward(on<Dev>, const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x, T* mask) const {
    const bool on = active();
    const std::uint64_t seed = draw_seed();
    backend::device::for_n(x.size(), norm_kernels::DropForward<T, R>{x.data, loom::detail::Layout<R>::of(x), out.data, mask,
                                                                    seed, p, T(1 / (1 - p)), on});
  }
  template <class Dev, class T, std::size_t R>
    requires(!HostDevice<Dev>)
  void backward(on<Dev>, const loom::detail::View<T, R>& g, const loom::detail::View<T, R>&,
                const std::pair<loom::detail::View<T, R>, loom::detail::View<T, R>>& x, T* mask) const {
    if (!x.second.data) return;
    backend::device::for_n(x.second.size(),
                           norm_kernels::DropBackward<T, R>{g.data, mask, x.second.data, loom::detail::Layout<R>::of(x.second)});
  }
};

/// Normalizes each row of the last axis:  y = xhat * gamma + beta,  xhat = (x - mu) * rstd
///   dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = g * gamma
///   dgamma = sum over rows of g * xhat,  dbeta = sum over rows of g
struct LayerNorm {
  static constexpr Kind kind = Kind::kernel;
  static constexpr bool differentiable = true;
  static constexpr std::string_view name = "layer_norm";
  template <class X, class G, class B>
  using shape = X;
  double eps = 1e-5;
  template <std::size_t R>
  Dims<R> dims(const Dims<R>& x, const Dims<1>& g, const Dims<1>& b) const {
    if (x[R - 1] != g[0] || g != b)
      throw shape_error("loom::nn::layer_norm: input " + to_string(x) + " and parameters " + to_string(g) + " disagree");
    return x;
  }
  /// Mean and inverse standard deviation of every row.
  template <std::size_t R>
  std::size_t scratch(const Dims<R>& x, const Dims<1>&, const Dims<1>&) const {
    return 2 * numel(x) / std::max<std::size_t>(1, x[R - 1]) + 4 * x[R - 1];  // (mean, rstd) per row; 2D doubles (device)
  }
  template <class T, std::size_t R>
  static bool unit_rows(const loom::detail::View<T, R>& v) { return v.strides[R - 1] == 1 || v.dims[R - 1] <= 1; }

  template <class T, std::size_t R>
  void forward(const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x, const loom::detail::View<T, 1>& g,
               const loom::detail::View<T, 1>& b, T* stats) const {
    if (unit_rows(x) && unit_rows(g) && unit_rows(b)) forward_rows<true>(out, x, g, b, stats);
    else forward_rows<false>(out, x, g, b, stats);
  }
  template <bool Unit, class T, std::size_t R>
  void forward_rows(const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x,
                    const loom::detail::View<T, 1>& g, const loom::detail::View<T, 1>& b, T* stats) const {
    const std::size_t D = x.dims[R - 1];
    const auto gamma = arr<Unit>(static_cast<const T*>(g.data), D, g.strides[0]);
    const auto beta = arr<Unit>(static_cast<const T*>(b.data), D, b.strides[0]);
    each_row(numel(x.dims) / std::max<std::size_t>(1, D), D, [&](std::size_t k) {
      const auto row = arr<Unit>(static_cast<const T*>(x.data + loom::detail::row_offset(k, x)), D, x.strides[R - 1]);
      const T mu = row.sum() / T(D);
      const T rstd = T(1) / std::sqrt((row - mu).square().sum() / T(D) + T(eps));
      stats[2 * k] = mu, stats[2 * k + 1] = rstd;
      arr<true>(out.data + k * D, D, 1) = (row - mu) * rstd * gamma + beta;  // the kernel's own buffer is contiguous
    });
  }
  template <class T, std::size_t R>
  void backward(const loom::detail::View<T, R>& gy, const loom::detail::View<T, R>& y,
                const std::pair<loom::detail::View<T, R>, loom::detail::View<T, R>>& x,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& g,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& b, T* stats) const {
    const bool unit = unit_rows(gy) && unit_rows(x.first) && unit_rows(g.first) && (!x.second.data || unit_rows(x.second)) &&
                      (!g.second.data || unit_rows(g.second)) && (!b.second.data || unit_rows(b.second));
    if (unit) backward_rows<true>(gy, y, x, g, b, stats);
    else backward_rows<false>(gy, y, x, g, b, stats);
  }
  template <bool Unit, class T, std::size_t R>
  void backward_rows(const loom::detail::View<T, R>& gy, const loom::detail::View<T, R>&,
                     const std::pair<loom::detail::View<T, R>, loom::detail::View<T, R>>& x,
                     const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& g,
                     const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& b, T* stats) const {
    const std::size_t D = x.first.dims[R - 1], rows = numel(x.first.dims) / std::max<std::size_t>(1, D);
    const auto gamma = arr<Unit>(static_cast<const T*>(g.first.data), D, g.first.strides[0]);
    auto row_of = [&](const loom::detail::View<T, R>& v, std::size_t k) {
      return arr<Unit>(static_cast<const T*>(v.data + loom::detail::row_offset(k, v)), D, v.strides[R - 1]);
    };
    if (x.second.data)  // rows are independent: threads
      each_row(rows, D, [&](std::size_t k) {
        const auto row = row_of(x.first, k), grow = row_of(gy, k);
        const T mu = stats[2 * k], rstd = stats[2 * k + 1];
        const T m1 = (grow * gamma).sum() / T(D), m2 = (grow * gamma * (row - mu)).sum() * rstd / T(D);
        arr<Unit>(x.second.data + loom::detail::row_offset(k, x.second), D, x.second.strides[R - 1]) +=
            rstd * (grow * gamma - m1 - (row - mu) * (rstd * m2));
      });
    if (!g.second.data && !b.second.data) return;
    // the parameters' gradients sum over rows: one pass, in row order
    for (std::size_t k = 0; k < rows; ++k) {
      const auto row = row_of(x.first, k), grow = row_of(gy, k);
      const T mu = stats[2 * k], rstd = stats[2 * k + 1];
      if (g.second.data) arr<Unit>(g.second.data, D, g.second.strides[0]) += grow * (row - mu) * rstd;
      if (b.second.data) arr<Unit>(b.second.data, D, b.second.strides[0]) += grow;
    }
  }

  template <class Dev, class T, std::size_t R>
    requires(!HostDevice<Dev>)
  void forward(on<Dev>, const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x,
               const loom::detail::View<T, 1>& g, const loom::detail::View<T, 1>& b, T* stats) const {
    const std::size_t D = x.dims[R - 1];
    backend::device::for_n(numel(x.dims) / std::max<std::size_t>(1, D),
                           norm_kernels::RowForward<T, R>{x.data, loom::detail::Layout<R>::of(x), D, g.data, g.strides[0], b.data,
                                                          b.strides[0], out.data, stats, T(eps)});
  }
  template <class Dev, class T, std::size_t R>
    requires(!HostDevice<Dev>)
  void backward(on<Dev>, const loom::detail::View<T, R>& gy, const loom::detail::View<T, R>&,
                const std::pair<loom::detail::View<T, R>, loom::detail::View<T, R>>& x,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& g,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& b, T* stats) const {
    using loom::detail::Layout;
    const std::size_t D = x.first.dims[R - 1], rows = numel(x.first.dims) / std::max<std::size_t>(1, D);
    const auto xl = Layout<R>::of(x.first), gl = Layout<R>::of(gy);
    if (x.second.data)
      backend::device::for_n(rows, norm_kernels::RowInputGrad<T, R>{x.first.data, xl, gy.data, gl, x.second.data,
                                                                   Layout<R>::of(x.second), D, g.first.data, g.first.strides[0], stats});
    if (!g.second.data && !b.second.data) return;
    double* sums = norm_kernels::double_workspace(stats, 2 * rows);  // [sum g | sum g * xhat] per column
    backend::device::segment_sums(D, rows, norm_kernels::ColumnTerm<T, R>{x.first.data, xl, gy.data, gl, stats, false}, sums);
    backend::device::segment_sums(D, rows, norm_kernels::ColumnTerm<T, R>{x.first.data, xl, gy.data, gl, stats, true},
                                  sums + D);
    backend::device::for_n(D, norm_kernels::AffineGrads<T>{sums + D, sums, g.second.data, g.second.strides[0],
                                                           b.second.data, b.second.strides[0]});
  }
};

}  // namespace ops

/// Batch normalization over the channel axis 1 of [N, C] or [N, C, H, W] (PyTorch's defaults:
/// momentum 0.1, eps 1e-5, gamma 1, beta 0, running mean 0 / variance 1). On a device the parameters
/// live there and the running statistics stay on the host (2C numbers copied back per training step).
template <std::size_t C, class T = float, class D = cpu>
struct BatchNorm {
  static constexpr std::size_t in_features = C, out_features = C;
  static constexpr std::size_t num_params = 2 * C;
  static constexpr std::string_view name = "BatchNorm";
  template <class D2>
  using on_device = BatchNorm<C, T, D2>;
  Param<T, Shape<C>, D> weight{ones<T, Shape<C>, D>()};
  Param<T, Shape<C>, D> bias;
  std::shared_ptr<Mode> mode = std::make_shared<Mode>();
  std::shared_ptr<std::vector<double>> running_mean = std::make_shared<std::vector<double>>(C, 0.0);
  std::shared_ptr<std::vector<double>> running_var = std::make_shared<std::vector<double>>(C, 1.0);
  BatchNorm() = default;
  explicit BatchNorm(Generator&) {}
  template <Expression X>
  auto operator()(const X& x) const {
    static_assert(shape_t<X>::rank >= 2, "loom::nn::BatchNorm: needs an input [N, C, ...]");
    return make_node(ops::BatchNorm{mode, running_mean, running_var}, x, weight, bias);
  }
  void set_training(bool on) { mode->training = on; }
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    f(prefix + "weight", weight);
    f(prefix + "bias", bias);
  }
  /// Non-trainable state saved with checkpoints.
  template <class F>
  void visit_buffers(F&& f, const std::string& prefix) const {
    f(prefix + "running_mean", *running_mean);
    f(prefix + "running_var", *running_var);
  }
};
template <std::size_t C, class T = float, class D = cpu>
using BatchNorm1d = BatchNorm<C, T, D>;
template <std::size_t C, class T = float, class D = cpu>
using BatchNorm2d = BatchNorm<C, T, D>;

/// Layer normalization over the last axis: (x - mean) / sqrt(var + eps) * gamma + beta, one fused
/// kernel (the mean and inverse deviation of each row are kept for the backward; x is read once, so
/// a residual stream feeding it stays one node of the expression).
template <std::size_t D, class T = float, class Dev = cpu>
struct LayerNorm {
  static constexpr std::size_t in_features = D, out_features = D;
  static constexpr std::size_t num_params = 2 * D;
  static constexpr std::string_view name = "LayerNorm";
  template <class D2>
  using on_device = LayerNorm<D, T, D2>;
  Param<T, Shape<D>, Dev> weight{ones<T, Shape<D>, Dev>()};
  Param<T, Shape<D>, Dev> bias;
  double eps = 1e-5;
  LayerNorm() = default;
  explicit LayerNorm(Generator&) {}
  template <Expression X>
  auto operator()(const X& x) const {
    static_assert(shape_t<X>::extents[shape_t<X>::rank - 1] == D || shape_t<X>::extents[shape_t<X>::rank - 1] == dyn,
                  "loom::nn::LayerNorm: the input's last extent differs from the normalized size");
    return make_node(ops::LayerNorm{eps}, x, weight, bias);
  }
  template <class F>
  void visit(F&& f, const std::string& prefix) const {
    f(prefix + "weight", weight);
    f(prefix + "bias", bias);
  }
};

/// Zeroes each element with probability P (per mille, so it can be a template argument) while
/// training; the identity in eval mode.
template <std::size_t PerMille = 500>
struct Dropout {
  static constexpr std::size_t in_features = any_features, out_features = any_features;
  static constexpr std::size_t num_params = 0;
  static constexpr std::string_view name = "Dropout";
  std::shared_ptr<Mode> mode = std::make_shared<Mode>();
  std::shared_ptr<Generator> gen;
  explicit Dropout(Generator& g) : gen(std::make_shared<Generator>(g.next())) {}
  template <Expression X>
  auto operator()(const X& x) const { return make_node(ops::Dropout{mode, gen, PerMille / 1000.0}, x); }
  void set_training(bool on) { mode->training = on; }
  template <class F>
  void visit(F&&, const std::string&) const {}
};

}  // namespace loom::nn
