// loom/backend/cpu/fused.hpp — runs a fused elementwise group as one strided loop nest: every leaf is
// read through broadcast strides, inner rows use Eigen's packet math where every op has it, rows are
// spread over OpenMP threads when the destinations are owned buffers.
#pragma once
#include <algorithm>
#include <cstddef>
#include <limits>
#include <tuple>
#include <utility>

#include "../../expr/expr.hpp"
#include "../../expr/slots.hpp"
#include "../exec.hpp"
#include "parallel.hpp"

namespace loom::backend::cpu {

namespace ei = Eigen::internal;

using backend::Mode;

/// Counters the tests read (loops run, elements written); cheap enough to keep always on.
struct FusedStats {
  std::size_t loops = 0;
  std::size_t staged = 0;  // values computed once per chunk for several outputs (see StageRef)
};
inline FusedStats& fused_stats() {
  static thread_local FusedStats s;
  return s;
}

template <class T, std::size_t R>
struct Access {
  T* base = nullptr;
  Strides<R> st{};
  T* row = nullptr;
  void set_row(const Dims<R>& idx) {
    std::ptrdiff_t off = 0;
    for (std::size_t k = 0; k + 1 < R; ++k) off += static_cast<std::ptrdiff_t>(idx[k]) * st[k];
    row = base + off;
  }
  std::ptrdiff_t inner() const { return R ? st[R - 1] : 0; }
};

/// Broadcast view of a slot's value (or gradient) at loop extents `to`.
template <class T, std::size_t RS, std::size_t R>
Access<T, R> slot_access(const detail::SlotRec& s, bool adj, const Dims<R>& to) {
  Dims<RS> d{};
  Strides<RS> st{};
  for (std::size_t i = 0; i < RS; ++i) d[i] = s.dims[i], st[i] = adj ? s.adj_strides[i] : s.strides[i];
  return {static_cast<T*>(adj ? s.adj : s.val), broadcast_strides(d, st, to), nullptr};
}

template <class E, std::size_t R>
struct Eval;

template <class T, class S, std::size_t Slot, bool Adj, class D, std::size_t R>
struct Eval<SlotRef<T, S, Slot, Adj, D>, R> {
  using value_type = T;
  static constexpr bool packetable = FloatDtype<T>;
  Access<T, R> a;
  Eval(const SlotRef<T, S, Slot, Adj, D>&, const detail::SlotRec* slots, const Dims<R>& to)
      : a(slot_access<T, S::rank, R>(slots[Slot], Adj, to)) {}
  template <class F> void visit(F&& f) { f(a.st); }
  template <class F> void link(F&&) {}
  void cache() {}
  void set_row(const Dims<R>& idx) { a.set_row(idx); }
  bool unit_or_zero() const { return a.inner() == 0 || a.inner() == 1; }
  T at(std::ptrdiff_t j) const { return a.row[j * a.inner()]; }
  template <class P> P packet(std::ptrdiff_t j) const {
    return a.inner() ? ei::ploadu<P>(a.row + j) : ei::pset1<P>(*a.row);
  }
};

template <class T, class D, std::size_t R>
struct Eval<Scalar<T, D>, R> {
  using value_type = T;
  static constexpr bool packetable = FloatDtype<T>;
  T v;
  Eval(const Scalar<T, D>& s, const detail::SlotRec*, const Dims<R>&) : v(s.value) {}
  template <class F> void visit(F&&) {}
  template <class F> void link(F&&) {}
  void cache() {}
  void set_row(const Dims<R>&) {}
  bool unit_or_zero() const { return true; }
  T at(std::ptrdiff_t) const { return v; }
  template <class P> P packet(std::ptrdiff_t) const { return ei::pset1<P>(v); }
};

/// A chunk of a staged value (see StageRef): element j of the current row is data[j - j0].
struct StageBuf {
  void* data = nullptr;
  std::ptrdiff_t j0 = 0;
};
/// The longest run of a row that one pass over the outputs covers (run_fused cuts rows into chunks).
inline constexpr std::ptrdiff_t chunk_size = 4096;

template <class T, class S, std::size_t Id, class D, std::size_t R>
struct Eval<StageRef<T, S, Id, D>, R> {
  using value_type = T;
  static constexpr bool packetable = FloatDtype<T>;
  const StageBuf* sb = nullptr;
  const T* p = nullptr;  // element j at p[j], cached from *sb for the packet loop of one chunk
  Eval(const StageRef<T, S, Id, D>&, const detail::SlotRec*, const Dims<R>&) {}
  template <class F> void visit(F&&) {}  // chunk-local: no strides to merge
  template <class F> void link(F&& f) { f(Id, sb); }
  void cache() { p = static_cast<const T*>(sb->data) - sb->j0; }
  void set_row(const Dims<R>&) {}
  bool unit_or_zero() const { return true; }
  T at(std::ptrdiff_t j) const { return static_cast<const T*>(sb->data)[j - sb->j0]; }
  template <class P> P packet(std::ptrdiff_t j) const { return ei::ploadu<P>(p + j); }  // after cache()
};

/// Evaluates the expression and stores each element into the slot's buffer on the way (see Tee).
template <class E, std::size_t Slot, std::size_t R>
struct Eval<Tee<E, Slot>, R> {
  using value_type = typename Eval<E, R>::value_type;
  using T = value_type;
  static constexpr bool packetable = Eval<E, R>::packetable;
  Eval<E, R> e;
  Access<T, R> a;
  Eval(const Tee<E, Slot>& t, const detail::SlotRec* slots, const Dims<R>& to)
      : e(t.expr, slots, to), a(slot_access<T, E::shape_type::rank, R>(slots[Slot], false, to)) {}
  template <class F> void visit(F&& f) { f(a.st); e.visit(f); }
  template <class F> void link(F&& f) { e.link(f); }
  void cache() { e.cache(); }
  void set_row(const Dims<R>& idx) { a.set_row(idx); e.set_row(idx); }
  bool unit_or_zero() const { return a.inner() == 1 && e.unit_or_zero(); }
  T at(std::ptrdiff_t j) const {
    const T v = e.at(j);
    a.row[j * a.inner()] = v;
    return v;
  }
  template <class P> P packet(std::ptrdiff_t j) const {
    const P v = e.template packet<P>(j);
    ei::pstoreu(a.row + j, v);
    return v;
  }
};

template <class Op, class P, class... A>
concept HasPacket = requires(const Op& op, const A&... a) { op.template packet<P>(a...); };

template <class Op, class... A, std::size_t R>
struct Eval<Node<Op, A...>, R> {
  using value_type = typename Node<Op, A...>::value_type;
  using Packet = typename ei::packet_traits<value_type>::type;
  using Idx = std::index_sequence_for<A...>;
  static constexpr bool packetable = FloatDtype<value_type> && (Eval<A, R>::packetable && ...) &&
                                     HasPacket<Op, Packet, std::conditional_t<true, Packet, A>...>;
  Op op;
  detail::Pack<Eval<A, R>...> c;
  Eval(const Node<Op, A...>& n, const detail::SlotRec* slots, const Dims<R>& to) : Eval(n, slots, to, Idx{}) {}
  template <std::size_t... I>
  Eval(const Node<Op, A...>& n, const detail::SlotRec* slots, const Dims<R>& to, std::index_sequence<I...>)
      : op(n.op), c(Eval<A, R>(n.template arg<I>(), slots, to)...) {}
  template <class F> void visit(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (detail::get<I>(c).visit(f), ...); }(Idx{});
  }
  template <class F> void link(F&& f) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (detail::get<I>(c).link(f), ...); }(Idx{});
  }
  void cache() {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (detail::get<I>(c).cache(), ...); }(Idx{});
  }
  void set_row(const Dims<R>& idx) {
    [&]<std::size_t... I>(std::index_sequence<I...>) { (detail::get<I>(c).set_row(idx), ...); }(Idx{});
  }
  bool unit_or_zero() const {
    return [&]<std::size_t... I>(std::index_sequence<I...>) { return (detail::get<I>(c).unit_or_zero() && ...); }(Idx{});
  }
  value_type at(std::ptrdiff_t j) const {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return op.apply(static_cast<value_type>(detail::get<I>(c).at(j))...);
    }(Idx{});
  }
  template <class P> P packet(std::ptrdiff_t j) const {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return op.template packet<P>(detail::get<I>(c).template packet<P>(j)...);
    }(Idx{});
  }
};

