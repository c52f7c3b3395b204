// loom/core/tensor.hpp — owning, aligned, row-major storage with strided views that never copy.
#pragma once
#include <Eigen/Core>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <memory>
#include <new>
#include <ostream>
#include <sstream>
#include <utility>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "device.hpp"
#include "../expr/slots.hpp"
#include "dtype.hpp"
#include "random.hpp"
#include "shape.hpp"

namespace loom {

inline constexpr std::size_t tensor_alignment = 64;

namespace detail {

/// Calls f(offset) for every element of a strided layout, in row-major order.
template <std::size_t R, class F>
void for_each_offset(const Dims<R>& d, const Strides<R>& s, F&& f) {
  if constexpr (R == 0) {
    f(std::ptrdiff_t{0});
  } else {
    for (auto e : d)
      if (e == 0) return;
    Dims<R> idx{};
    std::ptrdiff_t off = 0;
    const std::size_t inner = d[R - 1];
    const std::ptrdiff_t is = s[R - 1];
    for (;;) {
      for (std::size_t j = 0; j < inner; ++j) f(off + static_cast<std::ptrdiff_t>(j) * is);
      std::size_t ax = R - 1;
      for (;;) {
        if (ax == 0) return;
        --ax;
        off += s[ax];
        if (++idx[ax] < d[ax]) break;
        off -= s[ax] * static_cast<std::ptrdiff_t>(d[ax]);
        idx[ax] = 0;
      }
    }
  }
}

/// 64-byte aligned, uninitialized storage for n values of T.
template <class T>
std::shared_ptr<T> allocate_aligned(std::size_t n) {
  if (n == 0) n = 1;
  T* p = static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t{tensor_alignment}));
  return std::shared_ptr<T>(p, [](T* q) { ::operator delete(q, std::align_val_t{tensor_alignment}); });
}

template <ShapeType S, std::size_t... I>
constexpr auto permute_shape(std::index_sequence<I...>) -> Shape<S::extents[I]...>;

template <ShapeType S, std::size_t Axis>
struct set_dyn {
  static constexpr auto value = [] {
    auto e = S::extents;
    e[Axis] = dyn;
    return e;
  }();
};

constexpr std::size_t norm_axis(int axis, std::size_t rank) {
  return axis < 0 ? static_cast<std::size_t>(axis + static_cast<int>(rank)) : static_cast<std::size_t>(axis);
}

}  // namespace detail

namespace detail {
/// Host memory: aligned allocation, fills and copies with the C library.
template <>
struct DeviceMemory<cpu> {
  static constexpr bool enabled = true;
  template <class T>
  static std::shared_ptr<T> allocate(std::size_t n) { return allocate_aligned<T>(n); }
  template <class T>
  static void fill(T* p, std::size_t n, T v) { std::fill_n(p, n, v); }
  /// Copies n values between two contiguous ranges of this device (they may overlap).
  template <class T>
  static void copy(T* dst, const T* src, std::size_t n) { std::memmove(dst, src, n * sizeof(T)); }
  /// Clears n bytes; a large range (a program's gradient buffers) is split over the OpenMP threads.
  static void zero_bytes(void* p, std::size_t n) {
#ifdef _OPENMP
    if (n >= (std::size_t{1} << 20) && omp_get_max_threads() > 1 && !omp_in_parallel()) {
#pragma omp parallel
      {
        const auto t = static_cast<std::size_t>(omp_get_thread_num()), nt = static_cast<std::size_t>(omp_get_num_threads());
        const std::size_t lines = (n + 63) / 64, b = std::min(n, lines * t / nt * 64), e = std::min(n, lines * (t + 1) / nt * 64);
        std::memset(static_cast<char*>(p) + b, 0, e - b);
      }
      return;
    }
#endif
    std::memset(p, 0, n);
  }
  /// Host <-> this device (for the host these are plain copies).
  template <class T>
  static void to_host(T* host, const T* src, std::size_t n) { std::memcpy(host, src, n * sizeof(T)); }
  template <class T>
  static void from_host(T* dst, const T* host, std::size_t n) { std::memcpy(dst, host, n * sizeof(T)); }
};
}  // namespace detail

