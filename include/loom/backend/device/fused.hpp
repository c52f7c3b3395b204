// loom/backend/device/fused.hpp — fused elementwise groups as device kernels. An expression over slots
// becomes a trivially copyable evaluator (leaf pointers and broadcast strides, op structs by value) that
// a Thrust for_each runs once per element: a chain and all its non-reducing outputs are one kernel.
// Outputs that reduce (a sum, a max, the gradient of a broadcast operand) run one thread per output
// element when the reduced axes are outer ones (adjacent threads read adjacent elements); on CUDA a
// reduction along the innermost axis (a row sum, softmax's max) runs one block per output element,
// combined by CUB's BlockReduce, and where either would leave the GPU idle (few outputs, long
// reductions: a bias gradient, a loss) each output's terms are split over many threads whose partial
// results a block per output combines.
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
#if defined(LOOM_CUDA)
/// After each <<<launch>>>: a launch error thrown, the launch counted.
inline void launched() {
  LOOM_CUDA_CHECK(cudaGetLastError());
  ++kernel_stats().kernels;
}
#endif

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
  launched();
#else
  thrust::for_each_n(loom::device::policy(), thrust::counting_iterator<std::size_t>(0), n, f);
  ++kernel_stats().kernels;
#endif
}

/// store(t, the reduction of f(t), f(t + parts), ... below n) (adjacent threads read adjacent terms).
template <Mode M, class V, class F, class Store>
struct PartialKernel {
  F f;
  std::size_t n, parts;
  Store store;
  LOOM_HOST_DEVICE void operator()(std::size_t t) const {
    V acc = f(t);
    for (std::size_t i = t + parts; i < n; i += parts) acc = combine<M>(acc, static_cast<V>(f(i)));
    store(t, acc);
  }
};
template <class V>
struct ArrayTerm {
  const V* p;
  LOOM_HOST_DEVICE V operator()(std::size_t i) const { return p[i]; }
};
/// Stores of a reduction's result(s): combined into (or overwriting) one value; one per output; one
/// value divided by `div` and converted (a mean, a loss).
template <Mode M, class V>
struct StoreOne {
  V* dst;
  bool into;
  LOOM_HOST_DEVICE void operator()(std::size_t, V v) const { *dst = into ? combine<M>(*dst, v) : v; }
};
template <class V>
struct StoreArray {
  V* dst;
  LOOM_HOST_DEVICE void operator()(std::size_t j, V v) const { dst[j] = v; }
};
template <class V, class T>
struct StoreDivided {
  T* dst;
  V div;
  LOOM_HOST_DEVICE void operator()(std::size_t, V v) const { *dst = static_cast<T>(v / div); }
};

#if defined(LOOM_CUDA)
template <Mode M>
struct CombineOp {
  template <class V>
  __device__ V operator()(const V& a, const V& b) const { return combine<M>(a, b); }
};
/// The one block reduction: output j (a block each, grid-stride) is the combination of term(j, 0), ...,
/// term(j, len - 1), read by 256 threads (adjacent threads adjacent i) and combined by CUB's BlockReduce in
/// a fixed order (deterministic); store(j, value) writes it.
template <Mode M, class V, class Term, class Store>
__global__ void __launch_bounds__(256) block_reduce_kernel(Term term, std::size_t len, std::size_t n_out, Store store) {
  using Reduce = cub::BlockReduce<V, 256>;
  __shared__ typename Reduce::TempStorage tmp;
  for (std::size_t j = blockIdx.x; j < n_out; j += gridDim.x) {  // uniform over the block
    V acc{};
    for (std::size_t i = threadIdx.x; i < len; i += 256) {
      const V v = static_cast<V>(term(j, i));
      acc = i == threadIdx.x ? v : combine<M>(acc, v);
    }
    const V all = Reduce(tmp).Reduce(acc, CombineOp<M>{}, static_cast<int>(len < 256 ? len : 256));
    if (threadIdx.x == 0) store(j, all);
    __syncthreads();  // tmp is reused by the next output
  }
}
template <Mode M, class V, class Term, class Store>
void block_reduce(std::size_t len, std::size_t n_out, const Term& term, const Store& store) {
  if (n_out == 0 || len == 0) return;
  block_reduce_kernel<M, V><<<static_cast<unsigned>(std::min<std::size_t>(n_out, std::size_t{1} << 16)), 256, 0,
                              loom::device::current_stream()>>>(term, len, n_out, store);
  launched();
}
/// Term / store adaptors: one sequence f(i); partial results at part[j * sj + i * si].
template <class F>
struct OneTerm {
  F f;
  LOOM_HOST_DEVICE auto operator()(std::size_t, std::size_t i) const { return f(i); }
};
template <class V>
struct PartTerm {
  const V* part;
  std::size_t sj, si;
  LOOM_HOST_DEVICE V operator()(std::size_t j, std::size_t i) const { return part[j * sj + i * si]; }
};
#endif