/// The rows of up to K later outputs of a chunk that its first output prefetches as it runs (see
/// run_fused): row[k] + j is element j of output k's destination.
template <class T, std::size_t K>
struct Ahead {
  T* row[K];
  std::size_t n = 0;
};
struct NoAhead {};

/// One destination of a fused loop and the expression written there.
template <Mode M, class T, std::size_t R, class E>
struct Out {
  Access<T, R> d;
  Eval<E, R> e;
  bool packet_ok = false;         // an elementwise row: packets in, packets out
  bool reduce_packet_ok = false;  // a row reduced into one element: packets accumulated, then folded

  static constexpr bool is_stage = false;
  static constexpr Mode mode = M;
  using value_type = T;
  template <class F> void visit(F&& f) { f(d.st); e.visit(f); }
  template <class F> void link(F&& f) { e.link(f); }
  static T combine(T a, T b) {
    if constexpr (M == Mode::assign) return b;
    else if constexpr (M == Mode::add) return a + b;
    else return a >= b ? a : b;
  }
  /// Elements [j0, j1) of row idx (the outer indices; the row axis is R - 1).
  template <class A = NoAhead>
  void row(const Dims<R>& idx, std::ptrdiff_t j0, std::ptrdiff_t j1, const A& ahead = {}) {
    run(row_start(idx), d.inner(), idx, j0, j1, ahead);
  }
  /// Element 0 of row idx of the destination.
  T* row_start(const Dims<R>& idx) const {
    Access<T, R> dl = d;
    dl.set_row(idx);
    return dl.row;
  }
  /// The row's elements [j0, j1), written to out with stride di. The loop reads a local copy of the
  /// evaluator, its row pointers set here: Eigen's packet stores go through a may-alias vector type, so
  /// with the members of *this the compiler reloads every operand's row pointer and stride after each
  /// store, while a local whose address does not escape stays in registers (cache(): a staged value's
  /// chunk pointer too). Setting the rows on the copy, not on *this before copying it, also spares the
  /// copy a store-forwarding stall per operand (see run_fused).
  template <class A = NoAhead>
  void run(T* out, std::ptrdiff_t di, const Dims<R>& idx, std::ptrdiff_t j0, std::ptrdiff_t j1,
           const A& ahead = {}) const {
    Eval<E, R> local = e;
    local.set_row(idx);
    local.cache();
    if (di == 0 && M != Mode::assign) {  // reduction along the row: accumulate in registers
      std::ptrdiff_t j = j0;
      T acc{};
      bool started = false;
      if constexpr (Eval<E, R>::packetable && std::is_same_v<T, typename Eval<E, R>::value_type>) {
        if (reduce_packet_ok) j = reduce_packets<typename ei::packet_traits<T>::type>(local, j, j1, acc, started);
      }
      if (!started) acc = local.at(j++);
      for (; j < j1; ++j) acc = combine(acc, local.at(j));
      *out = combine(*out, acc);
      return;
    }
    std::ptrdiff_t j = j0;
    if constexpr (Eval<E, R>::packetable && std::is_same_v<T, typename Eval<E, R>::value_type>) {
      using P = typename ei::packet_traits<T>::type;
      if (packet_ok && ei::unpacket_traits<P>::size > 1) j = store_packets<P>(local, out, j, j1, ahead);
    }
    for (; j < j1; ++j) out[j * di] = combine(out[j * di], static_cast<T>(local.at(j)));
  }
  /// Folds [j, j1) of a unit-stride row into acc in packets of P (two accumulators to hide the latency),
  /// then the rest in its half-width packets, like store_packets; returns the first element not folded.
  template <class P>
  static std::ptrdiff_t reduce_packets(const Eval<E, R>& e, std::ptrdiff_t j, std::ptrdiff_t j1, T& acc, bool& started) {
    constexpr std::ptrdiff_t W = ei::unpacket_traits<P>::size;
    if (W > 1 && j + W <= j1) {
      auto fold = [](const P& a, const P& b) {
        if constexpr (M == Mode::add) return ei::padd(a, b);
        else return ei::pmax(a, b);
      };
      P a0 = e.template packet<P>(j);
      j += W;
      if (j + W <= j1) {
        P a1 = e.template packet<P>(j);
        for (j += W; j + 2 * W <= j1; j += 2 * W)
          a0 = fold(a0, e.template packet<P>(j)), a1 = fold(a1, e.template packet<P>(j + W));
        a0 = fold(a0, a1);
      }
      for (; j + W <= j1; j += W) a0 = fold(a0, e.template packet<P>(j));
      T r;
      if constexpr (M == Mode::add) r = ei::predux(a0);
      else r = ei::predux_max(a0);
      acc = started ? combine(acc, r) : r;
      started = true;
    }
    using H = typename ei::unpacket_traits<P>::half;
    if constexpr (!std::is_same_v<H, P>) return reduce_packets<H>(e, j, j1, acc, started);
    else return j;
  }
  /// Writes [j, j1) of a unit-stride row in packets of P, then the rest in its half-width packets (so a
  /// row that is not a multiple of 16 lanes leaves at most 3 elements to the scalar loop); returns the
  /// first element not written. With an Ahead, each full packet also prefetches the same elements of
  /// the later outputs' rows (for writing: they are read, added to and stored).
  template <class P, class A = NoAhead>
  static std::ptrdiff_t store_packets(const Eval<E, R>& e, T* out, std::ptrdiff_t j, std::ptrdiff_t j1,
                                      const A& ahead = {}) {
    constexpr std::ptrdiff_t W = ei::unpacket_traits<P>::size;
    for (; j + W <= j1; j += W) {
      if constexpr (!std::is_same_v<A, NoAhead>)
        for (std::size_t k = 0; k < ahead.n; ++k) __builtin_prefetch(ahead.row[k] + j, 1, 3);
      P v = e.template packet<P>(j);
      if constexpr (M == Mode::add) v = ei::padd(ei::ploadu<P>(out + j), v);
      else if constexpr (M == Mode::max) v = ei::pmax(ei::ploadu<P>(out + j), v);
      ei::pstoreu(out + j, v);
    }
    using H = typename ei::unpacket_traits<P>::half;
    if constexpr (!std::is_same_v<H, P>) return store_packets<H>(e, out, j, j1);
    else return j;
  }
};

