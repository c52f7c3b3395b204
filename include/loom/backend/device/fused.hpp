// loom/backend/device/fused.hpp — fused elementwise groups as device kernels. An expression over slots
// becomes a trivially copyable evaluator (leaf pointers and broadcast strides, op structs by value) that
// a Thrust for_each runs once per element: a chain and all its non-reducing outputs are one kernel.
// Outputs that reduce (a sum, a max, the gradient of a broadcast operand) run one thread per output
// element when the reduced axes are outer ones (adjacent threads read adjacent elements); on CUDA a
// reduction along the innermost axis (a row sum, softmax's max) runs one block per output element,
// combined by CUB's BlockReduce (the same kernel); few outputs with long reductions are split over
// partial results reduced again.
#pragma once
#include <thrust/for_each.h>
#include <thrust/iterator/counting_iterator.h>

#include <cuda/atomic>
#include <algorithm>
#if defined(LOOM_CUDA)
#include <cub/block/block_reduce.cuh>
#endif
#include <limits>

#include "../../expr/expr.hpp"
#include "../exec.hpp"
#include "memory.hpp"

namespace loom::backend::device {

/// A fixed-size array usable in device code (std::array's members are host functions under nvcc).
template <class V, std::size_t R>
struct Arr {
  V v[R ? R : 1]{};
  LOOM_HOST_DEVICE V& operator[](std::size_t i) { return v[i]; }
  LOOM_HOST_DEVICE const V& operator[](std::size_t i) const { return v[i]; }
};

template <std::size_t R>
LOOM_HOST_DEVICE inline std::ptrdiff_t offset(const Arr<std::size_t, R>& idx, const Arr<std::ptrdiff_t, R>& st) {
  std::ptrdiff_t o = 0;
  for (std::size_t k = 0; k < R; ++k) o += static_cast<std::ptrdiff_t>(idx[k]) * st[k];
  return o;
}
/// Row-major multi-index of linear position i over extents d.
template <std::size_t R>
LOOM_HOST_DEVICE inline Arr<std::size_t, R> unravel(std::size_t i, const Arr<std::size_t, R>& d) {
  Arr<std::size_t, R> idx{};
  for (std::size_t k = R; k-- > 0;) {
    idx[k] = i % d[k];
    i /= d[k];
  }
  return idx;
}
template <std::size_t R>
Arr<std::ptrdiff_t, R> to_arr(const Strides<R>& s) {
  Arr<std::ptrdiff_t, R> a{};
  for (std::size_t k = 0; k < R; ++k) a[k] = s[k];
  return a;
}
template <std::size_t R>
Arr<std::size_t, R> to_arr(const Dims<R>& s) {
  Arr<std::size_t, R> a{};
  for (std::size_t k = 0; k < R; ++k) a[k] = s[k];
  return a;
}

template <class T, std::size_t R>
struct Access {
  T* base = nullptr;
  Arr<std::ptrdiff_t, R> st{};
};

/// A slot's value (adj: gradient) buffer, its strides broadcast to the loop's extents `to`.
template <class T, std::size_t RS, std::size_t R>
Access<T, R> slot_access(const loom::detail::SlotRec& s, bool adj, const Dims<R>& to) {
  Dims<RS> d{};
  Strides<RS> st{};
  for (std::size_t i = 0; i < RS; ++i) d[i] = s.dims[i], st[i] = adj ? s.adj_strides[i] : s.strides[i];
  return {static_cast<T*>(adj ? s.adj : s.val), to_arr(broadcast_strides(d, st, to))};
}

template <class E, std::size_t R>
struct Eval;

template <class T, class S, std::size_t Slot, bool Adj, class D, std::size_t R>
struct Eval<SlotRef<T, S, Slot, Adj, D>, R> {
  using value_type = T;
  const T* p = nullptr;
  Arr<std::ptrdiff_t, R> st{};
  Eval(const SlotRef<T, S, Slot, Adj, D>&, const loom::detail::SlotRec* slots, const Dims<R>& to) {
    const auto a = slot_access<const T, S::rank>(slots[Slot], Adj, to);
    p = a.base;
    st = a.st;
  }
  LOOM_HOST_DEVICE T at(const Arr<std::size_t, R>& idx) const { return p[offset(idx, st)]; }
};

template <class T, class D, std::size_t R>
struct Eval<Scalar<T, D>, R> {
  using value_type = T;
  T v;
  Eval(const Scalar<T, D>& s, const loom::detail::SlotRec*, const Dims<R>&) : v(s.value) {}
  LOOM_HOST_DEVICE T at(const Arr<std::size_t, R>&) const { return v; }
};

template <class Op, class... A, std::size_t R>
struct Eval<Node<Op, A...>, R> {
  using value_type = typename Node<Op, A...>::value_type;
  using Idx = std::index_sequence_for<A...>;
  Op op;
  loom::detail::Pack<Eval<A, R>...> c;
  Eval(const Node<Op, A...>& n, const loom::detail::SlotRec* slots, const Dims<R>& to) : Eval(n, slots, to, Idx{}) {}
  template <std::size_t... I>
  Eval(const Node<Op, A...>& n, const loom::detail::SlotRec* slots, const Dims<R>& to, std::index_sequence<I...>)
      : op(n.op), c(Eval<A, R>(n.template arg<I>(), slots, to)...) {}
  LOOM_HOST_DEVICE value_type at(const Arr<std::size_t, R>& idx) const { return at(idx, Idx{}); }
  template <std::size_t... I>
  LOOM_HOST_DEVICE value_type at(const Arr<std::size_t, R>& idx, std::index_sequence<I...>) const {
    return op.apply(static_cast<value_type>(loom::detail::get<I>(c).at(idx))...);
  }
};

/// Evaluates the expression and stores each element into the slot's buffer on the way (see Tee).
template <class E, std::size_t Slot, std::size_t R>
struct Eval<Tee<E, Slot>, R> {
  using value_type = typename Eval<E, R>::value_type;
  Eval<E, R> e;
  value_type* p = nullptr;
  Arr<std::ptrdiff_t, R> st{};
  Eval(const Tee<E, Slot>& t, const loom::detail::SlotRec* slots, const Dims<R>& to) : e(t.expr, slots, to) {
    const auto a = slot_access<value_type, E::shape_type::rank>(slots[Slot], false, to);
    p = a.base;
    st = a.st;
  }
  LOOM_HOST_DEVICE value_type at(const Arr<std::size_t, R>& idx) const {
    const value_type v = e.at(idx);
    p[offset(idx, st)] = v;
    return v;
  }
};

template <Mode M, class T>
LOOM_HOST_DEVICE inline T combine(T a, T b) {
  if constexpr (M == Mode::assign) return b;
  else if constexpr (M == Mode::add) return a + b;
  else return a >= b ? a : b;
}

/// One destination of a fused group and the expression written there.
template <Mode M, class T, std::size_t R, class E>
struct Out {
  static constexpr Mode mode = M;
  using value_type = T;
  Access<T, R> d;
  Eval<E, R> e;
  LOOM_HOST_DEVICE void write(const Arr<std::size_t, R>& idx) const {
    T& x = d.base[offset(idx, d.st)];
    x = combine<M>(x, static_cast<T>(e.at(idx)));
  }
};

template <Mode M, class T, std::size_t R, class E>
Out<M, T, R, E> make_out(Access<T, R> d, const E& expr, const loom::detail::SlotRec* slots, const Dims<R>& dims) {
  return Out<M, T, R, E>{d, Eval<E, R>(expr, slots, dims)};
}

/// Counters the tests read: kernels launched by fused groups.
struct KernelStats {
  std::size_t kernels = 0;
};
inline KernelStats& kernel_stats() {
  static thread_local KernelStats s;
  return s;
}

/// Every output at every element of the extents (no output reduces).
template <std::size_t R, class... O>
struct ElementwiseKernel {
  Arr<std::size_t, R> dims;
  loom::detail::Pack<O...> outs;
  LOOM_HOST_DEVICE void operator()(std::size_t i) const { write(unravel<R>(i, dims), std::index_sequence_for<O...>{}); }
  template <std::size_t... I>
  LOOM_HOST_DEVICE void write(const Arr<std::size_t, R>& idx, std::index_sequence<I...>) const {
    (loom::detail::get<I>(outs).write(idx), ...);
  }
};

/// Output element j of a reducing output: its kept axes from j, the reduced ones looped over.
template <std::size_t R, class O>
struct ReduceKernel {
  using value_type = typename O::value_type;
  static constexpr Mode mode = O::mode;
  Arr<std::size_t, R> kept, red;  // extents of the kept axes (reduced ones 1) and of the reduced axes
  std::size_t n_red;
  O out;
  LOOM_HOST_DEVICE Arr<std::size_t, R> index(std::size_t j, std::size_t r) const {
    auto a = unravel<R>(j, kept);
    const auto b = unravel<R>(r, red);
    for (std::size_t k = 0; k < R; ++k) a[k] += b[k];
    return a;
  }
  LOOM_HOST_DEVICE value_type value(std::size_t j, std::size_t r) const {
    return static_cast<value_type>(out.e.at(index(j, r)));
  }
  LOOM_HOST_DEVICE void store(std::size_t j, value_type acc) const {
    value_type& x = out.d.base[offset(index(j, 0), out.d.st)];
    x = combine<O::mode>(x, acc);
  }
  LOOM_HOST_DEVICE void operator()(std::size_t j) const {
    value_type acc = value(j, 0);
    for (std::size_t r = 1; r < n_red; ++r) acc = combine<O::mode>(acc, value(j, r));
    store(j, acc);
  }
};
#if defined(LOOM_CUDA)
/// One element per thread, grid-stride (no unrolling: a fused functor can be large, and CUB's
/// for_each unrolls it several times per thread, which multiplies the device code and ptxas time).
template <class F>
__global__ void __launch_bounds__(256) for_each_kernel(F f, std::size_t n) {
  const std::size_t stride = static_cast<std::size_t>(gridDim.x) * blockDim.x;
  for (std::size_t i = static_cast<std::size_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) f(i);
}
#endif

/// f(i) for every i in [0, n): the one way device code is launched. CUDA: the kernel above on the
/// current stream; the host device systems: a Thrust for_each over the same functor.
template <class F>
void launch(std::size_t n, const F& f) {
  if (n == 0) return;
#if defined(LOOM_CUDA)
  const std::size_t blocks = std::min<std::size_t>((n + 255) / 256, std::size_t{1} << 20);
  for_each_kernel<<<static_cast<unsigned>(blocks), 256, 0, loom::device::current_stream()>>>(f, n);
  LOOM_CUDA_CHECK(cudaGetLastError());
#else
  thrust::for_each_n(loom::device::policy(), thrust::counting_iterator<std::size_t>(0), n, f);
#endif
  ++kernel_stats().kernels;
}

/// out[t] (M)= the reduction of f(t), f(t + parts), ... below n (adjacent threads read adjacent terms).
template <Mode M, class V, class F>
struct PartialKernel {
  F f;
  std::size_t n, parts;
  V* out;
  bool into;  // combine with out[t] instead of overwriting it
  LOOM_HOST_DEVICE void operator()(std::size_t t) const {
    V acc = f(t);
    for (std::size_t i = t + parts; i < n; i += parts) acc = combine<M>(acc, static_cast<V>(f(i)));
    out[t] = into ? combine<M>(out[t], acc) : acc;
  }
};
template <class V>
struct ArrayTerm {
  const V* p;
  LOOM_HOST_DEVICE V operator()(std::size_t i) const { return p[i]; }
};

/// *dst (M)= f(0) (M) ... (M) f(n - 1) for n >= 1 (`into`: combined with *dst, else overwriting it). Long
/// reductions go through partial results (up to 8192 of them, from the cache), reduced again.
template <Mode M, class V, class F>
void reduce_into(std::size_t n, const F& f, V* dst, bool into) {
  if (n <= 2048) {
    launch(1, PartialKernel<M, V, F>{f, n, 1, dst, into});
    return;
  }
  const std::size_t parts = std::min<std::size_t>(8192, n / 32);
  auto tmp = loom::detail::DeviceMemory<loom::cuda>::allocate<V>(parts);  // reused in stream order
  launch(parts, PartialKernel<M, V, F>{f, n, parts, tmp.get(), false});
  reduce_into<M>(parts, ArrayTerm<V>{tmp.get()}, dst, into);
}

#if defined(LOOM_CUDA)
template <Mode M>
struct CombineOp {
  template <class V>
  __device__ V operator()(const V& a, const V& b) const { return combine<M>(a, b); }
};
/// The reducing outputs' one kernel (one instantiation per output type, its expression inlined once):
/// `per_block` — a block of 256 threads per output element, reading adjacent terms (a reduction along
/// the innermost axis), combined by CUB's BlockReduce; otherwise a thread per output element (adjacent
/// threads read adjacent elements when the reduced axes are outer ones).
template <class K>
__global__ void __launch_bounds__(256) reduce_kernel(K k, std::size_t n_out, bool per_block) {
  using V = typename K::value_type;
  using Reduce = cub::BlockReduce<V, 256>;
  __shared__ typename Reduce::TempStorage tmp;
  const std::size_t j0 = per_block ? blockIdx.x : static_cast<std::size_t>(blockIdx.x) * 256 + threadIdx.x;
  const std::size_t j_step = per_block ? gridDim.x : static_cast<std::size_t>(gridDim.x) * 256;
  const std::size_t r0 = per_block ? threadIdx.x : 0, r_step = per_block ? 256 : 1;
  for (std::size_t j = j0; j < n_out; j += j_step) {  // (per block: uniform over the block)
    V acc{};
    for (std::size_t r = r0; r < k.n_red; r += r_step) {
      const V v = k.value(j, r);
      acc = r == r0 ? v : combine<K::mode>(acc, v);
    }
    if (!per_block) {
      k.store(j, acc);
      continue;
    }
    const int valid = static_cast<int>(k.n_red < 256 ? k.n_red : 256);
    const V all = Reduce(tmp).Reduce(acc, CombineOp<K::mode>{}, valid);
    if (threadIdx.x == 0) k.store(j, all);
    __syncthreads();  // tmp is reused by the next output element
  }
}
#endif

template <std::size_t R, class O>
struct ReduceValue {  // the r-th term of output element j
  ReduceKernel<R, O> k;
  std::size_t j;
  LOOM_HOST_DEVICE typename O::value_type operator()(std::size_t r) const { return k.value(j, r); }
};

template <std::size_t R, class O>
void run_reduce(const Dims<R>& dims, const O& o) {
  ReduceKernel<R, O> k{{}, {}, 1, o};
  std::size_t n_out = 1;
  for (std::size_t a = 0; a < R; ++a) {
    const bool reduced = o.d.st[a] == 0 && dims[a] > 1;
    k.kept[a] = reduced ? 1 : dims[a];
    k.red[a] = reduced ? dims[a] : 1;
    k.n_red *= k.red[a];
    n_out *= k.kept[a];
  }
  if (n_out <= 64 && k.n_red >= 4096) {  // few, long reductions: each split over many threads
    for (std::size_t j = 0; j < n_out; ++j)
      reduce_into<O::mode>(k.n_red, ReduceValue<R, O>{k, j}, o.d.base + offset(k.index(j, 0), o.d.st), true);
    return;
  }
#if defined(LOOM_CUDA)
  bool per_block = false;  // along the innermost axis: a block per output element
  if constexpr (R > 0) per_block = k.red[R - 1] > 1 && k.n_red >= 32;
  const std::size_t blocks = per_block ? n_out : (n_out + 255) / 256;
  reduce_kernel<<<static_cast<unsigned>(std::min<std::size_t>(blocks, std::size_t{1} << 16)), 256, 0,
                  loom::device::current_stream()>>>(k, n_out, per_block);
  LOOM_CUDA_CHECK(cudaGetLastError());
  ++kernel_stats().kernels;
#else
  launch(n_out, k);
#endif
}

template <std::size_t R, class O>
bool reduces(const Dims<R>& dims, const O& o) {
  for (std::size_t a = 0; a < R; ++a)
    if (o.d.st[a] == 0 && dims[a] > 1 && o.mode != Mode::assign) return true;
  return false;
}

/// Runs every output over `dims`. Outputs that do not reduce share one kernel when `parallel` (they are
/// distinct owned buffers); otherwise each gets its own kernel, in order.
template <std::size_t R, class... O>
void run_fused(const Dims<R>& dims, bool parallel, const O&... outs) {
  const std::size_t n = numel(dims);
  if (n == 0) return;
  const auto d = to_arr(dims);
  const bool any_reduce = (reduces(dims, outs) || ...);
  if (parallel && !any_reduce) {
    launch(n, ElementwiseKernel<R, O...>{d, loom::detail::Pack<O...>(outs...)});
    return;
  }
  auto one = [&](const auto& o) {
    using OT = std::remove_cvref_t<decltype(o)>;
    if (reduces(dims, o)) run_reduce<R>(dims, o);
    else launch(n, ElementwiseKernel<R, OT>{d, loom::detail::Pack<OT>(o)});
  };
  (one(outs), ...);
}

template <class T>
LOOM_HOST_DEVICE void atomic_add(T* p, T v) {
  ::cuda::atomic_ref<T, ::cuda::thread_scope_device>(*p).fetch_add(v, ::cuda::std::memory_order_relaxed);
}
template <class F>
void for_n(std::size_t n, const F& f) {
  launch(n, f);
}
template <class V, class F>
V sum_n(std::size_t n, const F& f) {
  if (n == 0) return V{0};
  auto dst = loom::detail::DeviceMemory<loom::cuda>::allocate<V>(1);
  reduce_into<Mode::add>(n, f, dst.get(), false);
  V v{};
  loom::detail::DeviceMemory<loom::cuda>::to_host(&v, dst.get(), 1);
  return v;
}

/// Partial sums of segment t / parts (every parts-th term from t % parts, so adjacent threads read
/// adjacent terms), then each segment's partials added in order: deterministic, no atomics.
template <class F>
struct SegmentPartial {
  F f;
  std::size_t len, parts;
  double* out;
  LOOM_HOST_DEVICE void operator()(std::size_t t) const {
    const std::size_t s = t / parts;
    double acc = 0;
    for (std::size_t i = t % parts; i < len; i += parts) acc += static_cast<double>(f(s, i));
    out[t] = acc;
  }
};
struct SegmentTotal {
  const double* part;
  std::size_t parts;
  double* out;
  LOOM_HOST_DEVICE void operator()(std::size_t s) const {
    double acc = 0;
    for (std::size_t p = 0; p < parts; ++p) acc += part[s * parts + p];
    out[s] = acc;
  }
};
template <class F>
void segment_sums(std::size_t segs, std::size_t len, const F& f, double* dst) {
  if (segs == 0) return;
  const std::size_t parts = std::clamp<std::size_t>(len / 64, 1, 256);
  auto tmp = loom::detail::DeviceMemory<loom::cuda>::allocate<double>(segs * parts);  // from the cache
  launch(segs * parts, SegmentPartial<F>{f, len, parts, tmp.get()});
  launch(segs, SegmentTotal{tmp.get(), parts, dst});
}

}  // namespace loom::backend::device