/// A tensor of element type T, static shape S (extents may be `dyn`) on device D. Copies share storage
/// (like a view); `clone()` copies the data. Row-major; views carry arbitrary (even zero or negative)
/// strides.
template <Dtype T, ShapeType S, Device D = cpu>
class Tensor {
 public:
  using value_type = T;
  using shape_type = S;
  using device_type = D;
  static constexpr std::size_t rank = S::rank;
  using dims_type = Dims<rank>;
  using strides_type = Strides<rank>;

  /// Static shapes allocate (zero-filled); shapes with `dyn` start empty (extent 0).
  Tensor() : Tensor(S::dims_or(0)) {}
  explicit Tensor(const dims_type& dims) : Tensor(uninitialized(dims)) { Mem::fill(data_, numel(dims), T{}); }
  /// Allocated but not initialized: for code that writes every element next (copies, transfers).
  static Tensor uninitialized(const dims_type& dims) {
    check_dims<S>(dims, "loom::Tensor");
    auto storage = Mem::template allocate<T>(numel(dims));
    T* p = storage.get();
    return wrap(p, dims, contiguous_strides(dims), std::move(storage));
  }
  /// A tensor with the given extents holding a copy of `values` (row-major).
  Tensor(const dims_type& dims, std::initializer_list<T> values) : Tensor(dims) {
    if (values.size() != size())
      throw shape_error("loom::Tensor: " + std::to_string(values.size()) + " values for shape " + to_string(dims));
    Mem::from_host(data_, values.begin(), values.size());
  }

  /// A view of memory the caller owns (no copy; the caller keeps it alive).
  static Tensor wrap(T* data, const dims_type& dims) { return wrap(data, dims, contiguous_strides(dims)); }
  static Tensor wrap(T* data, const dims_type& dims, const strides_type& strides,
                     std::shared_ptr<void> owner = nullptr) {
    check_dims<S>(dims, "loom::Tensor::wrap");
    Tensor t(no_alloc{});
    t.owner_ = std::move(owner);
    t.data_ = data;
    t.dims_ = dims;
    t.strides_ = strides;
    return t;
  }

  T* data() const { return data_; }
  const dims_type& dims() const { return dims_; }
  const strides_type& strides() const { return strides_; }
  std::size_t dim(std::size_t i) const { return dims_[i]; }
  std::size_t size() const { return numel(dims_); }
  const std::shared_ptr<void>& owner() const { return owner_; }
  bool is_contiguous() const {
    std::ptrdiff_t acc = 1;
    for (std::size_t i = rank; i-- > 0;) {
      if (dims_[i] != 1 && strides_[i] != acc) return false;
      acc *= static_cast<std::ptrdiff_t>(dims_[i]);
    }
    return true;
  }

  template <std::integral... I>
    requires HostDevice<D>
  T& operator()(I... idx) const {
    static_assert(sizeof...(I) == rank, "loom::Tensor::operator(): number of indices differs from the rank");
    std::ptrdiff_t off = 0, k = 0;
    ((off += static_cast<std::ptrdiff_t>(idx) * strides_[k++]), ...);
    return data_[off];
  }
  T& at(const dims_type& idx) const
    requires HostDevice<D>
  {
    std::ptrdiff_t off = 0;
    for (std::size_t k = 0; k < rank; ++k) {
      if (idx[k] >= dims_[k])
        throw shape_error("loom::Tensor::at: index " + to_string(idx) + " outside shape " + to_string(dims_));
      off += static_cast<std::ptrdiff_t>(idx[k]) * strides_[k];
    }
    return data_[off];
  }
  /// The single value of a one-element tensor.
  T item() const {
    if (size() != 1) throw shape_error("loom::Tensor::item: tensor of shape " + to_string(dims_) + " is not a scalar");
    T v{};
    Mem::to_host(&v, data_, 1);
    return v;
  }