/// Computes a staged value (StageRef<.., Id>) over each chunk into a buffer of the loop, ahead of the
/// outputs that read it.
template <std::size_t Id, class T, std::size_t R, class E>
struct StageOut {
  static constexpr bool is_stage = true;
  static constexpr Mode mode = Mode::assign;
  static constexpr std::size_t id = Id;
  using value_type = T;
  Out<Mode::assign, T, R, E> out;  // writes the chunk buffer: unit inner stride, its row set per chunk
  StageBuf* sb = nullptr;
  explicit StageOut(Eval<E, R> e) : out{{}, std::move(e)} {
    if constexpr (R > 0) out.d.st[R - 1] = 1;
  }
  template <class F> void visit(F&& f) { out.e.visit(f); }
  template <class F> void link(F&& f) { out.e.link(f); }
  void row(const Dims<R>& idx, std::ptrdiff_t j0, std::ptrdiff_t j1) {
    sb->j0 = j0;
    out.run(static_cast<T*>(sb->data) - j0, 1, idx, j0, j1);  // element j of the chunk at [j - j0]
  }
};

template <class O>
constexpr std::size_t stage_size() {
  if constexpr (O::is_stage) return sizeof(typename O::value_type);
  else return 1;
}

template <Mode M, class T, std::size_t R, class E>
Out<M, T, R, E> make_out(Access<T, R> d, const E& expr, const detail::SlotRec* slots, const Dims<R>& dims) {
  return Out<M, T, R, E>{d, Eval<E, R>(expr, slots, dims)};
}

