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

#include "../ops/reduce.hpp"
#include "../ops/shape.hpp"
#include "layers.hpp"

namespace loom::nn {

namespace ops {

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

  template <std::size_t R>
  Dims<R> dims(const Dims<R>& x, const Dims<1>& g, const Dims<1>& b) const {
    if (x[1] != g[0] || x[1] != b[0])
      throw shape_error("loom::nn::batch_norm: input " + to_string(x) + " has " + std::to_string(x[1]) +
                        " channels but the parameters have " + to_string(g));
    return x;
  }
  /// Per channel: mean and inverse standard deviation used by the last forward.
  template <std::size_t R>
  std::size_t scratch(const Dims<R>& x, const Dims<1>&, const Dims<1>&) const { return 2 * x[1]; }

  /// x as [N, C, S] (S = product of the spatial extents); batch norm needs a contiguous input.
  template <class T, std::size_t R>
  static std::array<std::size_t, 3> layout(const loom::detail::View<T, R>& v, const char* what) {
    if (!v.data) return {0, 0, 0};
    if (!v.contiguous()) throw shape_error(std::string("loom::nn::batch_norm: the ") + what + " must be contiguous");
    std::size_t S = 1;
    for (std::size_t i = 2; i < R; ++i) S *= v.dims[i];
    return {v.dims[0], v.dims[1], S};
  }
  template <class T, std::size_t R>
  void forward(const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x, const loom::detail::View<T, 1>& gamma,
               const loom::detail::View<T, 1>& beta, T* stats) const {
    const auto [N, C, S] = layout(x, "input");
    const double M = double(N * S);
    for (std::size_t c = 0; c < C; ++c) {
      double mu = (*running_mean)[c], var = (*running_var)[c];
      if (mode->training) {
        double s = 0, s2 = 0;
        for (std::size_t n = 0; n < N; ++n)
          for (std::size_t k = 0; k < S; ++k) s += x.data[(n * C + c) * S + k];
        mu = s / M;
        for (std::size_t n = 0; n < N; ++n)
          for (std::size_t k = 0; k < S; ++k) {
            const double d = x.data[(n * C + c) * S + k] - mu;
            s2 += d * d;
          }
        var = s2 / M;
        (*running_mean)[c] = (1 - momentum) * (*running_mean)[c] + momentum * mu;
        (*running_var)[c] = (1 - momentum) * (*running_var)[c] + momentum * (M > 1 ? var * M / (M - 1) : var);
      }
      const double inv = 1.0 / std::sqrt(var + eps), ga = gamma.data[c * gamma.strides[0]], be = beta.data[c * beta.strides[0]];
      stats[2 * c] = T(mu);
      stats[2 * c + 1] = T(inv);
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t k = 0; k < S; ++k) {
          const std::size_t i = (n * C + c) * S + k;
          out.data[i] = T((x.data[i] - mu) * inv * ga + be);
        }
    }
  }
  template <class T, std::size_t R>
  void backward(const loom::detail::View<T, R>& g, const loom::detail::View<T, R>&,
                const std::pair<loom::detail::View<T, R>, loom::detail::View<T, R>>& x,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& gamma,
                const std::pair<loom::detail::View<T, 1>, loom::detail::View<T, 1>>& beta, T* stats) const {
    const auto [N, C, S] = layout(x.first, "input");
    layout(x.second, "input gradient");
    const double M = double(N * S);
    for (std::size_t c = 0; c < C; ++c) {
      const double mu = stats[2 * c], inv = stats[2 * c + 1], ga = gamma.first.data[c * gamma.first.strides[0]];
      double gs = 0, gxs = 0;
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t k = 0; k < S; ++k) {
          const std::size_t i = (n * C + c) * S + k;
          gs += g.data[i];
          gxs += g.data[i] * (x.first.data[i] - mu) * inv;
        }
      if (gamma.second.data) gamma.second.data[c * gamma.second.strides[0]] += T(gxs);
      if (beta.second.data) beta.second.data[c * beta.second.strides[0]] += T(gs);
      if (!x.second.data) continue;
      for (std::size_t n = 0; n < N; ++n)
        for (std::size_t k = 0; k < S; ++k) {
          const std::size_t i = (n * C + c) * S + k;
          const double xhat = (x.first.data[i] - mu) * inv;
          x.second.data[i] += T(mode->training ? ga * inv / M * (M * g.data[i] - gs - xhat * gxs) : ga * inv * g.data[i]);
        }
    }
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
  template <class T, std::size_t R>
  void forward(const loom::detail::View<T, R>& out, const loom::detail::View<T, R>& x, T* mask) const {
    const T keep = T(1 / (1 - p));
    std::size_t k = 0;
    loom::detail::for_each_offset(x.dims, x.strides, [&](std::ptrdiff_t o) {
      mask[k] = (!mode->training || p == 0) ? T{1} : (gen->uniform() >= p ? keep : T{0});
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
  std::size_t scratch(const Dims<R>& x, const Dims<1>&, const Dims<1>&) const { return 2 * numel(x) / std::max<std::size_t>(1, x[R - 1]); }
  /// Runs f(row k) for every row, on OpenMP threads when there is enough work.
  template <class F>
  static void each_row(std::size_t rows, std::size_t D, F&& f) {
#ifdef _OPENMP
    if (rows > 1 && rows * D >= (std::size_t{1} << 15) && omp_get_max_threads() > 1 && !omp_in_parallel()) {
      const auto n = static_cast<std::ptrdiff_t>(rows);
#pragma omp parallel for schedule(static)
      for (std::ptrdiff_t k = 0; k < n; ++k) f(static_cast<std::size_t>(k));
      return;
    }
#endif
    for (std::size_t k = 0; k < rows; ++k) f(k);
  }
  /// A row (or parameter vector) as an Eigen array: compile-time unit stride when Unit (vectorized).
  template <bool Unit, class T>
  static auto arr(T* p, std::size_t n, std::ptrdiff_t stride) {
    using A = Eigen::Array<std::remove_const_t<T>, Eigen::Dynamic, 1>;
    using M = std::conditional_t<std::is_const_v<T>, const A, A>;
    if constexpr (Unit) return Eigen::Map<M>(p, static_cast<Eigen::Index>(n));
    else return Eigen::Map<M, 0, Eigen::InnerStride<>>(p, static_cast<Eigen::Index>(n), Eigen::InnerStride<>(stride));
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
};

}  // namespace ops

/// Batch normalization over the channel axis 1 of [N, C] or [N, C, H, W] (PyTorch's defaults:
/// momentum 0.1, eps 1e-5, gamma 1, beta 0, running mean 0 / variance 1).
template <std::size_t C, class T = float>
struct BatchNorm {
  static constexpr std::size_t in_features = C, out_features = C;
  static constexpr std::size_t num_params = 2 * C;
  static constexpr std::string_view name = "BatchNorm";
  Param<T, Shape<C>> weight{ones<T, Shape<C>>()};
  Param<T, Shape<C>> bias;
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
template <std::size_t C, class T = float>
using BatchNorm1d = BatchNorm<C, T>;
template <std::size_t C, class T = float>
using BatchNorm2d = BatchNorm<C, T>;

/// Layer normalization over the last axis: (x - mean) / sqrt(var + eps) * gamma + beta, one fused
/// kernel (the mean and inverse deviation of each row are kept for the backward; x is read once, so
/// a residual stream feeding it stays one node of the expression).
template <std::size_t D, class T = float>
struct LayerNorm {
  static constexpr std::size_t in_features = D, out_features = D;
  static constexpr std::size_t num_params = 2 * D;
  static constexpr std::string_view name = "LayerNorm";
  Param<T, Shape<D>> weight{ones<T, Shape<D>>()};
  Param<T, Shape<D>> bias;
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