  /// Calls f(element&) in row-major order (host tensors; copy a device tensor with to<cpu>() first).
  template <class F>
    requires HostDevice<D>
  void for_each(F&& f) const {
    detail::for_each_offset(dims_, strides_, [&](std::ptrdiff_t o) { f(data_[o]); });
  }
  const Tensor& fill(T v) const {
    if constexpr (HostDevice<D>) for_each([v](T& x) { x = v; });
    else if (is_contiguous()) Mem::fill(data_, size(), v);
    else Mem::fill_strided(view(), v);
    return *this;
  }
  /// Copies `src` (same extents, any strides) into this tensor's elements.
  template <ShapeType S2>
  const Tensor& assign(const Tensor<T, S2, D>& src) const {
    static_assert(S2::rank == rank, "loom::Tensor::assign: ranks differ");
    if (src.dims() != dims_)
      throw shape_error("loom::Tensor::assign: shapes " + to_string(dims_) + " and " + to_string(src.dims()) + " differ");
    T* out = data_;
    const T* in = src.data();
    if (is_contiguous() && src.is_contiguous()) {
      Mem::copy(out, in, size());
      return *this;
    }
    if constexpr (!HostDevice<D>) {
      Mem::assign_strided(view(), src.view());
    } else {
      std::vector<T> tmp;  // general strided copy; the source may overlap the destination
      tmp.reserve(size());
      src.for_each([&](T& x) { tmp.push_back(x); });
      std::size_t k = 0;
      for_each([&](T& x) { x = tmp[k++]; });
    }
    return *this;
  }
  /// A contiguous copy with its own storage.
  Tensor clone() const {
    Tensor t = uninitialized(dims_);
    t.assign(*this);
    return t;
  }
  /// This tensor if already contiguous, else a contiguous copy.
  Tensor contiguous() const { return is_contiguous() ? *this : clone(); }
  /// A contiguous copy on device D2 (an explicit transfer; on the same device, a clone).
  template <Device D2>
  Tensor<T, S, D2> to() const {
    if constexpr (std::is_same_v<D, D2>) {
      return clone();
    } else {
      const Tensor src = contiguous();
      auto dst = Tensor<T, S, D2>::uninitialized(dims_);
      if constexpr (HostDevice<D>) detail::DeviceMemory<D2>::from_host(dst.data(), src.data(), size());
      else Mem::to_host(dst.data(), src.data(), size());
      return dst;
    }
  }
  /// The tensor's memory as a typed strided view (what kernels take).
  detail::View<T, rank> view() const { return {data_, dims_, strides_}; }