/// store(0, f(0) (M) ... (M) f(n - 1)) on the device, for n >= 1. Long reductions go through partial
/// results (from the cache), reduced again. CUDA: up to 4096 terms are one block's; beyond, up to 2^17
/// partials of 16 or more terms each. Host systems: one thread's up to 2048, beyond, up to 8192 partials.
template <Mode M, class V, class F, class Store>
void reduce_to(std::size_t n, const F& f, const Store& store) {
#if defined(LOOM_CUDA)
  if (n <= 4096) {
    block_reduce<M, V>(n, 1, OneTerm<F>{f}, store);
    return;
  }
  const std::size_t parts = std::min<std::size_t>(std::size_t{1} << 17, n / 16);
#else
  if (n <= 2048) {
    launch(1, PartialKernel<M, V, F, Store>{f, n, 1, store});
    return;
  }
  const std::size_t parts = std::min<std::size_t>(8192, n / 32);
#endif
  auto tmp = loom::detail::DeviceMemory<loom::cuda>::allocate<V>(parts);  // reused in stream order
  launch(parts, PartialKernel<M, V, F, StoreArray<V>>{f, n, parts, {tmp.get()}});
  reduce_to<M, V>(parts, ArrayTerm<V>{tmp.get()}, store);
}
/// *dst (M)= f(0) (M) ... (M) f(n - 1) for n >= 1 (`into`: combined with *dst, else overwriting it).
template <Mode M, class V, class F>
void reduce_into(std::size_t n, const F& f, V* dst, bool into) {
  reduce_to<M, V>(n, f, StoreOne<M, V>{dst, into});
}

#if defined(LOOM_CUDA)
/// Term j, r of a reducing output, and its store.
template <class K>
struct KernelTerm {
  K k;
  LOOM_HOST_DEVICE typename K::value_type operator()(std::size_t j, std::size_t r) const { return k.value(j, r); }
};
template <class K>
struct KernelStore {
  K k;
  LOOM_HOST_DEVICE void operator()(std::size_t j, typename K::value_type v) const { k.store(j, v); }
};
/// Split reductions, first pass: thread t combines terms p, p + P, p + 2P, ... of output j into part[t].
/// `inner` (the innermost axis is reduced): j = t / P, p = t % P, so adjacent threads read adjacent terms;
/// otherwise j = t % n_out, p = t / n_out, so adjacent threads read adjacent outputs' terms.
template <class K>
struct SplitPartial {
  K k;
  std::size_t P, n_out;
  bool inner;
  typename K::value_type* part;
  LOOM_HOST_DEVICE void operator()(std::size_t t) const {
    const std::size_t j = inner ? t / P : t % n_out, p = inner ? t % P : t / n_out;
    auto acc = k.value(j, p);
    for (std::size_t r = p + P; r < k.n_red; r += P) acc = combine<K::mode>(acc, k.value(j, r));
    part[t] = acc;
  }
};
#endif