/// Runs body with a chunk buffer on this thread's stack for each staged value among the outputs, linked
/// to the outputs that read it (no heap: 2 * chunk_size elements each).
template <class Body, class... O>
void with_stages(Body&& body, O&... o) {
  constexpr std::size_t stages = (std::size_t{O::is_stage} + ... + 0);
  if constexpr (stages == 0) {
    body();
  } else {
    constexpr std::size_t stage_bytes = 2 * chunk_size * std::max({stage_size<O>()...});
    alignas(64) std::byte storage[stages * stage_bytes];
    StageBuf bufs[stages];
    std::size_t k = 0;
    auto own = [&](auto& out) {
      if constexpr (std::remove_cvref_t<decltype(out)>::is_stage) {
        StageBuf* b = &bufs[k];
        b->data = storage + k++ * stage_bytes;
        out.sb = b;
        constexpr std::size_t id = std::remove_cvref_t<decltype(out)>::id;
        (o.link([&](std::size_t want, const StageBuf*& p) {
          if (want == id) p = b;
        }), ...);
      }
    };
    (own(o), ...);
    body();
  }
}

/// Whether output O adds into a unit-stride destination of element type T (a row worth prefetching).
template <class O, class T>
constexpr bool ahead_of = !O::is_stage && O::mode == Mode::add && std::is_same_v<typename O::value_type, T>;