  // ---- views (no copies) ----------------------------------------------------------------------------
  /// New static shape S2 (its `dyn` extents given by `dims`); needs a contiguous tensor.
  template <ShapeType S2>
  Tensor<T, S2, D> reshape(const Dims<S2::rank>& dims = S2::dims_or(0)) const {
    static_assert(!(S::is_static && S2::is_static) || S::static_size == S2::static_size,
                  "loom::Tensor::reshape: element counts differ");
    if (numel(dims) != size())
      throw shape_error("loom::Tensor::reshape: cannot reshape " + to_string(dims_) + " to " + to_string(dims));
    if (!is_contiguous())
      throw shape_error("loom::Tensor::reshape: tensor of shape " + to_string(dims_) +
                        " is not contiguous; call contiguous() first");
    return Tensor<T, S2, D>::wrap(data_, dims, contiguous_strides(dims), owner_);
  }
  template <std::size_t... I>
  auto permute() const {
    static_assert(sizeof...(I) == rank, "loom::Tensor::permute: give one axis per dimension");
    using S2 = decltype(detail::permute_shape<S>(std::index_sequence<I...>{}));
    return Tensor<T, S2, D>::wrap(data_, Dims<rank>{dims_[I]...}, Strides<rank>{strides_[I]...}, owner_);
  }
  /// Swaps axes A and B (default: the last two).
  template <int A = -2, int B = -1>
  auto transpose() const {
    constexpr std::size_t a = detail::norm_axis(A, rank), b = detail::norm_axis(B, rank);
    static_assert(a < rank && b < rank, "loom::Tensor::transpose: axis out of range");
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return permute<(I == a ? b : I == b ? a : I)...>();
    }(std::make_index_sequence<rank>{});
  }
  /// Broadcast (stride 0) to static shape S2 with run-time extents `dims`.
  template <ShapeType S2>
  Tensor<T, S2, D> broadcast_to(const Dims<S2::rank>& dims = S2::dims_or(0)) const {
    static_assert(S2::rank >= rank, "loom::Tensor::broadcast_to: target rank is lower");
    detail::check_broadcast<broadcastable_v<S, S2> && std::is_same_v<broadcast_t<S, S2>, S2>, S, S2>{};
    if (broadcast_dims(dims_, dims, "loom::Tensor::broadcast_to") != dims)
      throw shape_error("loom::Tensor::broadcast_to: cannot broadcast " + to_string(dims_) + " to " + to_string(dims));
    return Tensor<T, S2, D>::wrap(data_, dims, broadcast_strides(dims_, strides_, dims), owner_);
  }
  /// Elements start, start+step, ... < stop along Axis (negative start/stop count from the end).
  template <int Axis>
  auto slice(std::ptrdiff_t start, std::ptrdiff_t stop, std::ptrdiff_t step = 1) const {
    constexpr std::size_t ax = detail::norm_axis(Axis, rank);
    static_assert(ax < rank, "loom::Tensor::slice: axis out of range");
    using S2 = detail::shape_from_array<detail::set_dyn<S, ax>>;
    const auto n = static_cast<std::ptrdiff_t>(dims_[ax]);
    if (step <= 0) throw shape_error("loom::Tensor::slice: step must be positive (use flip to reverse)");
    if (start < 0) start += n;
    if (stop < 0) stop += n;
    start = std::clamp<std::ptrdiff_t>(start, 0, n);
    stop = std::clamp<std::ptrdiff_t>(stop, start, n);
    auto d = dims_;
    auto s = strides_;
    d[ax] = static_cast<std::size_t>((stop - start + step - 1) / step);
    s[ax] *= step;
    return Tensor<T, S2, D>::wrap(data_ + start * strides_[ax], d, s, owner_);
  }
  /// Reverses Axis (negative stride).
  template <int Axis>
  Tensor flip() const {
    constexpr std::size_t ax = detail::norm_axis(Axis, rank);
    static_assert(ax < rank, "loom::Tensor::flip: axis out of range");
    auto s = strides_;
    T* p = dims_[ax] ? data_ + static_cast<std::ptrdiff_t>(dims_[ax] - 1) * strides_[ax] : data_;
    s[ax] = -s[ax];
    return wrap(p, dims_, s, owner_);
  }

  // ---- Eigen interop ----------------------------------------------------------------------------------
  using Matrix = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
  /// A 2-D contiguous tensor as a row-major Eigen::Map (no copy).
  Eigen::Map<Matrix> matrix() const
    requires HostDevice<D>
  {
    static_assert(rank == 2, "loom::Tensor::matrix: needs a 2-D tensor");
    if (!is_contiguous()) throw shape_error("loom::Tensor::matrix: tensor is not contiguous");
    return Eigen::Map<Matrix>(data_, static_cast<Eigen::Index>(dims_[0]), static_cast<Eigen::Index>(dims_[1]));
  }
  /// All elements of a contiguous tensor as an Eigen array (no copy).
  Eigen::Map<Eigen::Array<T, Eigen::Dynamic, 1>> array() const
    requires HostDevice<D>
  {
    if (!is_contiguous()) throw shape_error("loom::Tensor::array: tensor is not contiguous");
    return {data_, static_cast<Eigen::Index>(size())};
  }
  /// Copies any Eigen matrix into a new tensor (2-D).
  template <class Derived>
    requires HostDevice<D>
  static Tensor from_eigen(const Eigen::DenseBase<Derived>& m) {
    static_assert(rank == 2, "loom::Tensor::from_eigen: needs a 2-D shape");
    Tensor t(dims_type{static_cast<std::size_t>(m.rows()), static_cast<std::size_t>(m.cols())});
    t.matrix() = m.template cast<T>();
    return t;
  }

 private:
  using Mem = detail::DeviceMemory<D>;
  static_assert(detail::device_enabled<D>, LOOM_DEVICE_DISABLED_MESSAGE);
  struct no_alloc {};
  explicit Tensor(no_alloc) {}

  std::shared_ptr<void> owner_;
  T* data_ = nullptr;
  dims_type dims_{};
  strides_type strides_{};
};