namespace loom::backend {

/// The device's fused loops (see Exec in backend/exec.hpp).
template <>
struct Exec<loom::cuda> {
  static constexpr bool stages = false;  // a thread per element: shared values are recomputed, not staged
  template <class T, std::size_t R>
  using Access = device::Access<T, R>;
  template <class T, std::size_t R>
  static Access<T, R> access(T* data, const Strides<R>& strides) { return {data, device::to_arr(strides)}; }
  template <class T, std::size_t RS, std::size_t R>
  static Access<T, R> slot_access(const loom::detail::SlotRec& s, bool adj, const Dims<R>& to) {
    return device::slot_access<T, RS>(s, adj, to);
  }
  template <Mode M, class T, std::size_t R, class E>
  static auto make_out(Access<T, R> d, const E& expr, const loom::detail::SlotRec* slots, const Dims<R>& dims) {
    return device::make_out<M>(d, expr, slots, dims);
  }
  template <std::size_t R, class... O>
  static void run_fused(const Dims<R>& dims, bool parallel, const O&... outs) {
    device::run_fused<R>(dims, parallel, outs...);
  }
  /// dst (M)= src over dst's extents (src broadcast to them).
  template <Mode M, class T, std::size_t R, std::size_t RS>
  static void apply(const loom::detail::View<T, R>& dst, const loom::detail::View<T, RS>& src) {
    loom::detail::SlotRec tmp{};
    tmp.val = src.data;
    for (std::size_t i = 0; i < RS; ++i) tmp.dims[i] = src.dims[i], tmp.strides[i] = src.strides[i];
    run_fused<R>(dst.dims, true,
                 make_out<M>(access<T, R>(dst.data, dst.strides), SlotRef<T, DynShape<RS>, 0, false, loom::cuda>{}, &tmp,
                             dst.dims));
  }
};

}  // namespace loom::backend