/// One chunk [j0, j1) of a long row through every output. Where the first output computes (a
/// backward's forward part: its operands stream in from memory) and later ones add into gradient rows
/// that are not in cache yet, the first output's packet loop prefetches those rows' elements of the
/// chunk as it goes, so that their reads overlap its arithmetic instead of following it (the hardware
/// prefetcher starts each row of a chunk anew, and the later outputs do little but load and add).
template <std::size_t R, class First, class... Rest>
void run_chunk_ahead(const Dims<R>& idx, std::ptrdiff_t j0, std::ptrdiff_t j1, First& first, Rest&... rest) {
  using T = typename First::value_type;
  constexpr std::size_t K = (std::size_t{ahead_of<Rest, T>} + ... + 0);
  if constexpr (First::is_stage || K == 0) {
    first.row(idx, j0, j1);
  } else {
    Ahead<T, K> ahead{};
    auto note = [&](auto& o) {
      if constexpr (ahead_of<std::remove_cvref_t<decltype(o)>, T>)
        if (o.packet_ok) ahead.row[ahead.n++] = o.row_start(idx);
    };
    (note(rest), ...);
    first.row(idx, j0, j1, ahead);
  }
  (rest.row(idx, j0, j1), ...);
}

/// Runs every output over the extents `dims` in one loop nest. `parallel` says the destinations are
/// distinct owned buffers, so rows may run on several threads. The outputs are the caller's (usually
/// temporaries built for this call): one thread runs them in place, several threads each run a copy.
/// (Copying them on the way in, and copying each row's evaluator just after setting its row pointers,
/// were much of a short loop's fixed cost: store-forwarding stalls on structs just written.)
template <std::size_t R, class... O>
void run_fused(Dims<R> dims, bool parallel, O&&... outs) {
  ++fused_stats().loops;
  fused_stats().staged += (std::size_t{std::remove_cvref_t<O>::is_stage} + ... + 0);
  if (numel(dims) == 0) return;
  if constexpr (R == 0) {
    with_stages([&] { (outs.row(dims, 0, 1), ...); }, outs...);
  } else {
    // Merge axes that every access walks as one run (and drop unit axes) so rows get long; the row
    // axis is always R-1, outer axes become extent 1.
    std::size_t cur = R - 1;
    for (std::size_t k = R - 1; k-- > 0;) {
      if (dims[k] == 1) continue;
      if (dims[cur] == 1) {  // the inner run is empty so far: axis k becomes it
        (outs.visit([&](Strides<R>& st) { st[cur] = st[k]; }), ...);
        dims[cur] = dims[k];
        dims[k] = 1;
        continue;
      }
      bool ok = true;
      (outs.visit([&](const Strides<R>& st) { ok = ok && st[k] == st[cur] * static_cast<std::ptrdiff_t>(dims[cur]); }), ...);
      if (ok) {
        dims[cur] *= dims[k];
        dims[k] = 1;
      } else if (cur == R - 1 && k + 1 < R - 1) {
        cur = k;  // a new run starts at k; leave it in place
      } else {
        cur = k;
      }
    }
    bool zero_outer = false, zero_inner = false;  // a destination reduced over outer axes / along rows
    auto mark = [&](auto& o) {
      if constexpr (std::remove_cvref_t<decltype(o)>::is_stage) {
        o.out.packet_ok = o.out.e.unit_or_zero();  // written chunk-local and contiguous
      } else {
        o.packet_ok = o.d.inner() == 1 && o.e.unit_or_zero();
        o.reduce_packet_ok = o.d.inner() == 0 && o.e.unit_or_zero();
        for (std::size_t k = 0; k + 1 < R; ++k) zero_outer = zero_outer || (o.d.st[k] == 0 && dims[k] > 1);
        zero_inner = zero_inner || (o.d.inner() == 0 && dims[R - 1] > 1);
      }
    };
    (mark(outs), ...);
    const std::size_t rows = numel(dims) / dims[R - 1];
    const auto n = static_cast<std::ptrdiff_t>(dims[R - 1]);
    // Long rows are cut into chunks: every output runs over one chunk before the next, so the operands
    // of a multi-output loop (a backward writing several gradients) stay in cache, and a single long
    // row (a 1-D tensor) can still be shared between threads.
    const std::ptrdiff_t chunk = n > 2 * chunk_size ? chunk_size : n;
    const std::size_t per_row = static_cast<std::size_t>((n + chunk - 1) / chunk), items = rows * per_row;
    auto run_items = [&](std::size_t i0, std::size_t i1, auto&... o) {
      if (i0 >= i1) return;
      with_stages([&] {
        Dims<R> idx{};
        std::size_t r = i0 / per_row, c = i0 % per_row;
        for (std::size_t k = R - 1; k-- > 0;) idx[k] = r % dims[k], r /= dims[k];
        for (std::size_t i = i0; i < i1; ++i) {
          const std::ptrdiff_t j0 = static_cast<std::ptrdiff_t>(c) * chunk;
          const std::ptrdiff_t j1 = std::min(j0 + chunk, n);
          if (chunk < n) run_chunk_ahead(idx, j0, j1, o...);
          else (o.row(idx, j0, j1), ...);
          if (++c == per_row && i + 1 < i1) {
            c = 0;
            for (std::size_t k = R - 1; k-- > 0;) {
              if (++idx[k] < dims[k]) break;
              idx[k] = 0;
            }
          }
        }
      }, o...);
    };
#ifdef _OPENMP
    // Rows reduced into their own element may run on different threads; chunks of one reduced row
    // may not (they accumulate into the same element), nor may rows reduced into a shared one.
    const bool zero_dest = zero_outer || (zero_inner && per_row > 1);
    const bool par = parallel && !zero_dest && items > 1 && numel(dims) >= (std::size_t{1} << 15) && free_threads() > 1;
    if (par) {
#pragma omp parallel
      {
        const std::size_t t = static_cast<std::size_t>(omp_get_thread_num()),
                          nt = static_cast<std::size_t>(omp_get_num_threads());
        [&](auto... own) { run_items(items * t / nt, items * (t + 1) / nt, own...); }(outs...);
      }
      return;
    }
#else
    (void)parallel;
#endif
    run_items(0, items, outs...);
  }
}

}  // namespace loom::backend::cpu