template <std::size_t R, class O>
struct ReduceValue {  // the r-th term of output element j
  ReduceKernel<R, O> k;
  std::size_t j;
  LOOM_HOST_DEVICE typename O::value_type operator()(std::size_t r) const { return k.value(j, r); }
};

/// One reducing output. CUDA: along the innermost axis a block per output element; along outer axes a
/// thread per output element; where that leaves the GPU idle (few outputs, long reductions), each
/// output's terms are split over P threads and the partials reduced by a block per output. Host systems:
/// a thread per output element, or few long reductions split by reduce_into.
template <std::size_t R, class O>
void run_reduce(const Dims<R>& dims, const O& o) {
  using K = ReduceKernel<R, O>;
  K k{{}, {}, 1, o};
  std::size_t n_out = 1;
  for (std::size_t a = 0; a < R; ++a) {
    const bool reduced = o.d.st[a] == 0 && dims[a] > 1;
    k.kept[a] = reduced ? 1 : dims[a];
    k.red[a] = reduced ? dims[a] : 1;
    k.n_red *= k.red[a];
    n_out *= k.kept[a];
  }
#if defined(LOOM_CUDA)
  bool inner = false;
  if constexpr (R > 0) inner = k.red[R - 1] > 1 && k.n_red >= 32;
  // Split where the plain kernels would run under 2^16 threads with 32 or more terms each: P partials per
  // output (16 or more terms each, 2^17 threads in all at most, 4096 per output for the blocks that
  // combine them).
  const std::size_t threads = inner ? n_out * 256 : n_out, terms = inner ? k.n_red / 256 : k.n_red;
  if (threads < (std::size_t{1} << 16) && terms >= 32) {
    const std::size_t P = std::clamp<std::size_t>((std::size_t{1} << 17) / n_out, 2, std::min<std::size_t>(4096, k.n_red / 16));
    using V = typename O::value_type;
    auto part = loom::detail::DeviceMemory<loom::cuda>::allocate<V>(n_out * P);  // from the cache, in stream order
    launch(n_out * P, SplitPartial<K>{k, P, n_out, inner, part.get()});
    block_reduce<O::mode, V>(P, n_out, PartTerm<V>{part.get(), inner ? P : 1, inner ? 1 : n_out}, KernelStore<K>{k});
    return;
  }
  if (inner) {
    block_reduce<O::mode, typename O::value_type>(k.n_red, n_out, KernelTerm<K>{k}, KernelStore<K>{k});
    return;
  }
#else
  if (n_out <= 64 && k.n_red >= 4096) {  // few, long reductions: each split over many threads
    for (std::size_t j = 0; j < n_out; ++j)
      reduce_into<O::mode>(k.n_red, ReduceValue<R, O>{k, j}, o.d.base + offset(k.index(j, 0), o.d.st), true);
    return;
  }
#endif
  launch(n_out, k);  // a thread per output element
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
template <class V, class T, class F>
void sum_into(std::size_t n, const F& f, T* dst, V div) {
  if (n == 0) loom::detail::DeviceMemory<loom::cuda>::fill(dst, 1, static_cast<T>(V{0} / div));
  else reduce_to<Mode::add, V>(n, f, StoreDivided<V, T>{dst, div});
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
#if defined(LOOM_CUDA)  // partials of 16 or more terms, combined by a block per segment
  const std::size_t parts = std::clamp<std::size_t>(len / 16, 1, 4096);
#else
  const std::size_t parts = std::clamp<std::size_t>(len / 64, 1, 256);
#endif
  auto tmp = loom::detail::DeviceMemory<loom::cuda>::allocate<double>(segs * parts);  // from the cache
  launch(segs * parts, SegmentPartial<F>{f, len, parts, tmp.get()});
#if defined(LOOM_CUDA)
  block_reduce<Mode::add, double>(parts, segs, PartTerm<double>{tmp.get(), parts, 1}, StoreArray<double>{dst});
#else
  launch(segs, SegmentTotal{tmp.get(), parts, dst});
#endif
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