namespace loom::detail {

template <class T>
struct FillKernel {
  T* p;
  T v;
  LOOM_HOST_DEVICE void operator()(std::size_t i) const { p[i] = v; }
};
template <class T>
void DeviceMemory<cuda>::fill(T* p, std::size_t n, T v) {
  backend::device::launch(n, FillKernel<T>{p, v});
}
template <class T, std::size_t R>
void DeviceMemory<cuda>::fill_strided(const View<T, R>& dst, T v) {
  using X = backend::Exec<cuda>;
  X::run_fused<R>(dst.dims, true,
                  X::make_out<backend::Mode::assign>(X::access<T, R>(dst.data, dst.strides), Scalar<T, cuda>(v),
                                                     static_cast<const SlotRec*>(nullptr), dst.dims));
}
template <class T, std::size_t R>
void DeviceMemory<cuda>::assign_strided(const View<T, R>& dst, const View<T, R>& src) {
  using X = backend::Exec<cuda>;
  // The source may overlap the destination (a shifted view of one buffer): go through a copy.
  auto tmp = allocate<T>(src.size());
  const View<T, R> c{tmp.get(), src.dims, contiguous_strides(src.dims)};
  X::apply<backend::Mode::assign>(c, src);
  X::apply<backend::Mode::assign>(dst, c);
  device::synchronize();  // tmp goes back to the cache when this returns
}

}  // namespace loom::detail