// ---- factories ----------------------------------------------------------------------------------------
template <Dtype T, ShapeType S, Device D = cpu>
Tensor<T, S, D> zeros(const Dims<S::rank>& dims = S::dims_or(0)) { return Tensor<T, S, D>(dims); }
template <Dtype T, ShapeType S, Device D = cpu>
Tensor<T, S, D> full(T v, const Dims<S::rank>& dims = S::dims_or(0)) {
  Tensor<T, S, D> t(dims);
  t.fill(v);
  return t;
}
template <Dtype T, ShapeType S, Device D = cpu>
Tensor<T, S, D> ones(const Dims<S::rank>& dims = S::dims_or(0)) { return full<T, S, D>(T{1}, dims); }
namespace detail {
/// A new tensor on device D holding f(), f(), ... in row-major order (made on the host, then moved).
template <Dtype T, ShapeType S, Device D, class F>
Tensor<T, S, D> generate(const Dims<S::rank>& dims, F&& f) {
  Tensor<T, S, cpu> t(dims);
  t.for_each([&](T& x) { x = f(); });
  if constexpr (HostDevice<D>) return t;
  else return t.template to<D>();
}
}  // namespace detail

/// start, start+step, ... in row-major order over the shape.
template <Dtype T, ShapeType S, Device D = cpu>
Tensor<T, S, D> arange(T start = 0, T step = 1, const Dims<S::rank>& dims = S::dims_or(0)) {
  T v = start;
  return detail::generate<T, S, D>(dims, [&] { return std::exchange(v, v + step); });
}
template <Dtype T, ShapeType S, Device D = cpu>
Tensor<T, S, D> uniform(Generator& g, double lo = 0, double hi = 1, const Dims<S::rank>& dims = S::dims_or(0)) {
  return detail::generate<T, S, D>(dims, [&] { return static_cast<T>(g.uniform(lo, hi)); });
}
template <Dtype T, ShapeType S, Device D = cpu>
Tensor<T, S, D> normal(Generator& g, double mean = 0, double stddev = 1, const Dims<S::rank>& dims = S::dims_or(0)) {
  return detail::generate<T, S, D>(dims, [&] { return static_cast<T>(mean + stddev * g.normal()); });
}

// ---- comparison and printing ---------------------------------------------------------------------------
/// |a - b| <= atol + rtol * |b| elementwise, with equal extents (NaNs compare unequal).
template <Dtype T, ShapeType S1, ShapeType S2, Device D>
bool allclose(const Tensor<T, S1, D>& a, const Tensor<T, S2, D>& b, double rtol = 1e-5, double atol = 1e-8) {
  static_assert(S1::rank == S2::rank, "loom::allclose: ranks differ");
  if constexpr (!HostDevice<D>) {
    return allclose(a.template to<cpu>(), b.template to<cpu>(), rtol, atol);
  } else {
    if (a.dims() != b.dims()) return false;
    std::vector<double> va, vb;
    a.for_each([&](T& x) { va.push_back(static_cast<double>(x)); });
    b.for_each([&](T& x) { vb.push_back(static_cast<double>(x)); });
    for (std::size_t i = 0; i < va.size(); ++i)
      if (!(std::abs(va[i] - vb[i]) <= atol + rtol * std::abs(vb[i]))) return false;
    return true;
  }
}

template <Dtype T, ShapeType S, Device D>
std::ostream& operator<<(std::ostream& os, const Tensor<T, S, D>& t) {
  if constexpr (!HostDevice<D>) {
    return os << t.template to<cpu>() << " on " << D::name;
  } else {
    constexpr std::size_t R = S::rank;
    os << "tensor(";
    if constexpr (R == 0) {
      os << *t.data();
    } else {
      std::vector<T> v;
      t.for_each([&](T& x) { v.push_back(x); });
      std::size_t k = 0;
      auto rec = [&](auto&& self, std::size_t ax) -> void {
        os << '[';
        for (std::size_t i = 0; i < t.dim(ax); ++i) {
          if (i) os << (ax + 1 == R ? ", " : ",\n" + std::string(8 + ax, ' '));
          if (ax + 1 == R) os << v[k++];
          else self(self, ax + 1);
        }
        os << ']';
      };
      rec(rec, 0);
    }
    return os << ", shape=" << to_string(t.dims()) << ", dtype=" << dtype_name<T>() << ")";
  }
}

}  // namespace loom