namespace loom::backend::cpu {

/// dst (op)= src over equal extents, any strides (src read through broadcast strides if smaller).
template <Mode M, class T, std::size_t R, std::size_t RS>
void strided_apply(const detail::View<T, R>& dst, const detail::View<T, RS>& src) {
  detail::SlotRec tmp{};
  tmp.val = src.data;
  for (std::size_t i = 0; i < RS; ++i) tmp.dims[i] = src.dims[i], tmp.strides[i] = src.strides[i];
  run_fused<R>(dst.dims, false,
               make_out<M>(Access<T, R>{dst.data, dst.strides, nullptr}, SlotRef<T, DynShape<RS>, 0>{}, &tmp, dst.dims));
}

}  // namespace loom::backend::cpu

namespace loom::backend {

/// The host's fused loops (see Exec in backend/exec.hpp).
template <>
struct Exec<loom::cpu> {
  template <class T, std::size_t R>
  using Access = cpu::Access<T, R>;
  template <class T, std::size_t R>
  static Access<T, R> access(T* data, const Strides<R>& strides) { return {data, strides, nullptr}; }
  template <class T, std::size_t RS, std::size_t R>
  static Access<T, R> slot_access(const detail::SlotRec& s, bool adj, const Dims<R>& to) {
    return cpu::slot_access<T, RS, R>(s, adj, to);
  }
  template <Mode M, class T, std::size_t R, class E>
  static auto make_out(Access<T, R> d, const E& expr, const detail::SlotRec* slots, const Dims<R>& dims) {
    return cpu::make_out<M>(d, expr, slots, dims);
  }
  /// The host's loops compute a value shared by several outputs once per chunk (see StageRef).
  static constexpr bool stages = true;
  template <std::size_t Id, class E, std::size_t R>
  static auto make_stage(const E& expr, const detail::SlotRec* slots, const Dims<R>& dims) {
    return cpu::StageOut<Id, value_t<E>, R, E>(cpu::Eval<E, R>(expr, slots, dims));
  }
  template <std::size_t R, class... O>
  static void run_fused(const Dims<R>& dims, bool parallel, O&&... outs) {
    cpu::run_fused<R>(dims, parallel, std::forward<O>(outs)...);
  }
  /// dst (M)= src over dst's extents (src broadcast to them).
  template <Mode M, class T, std::size_t R, std::size_t RS>
  static void apply(const loom::detail::View<T, R>& dst, const loom::detail::View<T, RS>& src) {
    cpu::strided_apply<M>(dst, src);
  }
};

}  // namespace loom::backend
