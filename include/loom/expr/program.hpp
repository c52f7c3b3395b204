// loom/expr/program.hpp — compile(expr): a program whose forward and backward passes are generated
// from the expression's type. Buffers are planned when the run-time extents change and reused after.
#pragma once
#include <cstring>
#include <limits>
#include <sstream>
#include <string>
#include <vector>

#include "../backend/cpu/fused.hpp"
#include "../backend/exec.hpp"
#include "../ops/elementwise.hpp"
#include "graph.hpp"
#include "let.hpp"
#include "slots.hpp"

namespace loom {

namespace detail {

template <class T>
struct is_input : std::false_type {};
template <class T, class S, class D>
struct is_input<Input<T, S, D>> : std::true_type {};
template <class T>
struct is_param : std::false_type {};
template <class T, class S, class D>
struct is_param<Param<T, S, D>> : std::true_type {};
template <class T>
struct is_variable : std::false_type {};
template <class T, class S, class D>
struct is_variable<Variable<T, S, D>> : std::true_type {};
template <class T>
struct is_constant : std::false_type {};
template <class T, class S, class D>
struct is_constant<Constant<T, S, D>> : std::true_type {};

template <class Op>
bool same_op(const Op& a, const Op& b) {
  if constexpr (std::is_empty_v<Op>) return true;
  else if constexpr (std::equality_comparable<Op>) return a == b;
  else return std::memcmp(&a, &b, sizeof(Op)) == 0;
}

template <class T>
constexpr bool is_nograd = std::is_same_v<std::remove_cvref_t<T>, NoGrad>;

/// Kernel ops that take the device first: `op.forward(on<D>{}, out, in...)`, `op.backward(on<D>{}, ...)`.
/// (Concepts over types, not requires-expressions over the program's lambdas: nvcc's front end
/// misjudges those.)
template <class Op, class D, class... A>
concept TaggedForward = requires(const Op& op, const A&... a) { op.forward(on<D>{}, a...); };
template <class Op, class D, class... A>
concept TaggedBackward = requires(const Op& op, const A&... a) { op.backward(on<D>{}, a...); };

/// The device whose kernels and loops run a program over tensors on device D: D itself, except in the
/// test build that runs the whole op suite through the device code on Thrust's host systems
/// (LOOM_CPU_RUNS_DEVICE_KERNELS, with LOOM_ENABLE_DEVICE and no CUDA: there, device memory is host
/// memory, so loom::cpu programs can run the loom::cuda kernels; ops without one keep their host kernel).
template <class D>
struct exec_device {
  using type = D;
};
#if defined(LOOM_CPU_RUNS_DEVICE_KERNELS)
#if defined(__CUDACC__) || !defined(LOOM_ENABLE_DEVICE)
#error "LOOM_CPU_RUNS_DEVICE_KERNELS is a test mode of the host device systems: define LOOM_ENABLE_DEVICE, no nvcc"
#endif
template <>
struct exec_device<cpu> {
  using type = cuda;
};
#endif

/// A contribution to slot Slot's gradient, as an expression over slots.
template <std::size_t Slot, class E>
struct GradTo {
  E expr;
};
/// A gradient computed once per chunk of the loop and read (as StageRef<.., Id>) by the outputs after it.
template <std::size_t Id, class E>
struct StageTo {
  E expr;
};

}  // namespace detail

/// What the program planned: sizes and counts a person (or a test) can inspect.
struct ProgramStats {
  std::size_t nodes = 0;            ///< nodes in the expression tree
  std::size_t fused_nodes = 0;      ///< elementwise nodes computed inside another node's loop
  std::size_t buffers = 0;          ///< value buffers owned by the program
  std::size_t grad_buffers = 0;     ///< gradient buffers owned by the program
  std::size_t deduplicated = 0;     ///< nodes found equal to an earlier one (computed once)
  std::size_t kept = 0;             ///< fused nodes whose value the forward also stores for the backward
  std::size_t bytes = 0;            ///< bytes of all planned buffers
  std::size_t plans = 0;            ///< times the buffers were (re)planned
};

template <Expression Root>
class Program {
  using G = detail::Graph<Root>;
  static constexpr std::size_t N = Root::node_count;

 public:
  using value_type = value_t<Root>;
  using shape_type = shape_t<Root>;
  using device_type = device_t<Root>;
  static constexpr std::size_t rank = shape_type::rank;
  static_assert(Root::kind != Kind::leaf && Root::kind != Kind::view,
                "loom::compile: the root must compute something (wrap it in materialize())");

  explicit Program(const Root& root) : root_(std::make_unique<Root>(root)) {
    for (std::size_t i = 0; i < N; ++i) slots_[i].canon = i;
    stats_.nodes = N;
    index<0, Root, false>(*root_);
    resolve_lets();
    dedupe<0, Root, false>(*root_);
    std::vector<std::pair<std::size_t, std::size_t>> ids;  // (input id, slot) of distinct inputs
    for (std::size_t s = 0; s < N; ++s)
      if (input_id_[s] != none && slots_[s].canon == s) ids.emplace_back(input_id_[s], s);
    std::sort(ids.begin(), ids.end());
    for (std::size_t k = 0; k < ids.size(); ++k) input_pos_[ids[k].second] = k;
    for (std::size_t s = 0; s < N; ++s)
      if (input_id_[s] != none) input_pos_[s] = input_pos_[slots_[s].canon];
    num_inputs_ = ids.size();
    for (auto& in : info_)  // point every fused node at the materialized node whose loop computes it
      while (in.fused_into != none && info_[in.fused_into].fused_into != none) in.fused_into = info_[in.fused_into].fused_into;
  }
  Program(const Program&) = delete;
  Program& operator=(const Program&) = delete;
  Program(Program&&) = default;
  Program& operator=(Program&&) = default;

  /// Runs the forward pass with the inputs as bound (Input::bind); returns the root's value (a view
  /// into the program's buffer, valid until the next forward).
  Tensor<value_type, shape_type, device_type> forward() {
    bool changed = !planned_;
    leaves<0, Root, false>(*root_, changed);
    if (changed) plan();
    fwd<0, Root, false>(*root_);
    return value();
  }
  /// Binds tensors to the inputs in the order the inputs were created, then runs forward().
  template <class... Ts>
    requires(sizeof...(Ts) > 0)
  Tensor<value_type, shape_type, device_type> forward(const Ts&... ts) {
    if (sizeof...(Ts) != num_inputs_)
      throw shape_error("loom::Program::forward: " + std::to_string(sizeof...(Ts)) + " tensors given for " +
                        std::to_string(num_inputs_) + " inputs");
    bind_inputs<0, Root, false>(*root_, std::tie(ts...));
    return forward();
  }
  /// Adds d(sum of root)/d(param) to every parameter's grad (gradients accumulate until zero_grad()).
  void backward() {
    if (!planned_) throw std::logic_error("loom::Program::backward: call forward() first");
    if constexpr (Root::requires_grad) {
      clear_grad_buffers();
      if constexpr (!constant_seed) {  // the seed: d root / d root = 1
        const auto g = detail::adj_view<value_type, rank>(slots_[N - 1]);
        if constexpr (HostDevice<device_type>)
          detail::for_each_offset(g.dims, g.strides, [&](std::ptrdiff_t o) { g.data[o] = value_type{1}; });
        else
          set_view(g, value_type{1});
      }
      bwd<0, Root, false>(*root_);
    }
  }
  /// forward() then backward(), in one pass over memory where the program is one fused elementwise
  /// group (one_pass: an elementwise root whose other nodes are leaves or fused into its loop): the
  /// loop that computes the root also adds every gradient, chunk by chunk, while the chunk's operands
  /// are in cache. Elsewhere, and where a gradient is summed over broadcast axes (a reduction the
  /// forward's loop does not do), it runs the two passes. Returns the root's value, as forward() does.
  Tensor<value_type, shape_type, device_type> forward_backward() {
    if constexpr (one_pass) {  // forward(), whose root loop then adds the gradients (forward_with_grads)
      with_grads_ = true;
      struct Reset {
        bool& on;
        ~Reset() { on = false; }
      } reset{with_grads_};
      return forward();
    } else {
      forward();
      backward();
      return value();
    }
  }
  /// Whether forward_backward() runs as one loop (the program is one fused elementwise group).
  static constexpr bool fuses_forward_backward() { return one_pass; }
  /// The root's value: a view into the program's buffers (it keeps them alive; the next forward
  /// overwrites it — clone() to keep a copy).
  Tensor<value_type, shape_type, device_type> value() const {
    auto v = detail::value_view<value_type, rank>(slots_[N - 1]);
    return Tensor<value_type, shape_type, device_type>::wrap(v.data, v.dims, v.strides, arena_);
  }
  /// Throws loom::numeric_error if the root's value holds a NaN or infinity.
  void check_finite() const {
    bool ok = true;
    value().template to<cpu>().for_each([&](value_type& x) { ok = ok && std::isfinite(static_cast<double>(x)); });
    if (!ok) throw numeric_error("loom::Program: the value is not finite (NaN or inf)");
  }

  const ProgramStats& stats() const { return stats_; }
  const Root& expression() const { return *root_; }

  /// One line per node in evaluation order: slot, op, shape, and what the program does with it.
  std::string describe() const {
    std::ostringstream os;
    os << "loom program: " << N << " nodes, " << stats_.buffers << " value buffers, " << stats_.grad_buffers
       << " gradient buffers, " << stats_.bytes << " bytes planned\n";
    for (std::size_t s = 0; s < N; ++s) {
      os << "  %" << s << " = " << info_[s].name << "(";
      for (std::size_t k = 0; k < info_[s].children.size(); ++k) os << (k ? ", %" : "%") << info_[s].children[k];
      os << ") " << dims_string(s) << "  " << role(s) << "\n";
    }
    return os.str();
  }
  /// Graphviz DOT: materialized nodes are boxes (with their buffer size), fused nodes are grouped into
  /// the cluster of the node whose loop computes them, views are dashed.
  std::string to_dot() const {
    std::ostringstream os;
    os << "digraph loom {\n  rankdir=BT;\n  node [fontname=\"monospace\"];\n";
    for (std::size_t s = 0; s < N; ++s) {
      if (info_[s].fused_into != none) continue;
      std::vector<std::size_t> members{s};
      for (std::size_t t = 0; t < N; ++t)
        if (info_[t].fused_into == s) members.push_back(t);
      if (members.size() > 1) os << "  subgraph cluster_" << s << " {\n    label=\"fused loop %" << s << "\";\n";
      for (auto m : members) {
        os << "    n" << m << " [label=\"%" << m << " " << info_[m].name << "\\n" << dims_string(m);
        if (info_[m].bytes) os << "\\n" << info_[m].bytes << " B";
        os << "\"" << (info_[m].fused_into != none ? ", shape=ellipse" : info_[m].kind == Kind::view ? ", shape=box, style=dashed"
                                                               : ", shape=box")
           << "];\n";
      }
      if (members.size() > 1) os << "  }\n";
    }
    for (std::size_t s = 0; s < N; ++s)
      for (auto c : info_[s].children) os << "  n" << slots_[c].canon << " -> n" << s << ";\n";
    return os.str() + "}\n";
  }

 private:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  /// An elementwise root's backward loop reads its incoming gradient, the seed d root / d root = 1, as
  /// the constant it is: no gradient buffer to fill with ones and read back.
  static constexpr bool constant_seed = Root::kind == Kind::elementwise;
  /// Whether every child of E is a leaf or fused into E's loop, and theirs too, all the way down.
  template <class E>
  static constexpr bool fused_through() {
    return []<std::size_t... I>(std::index_sequence<I...>) {
      return ([] {
        using C = detail::child_t<E, I>;
        if constexpr (is_scalar<C>::value) return true;
        else if constexpr (is_let_ref<C>::value || is_let<C>::value) return false;
        else if constexpr (C::kind == Kind::leaf) return true;
        else if constexpr (!G::template inlined<C, detail::parent_allows_inline<E, I>()>) return false;
        else return fused_through<C>();
      }() && ...);
    }(std::make_index_sequence<E::arity>{});
  }
  /// The whole program is one fused loop, seeded with the constant 1: forward_backward() runs the
  /// forward and the backward as one loop.
  static constexpr bool one_pass = constant_seed && Root::requires_grad && fused_through<Root>();
  /// A fused node whose op is costly and whose vjp reads only its output (ops with keep_output: tanh,
  /// sigmoid, exp) keeps its value: the loop that computes it inline also stores it, and the backward
  /// reads it instead of computing it again, as a hand-written backward would. Its gradient still flows
  /// inside the fused loop (no gradient buffer).
  template <class E, bool Inl>
  static constexpr bool kept = [] {
    if constexpr (Inl && E::requires_grad && is_node<E>::value)
      return requires { std::remove_cvref_t<decltype(std::declval<const E&>().op)>::keep_output; };
    else
      return false;
  }();
  using K = typename detail::exec_device<device_type>::type;  // whose kernels run it
  using X = backend::Exec<K>;                                  // the device's fused loops
  using Mem = detail::DeviceMemory<device_type>;               // and memory
  struct Info {
    std::string_view name;
    Kind kind = Kind::leaf;
    std::vector<std::size_t> children;
    std::size_t fused_into = none;  // the materialized node whose loop computes this one
    std::size_t bytes = 0;
  };

  template <std::size_t Base, class E>
  static constexpr std::size_t slot_of = Base + E::node_count - 1;

  // Calls f.template operator()<ChildBase, Child, ChildInlined>(child) for each child of node E.
  template <std::size_t Base, class E, class F>
  static void each_child(const E& e, F&& f) {
    if constexpr (is_node<E>::value)
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        (f.template operator()<Base + E::child_offset[I], detail::child_t<E, I>,
                               G::template inlined<detail::child_t<E, I>, detail::parent_allows_inline<E, I>()>>(
             e.template arg<I>()),
         ...);
      }(std::make_index_sequence<E::arity>{});
  }
  template <std::size_t Base, class E, class F>
  static void each_child_reverse(const E& e, F&& f) {
    if constexpr (is_node<E>::value)
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        constexpr std::size_t n = E::arity;
        (f.template operator()<Base + E::child_offset[n - 1 - I], detail::child_t<E, n - 1 - I>,
                               G::template inlined<detail::child_t<E, n - 1 - I>,
                                                   detail::parent_allows_inline<E, n - 1 - I>()>>(
             e.template arg<n - 1 - I>()),
         ...);
      }(std::make_index_sequence<E::arity>{});
  }

  // ---- compile(): names, node addresses, deduplication -------------------------------------------------
  template <std::size_t Base, class E, bool Inl>
  void index(const E& e) {
    constexpr std::size_t s = slot_of<Base, E>;
    node_[s] = &e;
    rt_tag_[s] = &detail::type_tag<E>;
    auto& in = info_[s];
    in.kind = E::kind;
    if constexpr (is_node<E>::value) {
      in.name = decltype(e.op)::name;
      each_child<Base>(e, [&]<std::size_t CB, class C, bool CI>(const C& c) {
        index<CB, C, CI>(c);
        in.children.push_back(slot_of<CB, C>);
      });
      if constexpr (is_let<E>::value) let_defs_.emplace_back(e.op.id, in.children[0]);
    } else if constexpr (detail::is_param<E>::value) {
      in.name = "param";
    } else if constexpr (detail::is_input<E>::value) {
      in.name = "input";
      input_id_[s] = e.id();
    } else if constexpr (detail::is_constant<E>::value) {
      in.name = "constant";
    } else if constexpr (detail::is_variable<E>::value) {
      in.name = "variable";
    } else if constexpr (is_let_ref<E>::value) {
      in.name = "ref";
      let_ref_[s] = e.id;
    } else {
      in.name = "scalar";
    }
    if constexpr (Inl) {
      ++stats_.fused_nodes;
    }
  }
  /// Points every let reference at its definition: the nearest earlier definition with its id (a let
  /// copied into two places of one expression is defined twice; each copy's body follows its own).
  void resolve_lets() {
    for (std::size_t s = 0; s < N; ++s) {
      if (let_ref_[s] == none) continue;
      std::size_t def = none;
      for (const auto& [id, slot] : let_defs_)
        if (id == let_ref_[s] && slot < s && (def == none || slot > def)) def = slot;
      if (def == none)
        throw std::logic_error("loom::compile: a let reference is used outside the let that defines it");
      let_ref_[s] = def;
      info_[s].children = {def};
    }
  }
  /// A let reference reads its definition's record (value, gradient, extents, strides).
  void copy_view_rec(std::size_t to, std::size_t from) {
    const auto keep = slots_[to].canon;
    slots_[to] = slots_[from];
    slots_[to].canon = keep;
  }
  template <std::size_t Base, class E, bool Inl>
  void dedupe(const E& e) {
    constexpr std::size_t s = slot_of<Base, E>;
    each_child<Base>(e, [&]<std::size_t CB, class C, bool CI>(const C& c) {
      dedupe<CB, C, CI>(c);
      if constexpr (CI) info_[slot_of<CB, C>].fused_into = s;
    });
    if constexpr (G::template shared<E>) {
      for (std::size_t t = E::node_count - 1; t < s; ++t) {  // an equal subtree ends at t >= its size - 1
        if (rt_tag_[t] != &detail::type_tag<E> || slots_[t].canon != t) continue;
        if (same<E>(*static_cast<const E*>(node_[t]), t + 1 - E::node_count, e, Base)) {
          slots_[s].canon = t;
          ++stats_.deduplicated;
          break;
        }
      }
    }
  }
  template <class E>
  bool same(const E& a, std::size_t base_a, const E& b, std::size_t base_b) const {
    if constexpr (is_node<E>::value) {
      if (!detail::same_op(a.op, b.op)) return false;
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return ((slots_[base_a + E::child_offset[I] + detail::child_t<E, I>::node_count - 1].canon ==
                 slots_[base_b + E::child_offset[I] + detail::child_t<E, I>::node_count - 1].canon) &&
                ...);
      }(std::make_index_sequence<E::arity>{});
    } else if constexpr (is_scalar<E>::value) {
      return a.value == b.value;
    } else {
      return a.identity() == b.identity();
    }
  }

  // ---- binding inputs by position ------------------------------------------------------------------------
  template <std::size_t Base, class E, bool Inl, class Tup>
  void bind_inputs(const E& e, const Tup& ts) {
    each_child<Base>(e, [&]<std::size_t CB, class C, bool CI>(const C& c) { bind_inputs<CB, C, CI>(c, ts); });
    if constexpr (detail::is_input<E>::value) {
      constexpr std::size_t s = slot_of<Base, E>;
      if (slots_[s].canon != s) return;
      [&]<std::size_t... K>(std::index_sequence<K...>) {
        ([&] {
          if (input_pos_[s] != K) return;
          using A = std::remove_cvref_t<std::tuple_element_t<K, Tup>>;
          if constexpr (requires { e.bind(std::get<K>(ts)); }) e.bind(std::get<K>(ts));
          else throw shape_error("loom::Program::forward: tensor " + std::to_string(K) + " (" +
                                 std::string(dtype_name<typename A::value_type>()) + ", rank " +
                                 std::to_string(A::rank) + ") does not fit input of shape " +
                                 shape_string<shape_t<E>>() + " and dtype " +
                                 std::string(dtype_name<value_t<E>>()));
        }(), ...);
      }(std::make_index_sequence<std::tuple_size_v<Tup>>{});
    }
  }

  // ---- leaves: refresh pointers every step, note changed extents --------------------------------------------
  template <std::size_t R, class T>
  static void set_rec(detail::SlotRec& r, T* val, T* adj, const Dims<R>& d, const Strides<R>& st) {
    r.val = val;
    r.adj = adj;
    for (std::size_t i = 0; i < R; ++i) r.dims[i] = d[i], r.strides[i] = st[i], r.adj_strides[i] = st[i];
  }
  template <std::size_t Base, class E, bool Inl>
  void leaves(const E& e, bool& changed) {
    constexpr std::size_t s = slot_of<Base, E>;
    constexpr std::size_t R = shape_t<E>::rank;
    each_child<Base>(e, [&]<std::size_t CB, class C, bool CI>(const C& c) { leaves<CB, C, CI>(c, changed); });
    auto& r = slots_[s];
    if constexpr (detail::is_param<E>::value) {
      set_rec<R>(r, e.value().data(), e.grad().data(), e.value().dims(), e.value().strides());
    } else if constexpr (detail::is_input<E>::value || detail::is_constant<E>::value) {
      const auto& t = [&]() -> const auto& {
        if constexpr (detail::is_input<E>::value) return e.bound();
        else return e.value();
      }();
      if (!t.data() && t.size()) throw shape_error("loom::Program::forward: an input was not bound");
      for (std::size_t i = 0; i < R; ++i)
        changed = changed || r.dims[i] != t.dims()[i] || r.strides[i] != t.strides()[i];
      set_rec<R>(r, t.data(), static_cast<value_t<E>*>(nullptr), t.dims(), t.strides());
    } else if constexpr (detail::is_variable<E>::value) {
      const auto& t = e.value();
      if (!t.data() && t.size()) throw shape_error("loom::Program::forward: a variable was not bound");
      for (std::size_t i = 0; i < R; ++i)
        changed = changed || r.dims[i] != t.dims()[i] || r.strides[i] != t.strides()[i];
      set_rec<R>(r, t.data(), e.grad().data(), t.dims(), t.strides());
      for (std::size_t i = 0; i < R; ++i) r.adj_strides[i] = e.grad().strides()[i];
    }
  }

  // ---- planning: extents, shape checks, buffers ----------------------------------------------------------
  void plan() {
    std::size_t bytes = 0;
    auto reserve = [&](std::size_t n) {
      std::size_t off = bytes;
      bytes += (n + tensor_alignment - 1) / tensor_alignment * tensor_alignment;
      return off;
    };
    for (auto& o : val_off_) o = none;
    for (auto& o : adj_off_) o = none;
    stats_.buffers = stats_.grad_buffers = stats_.kept = 0;
    dims_pass<0, Root, false>(*root_, reserve, false);
    adj_begin_ = bytes;
    dims_pass<0, Root, false>(*root_, reserve, true);
    adj_end_ = bytes;
    if (bytes > capacity_) {
      arena_ = Mem::template allocate<std::byte>(bytes);
      capacity_ = bytes;
    }
    stats_.bytes = bytes;
    ++stats_.plans;
    planned_ = true;
  }
  template <std::size_t Base, class E, bool Inl, class Reserve>
  void dims_pass(const E& e, Reserve& reserve, bool grads) {
    constexpr std::size_t s = slot_of<Base, E>;
    constexpr std::size_t R = shape_t<E>::rank;
    using T = value_t<E>;
    each_child<Base>(e, [&]<std::size_t CB, class C, bool CI>(const C& c) { dims_pass<CB, C, CI>(c, reserve, grads); });
    if constexpr (E::kind == Kind::leaf) {
      if constexpr (is_let_ref<E>::value)
        if (!grads) copy_view_rec(s, let_ref_[s]);
      return;
    } else {
      auto& r = slots_[s];
      if (r.canon != s) {
        if (!grads) {
          const auto keep = r.canon;
          r = slots_[keep];
          r.canon = keep;
        }
        return;
      }
      if constexpr (is_let<E>::value) {
        if (!grads) copy_view_rec(s, Base + E::child_offset[1] + detail::child_t<E, 1>::node_count - 1);
      } else if constexpr (E::kind == Kind::view) {
        if (!grads) {
          using C = detail::child_t<E, 0>;
          auto in = detail::value_view<T, shape_t<C>::rank>(slots_[Base + C::node_count - 1]);
          if (view_copies<Base>(e)) in.strides = contiguous_strides(in.dims);
          const auto v = e.op.view(in);
          for (std::size_t i = 0; i < R; ++i) r.dims[i] = v.dims[i], r.strides[i] = r.adj_strides[i] = v.strides[i];
        }
      } else if (!grads) {
        Dims<R> d = node_dims<Base>(e);
        for (std::size_t i = 0; i < R; ++i) r.dims[i] = d[i];
        const auto st = contiguous_strides(d);
        for (std::size_t i = 0; i < R; ++i) r.strides[i] = r.adj_strides[i] = st[i];
      }
      const bool owns = (E::kind == Kind::elementwise && (!Inl || kept<E, Inl>)) || E::kind == Kind::reduce || E::kind == Kind::kernel ||
                        (E::kind == Kind::view && view_copies<Base>(e));
      if (!owns) return;
      std::size_t n = numel(detail::slot_dims<R>(r));
      if constexpr (E::kind == Kind::view) n = copy_size<Base>(e);
      if (!grads) {
        val_off_[s] = reserve(n * sizeof(T));
        info_[s].bytes = n * sizeof(T);
        ++stats_.buffers;
        stats_.kept += kept<E, Inl>;
        if constexpr (E::kind == Kind::kernel && has_scratch<E>) {
          const std::size_t k = [&]<std::size_t... I>(std::index_sequence<I...>) {
            return e.op.scratch(detail::slot_dims<shape_t<detail::child_t<E, I>>::rank>(
                slots_[Base + E::child_offset[I] + detail::child_t<E, I>::node_count - 1])...);
          }(std::make_index_sequence<E::arity>{});
          scratch_off_[s] = reserve(k * sizeof(T));
          info_[s].bytes += k * sizeof(T);
        }
      } else if constexpr (E::requires_grad && !kept<E, Inl> && !(constant_seed && s == N - 1)) {
        adj_off_[s] = reserve(n * sizeof(T));
        ++stats_.grad_buffers;
      }
    }
  }
  /// Kernels that need work memory say how much with scratch(input extents...) (in elements).
  template <class E>
  static constexpr bool has_scratch = [] {
    if constexpr (is_node<E>::value)
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return requires(const E& e) { e.op.scratch(Dims<shape_t<detail::child_t<E, I>>::rank>{}...); };
      }(std::make_index_sequence<E::arity>{});
    else
      return false;
  }();
  template <class E>
  value_t<E>* scratch_of(std::size_t s) const {
    if constexpr (has_scratch<E>) return reinterpret_cast<value_t<E>*>(arena_.get() + scratch_off_[s]);
    else return nullptr;
  }

  template <std::size_t Base, class E>
  Dims<shape_t<E>::rank> node_dims(const E& e) const {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      using Op = std::remove_cvref_t<decltype(e.op)>;
      if constexpr (E::kind == Kind::elementwise) {
        Dims<shape_t<E>::rank> d{};
        d.fill(1);
        (([&] {
           using C = detail::child_t<E, I>;
           if constexpr (!is_scalar<C>::value) {
             auto cd = detail::slot_dims<shape_t<C>::rank>(slots_[Base + E::child_offset[I] + C::node_count - 1]);
             d = broadcast_dims(d, cd, Op::name.data());
           }
         }()),
         ...);
        return d;
      } else {
        return e.op.dims(detail::slot_dims<shape_t<detail::child_t<E, I>>::rank>(
            slots_[Base + E::child_offset[I] + detail::child_t<E, I>::node_count - 1])...);
      }
    }(std::make_index_sequence<E::arity>{});
  }
  template <std::size_t Base, class E>
  bool view_copies(const E& e) const {
    if constexpr (requires { e.op.needs_contiguous; }) {
      using C = detail::child_t<E, 0>;
      constexpr std::size_t cs = Base + C::node_count - 1;
      // a view node or a leaf bound to a strided tensor (an input given a transposed view)
      return (C::kind == Kind::view || C::kind == Kind::leaf) &&
             !detail::value_view<value_t<C>, shape_t<C>::rank>(slots_[cs]).contiguous();
    } else {
      return false;
    }
  }
  template <std::size_t Base, class E>
  std::size_t copy_size(const E&) const {
    using C = detail::child_t<E, 0>;
    return numel(detail::slot_dims<shape_t<C>::rank>(slots_[Base + C::node_count - 1]));
  }

  // ---- forward -------------------------------------------------------------------------------------------
  /// The expression a fused loop evaluates for node E: inlined nodes as their op over their children,
  /// the rest as reads of their buffers. A kept node is a read too, except in the forward loop that
  /// computes it (Tee: Store = true), which stores it on the way.
  template <std::size_t Base, class E, bool Inl, bool Store = false>
  auto bind(const E& e) const {
    if constexpr (is_scalar<E>::value) {
      return e;
    } else if constexpr (Inl && !kept<E, Inl>) {
      return bind_self<Base, Store>(e);
    } else if constexpr (kept<E, Inl> && Store) {
      using B = decltype(bind_self<Base, true>(e));
      return Tee<B, slot_of<Base, E>>{{}, bind_self<Base, true>(e)};
    } else {
      return SlotRef<value_t<E>, shape_t<E>, slot_of<Base, E>, false, device_t<E>>{};
    }
  }
  template <std::size_t Base, bool Store = false, class E>
  auto bind_self(const E& e) const {
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      return Node<std::remove_cvref_t<decltype(e.op)>,
                  decltype(bind<Base + E::child_offset[I], detail::child_t<E, I>,
                                G::template inlined<detail::child_t<E, I>, detail::parent_allows_inline<E, I>()>, Store>(
                      e.template arg<I>()))...>(
          e.op, bind<Base + E::child_offset[I], detail::child_t<E, I>,
                     G::template inlined<detail::child_t<E, I>, detail::parent_allows_inline<E, I>()>, Store>(
                    e.template arg<I>())...);
    }(std::make_index_sequence<E::arity>{});
  }
  template <class T, std::size_t R>
  auto own_access(std::size_t s, bool adj) const {
    auto v = adj ? detail::adj_view<T, R>(slots_[s]) : detail::value_view<T, R>(slots_[s]);
    return X::template access<T, R>(v.data, v.strides);
  }
  /// The output of the loop that writes elementwise node E (at Base) into its own buffer over d.
  template <std::size_t Base, bool Store, class E, std::size_t R>
  auto own_out(const E& e, const Dims<R>& d) const {
    return X::template make_out<backend::Mode::assign>(own_access<value_t<E>, R>(slot_of<Base, E>, false),
                                                       bind_self<Base, Store>(e), slots_.data(), d);
  }
  /// Every element of v set to x / multiplied by x (one fused loop on the program's device).
  template <class T, std::size_t R>
  static void set_view(const detail::View<T, R>& v, T x) {
    X::template run_fused<R>(v.dims, true, X::template make_out<backend::Mode::assign>(
                                              X::template access<T, R>(v.data, v.strides), Scalar<T, device_type>(x),
                                              static_cast<const detail::SlotRec*>(nullptr), v.dims));
  }
  template <class T, std::size_t R>
  static void scale_view(const detail::View<T, R>& v, T x) {
    detail::SlotRec tmp{};
    tmp.val = v.data;
    for (std::size_t i = 0; i < R; ++i) tmp.dims[i] = v.dims[i], tmp.strides[i] = v.strides[i];
    X::template run_fused<R>(
        v.dims, true,
        X::template make_out<backend::Mode::assign>(
            X::template access<T, R>(v.data, v.strides),
            make_node(ops::Mul{}, SlotRef<T, DynShape<R>, 0, false, device_type>{}, Scalar<T, device_type>(x)), &tmp,
            v.dims));
  }

  template <std::size_t Base, class E, bool Inl>
  void fwd(const E& e) {
    constexpr std::size_t s = slot_of<Base, E>;
    constexpr std::size_t R = shape_t<E>::rank;
    using T = value_t<E>;
    each_child<Base>(e, [&]<std::size_t CB, class C, bool CI>(const C& c) { fwd<CB, C, CI>(c); });
    auto& r = slots_[s];
    if constexpr (is_let_ref<E>::value) {
      copy_view_rec(s, let_ref_[s]);
    } else if constexpr (kept<E, Inl>) {  // stored by the loop it is fused into (run_with_kept)
      r.val = arena_.get() + val_off_[s];
      r.adj = nullptr;
    } else if constexpr (E::kind == Kind::leaf || Inl) {
      return;
    } else {
      if (r.canon != s) {
        const auto keep = r.canon;
        r = slots_[keep];
        r.canon = keep;
        return;
      }
      if constexpr (E::kind != Kind::view) {
        r.val = arena_.get() + val_off_[s];
        r.adj = adj_off_[s] != none ? arena_.get() + adj_off_[s] : nullptr;
      }
      if constexpr (E::kind == Kind::elementwise) {
        const auto d = detail::slot_dims<R>(r);
        auto make = [&]<bool Store>() { return own_out<Base, Store>(e, d); };
        if constexpr (one_pass && s == N - 1)
          if (with_grads_) return forward_with_grads<Base>(e, d, make);
        run_with_kept<Base, E, false>(e, d, make);
      } else if constexpr (E::kind == Kind::reduce) {
        reduce_forward<Base>(e);
      } else if constexpr (is_let<E>::value) {
        copy_view_rec(s, Base + E::child_offset[1] + detail::child_t<E, 1>::node_count - 1);
      } else if constexpr (E::kind == Kind::view) {
        view_forward<Base>(e);
      } else {
        [&]<std::size_t... I>(std::index_sequence<I...>) {
          auto out = detail::value_view<T, R>(r);
          auto in = [&]<std::size_t J>(std::integral_constant<std::size_t, J>) {
            return detail::value_view<value_t<detail::child_t<E, J>>, shape_t<detail::child_t<E, J>>::rank>(
                slots_[Base + E::child_offset[J] + detail::child_t<E, J>::node_count - 1]);
          };
          // An op written once for every device takes on<D> first; host-only kernels do not.
          using Op = std::remove_cvref_t<decltype(e.op)>;
          constexpr bool tagged = has_scratch<E> ? detail::TaggedForward<Op, K, decltype(out), in_view<E, I>..., T*>
                                                 : detail::TaggedForward<Op, K, decltype(out), in_view<E, I>...>;
          if constexpr (tagged && has_scratch<E>) {
            e.op.forward(on<K>{}, out, in(std::integral_constant<std::size_t, I>{})..., scratch_of<E>(s));
          } else if constexpr (tagged) {
            e.op.forward(on<K>{}, out, in(std::integral_constant<std::size_t, I>{})...);
          } else if constexpr (!HostDevice<device_type>) {
            static_assert(tagged, "loom: this op has no kernel for loom::cuda yet (its type is in the instantiation trace)");
          } else if constexpr (has_scratch<E>) {
            e.op.forward(out, in(std::integral_constant<std::size_t, I>{})..., scratch_of<E>(s));
          } else {
            e.op.forward(out, in(std::integral_constant<std::size_t, I>{})...);
          }
        }(std::make_index_sequence<E::arity>{});
      }
    }
  }

  /// Runs the loop of a fused group over d: make.template operator()<Store>() builds its output.
  /// Where kept nodes are among `member` (the group's root, or the child a reduction fuses) and the
  /// nodes fused into it, the loop stores them on the way (Store = true: Tee) when they span d; a kept
  /// node broadcast at run time is stored by a loop of its own first, and the group's loop reads it.
  /// More outputs (`more`, rows that may run on several threads where `parallel`) can join the
  /// group's loop after its own.
  template <std::size_t Base, class E, bool Inl, std::size_t R, class Make, class... More>
  void run_with_kept(const E& member, const Dims<R>& d, const Make& make, bool parallel = true, More&&... more) {
    auto loop = [&]<bool Store>() {  // (one path below runs it, once)
      X::template run_fused<R>(d, parallel, make.template operator()<Store>(), std::forward<More>(more)...);
    };
    if constexpr (!any_kept<E, Inl>()) {
      loop.template operator()<false>();
    } else if constexpr (shape_t<E>::is_static) {  // the group's nodes share E's static extents: all fit
      loop.template operator()<true>();
    } else {
      bool fit = true;
      each_kept<Base, E, Inl>(member, [&]<std::size_t S, class C>(const C&) {
        fit = fit && numel(detail::slot_dims<R>(slots_[S])) == numel(d);  // (a fused group has one rank)
      });
      if (!fit)
        each_kept<Base, E, Inl>(member, [&]<std::size_t S, class C>(const C& c) {
          const auto cd = detail::slot_dims<R>(slots_[S]);
          X::template run_fused<R>(cd, true, own_out<S + 1 - C::node_count, false>(c, cd));
        });
      if (fit) loop.template operator()<true>();
      else loop.template operator()<false>();
    }
  }
  /// The root's loop with the backward's outputs after its own (forward_backward() of a one_pass
  /// program): each chunk of the root is computed, then every gradient reads it (and the kept values the
  /// loop just stored) while it is in cache. A gradient summed over broadcast axes would make the loop
  /// a reduction, run on one thread: there the backward keeps its own loop.
  template <std::size_t Base, class E, std::size_t R, class Make>
  void forward_with_grads(const E& e, const Dims<R>& d, const Make& make) {
    clear_grad_buffers();  // (as backward() does first)
    const auto outs = backprop<Base, E, true>(e, Scalar<value_t<E>, device_t<E>>(value_t<E>{1}));
    std::apply([&](const auto&... o) {
      if ((spans(o, d) && ...)) {
        run_with_kept<Base, E, false>(e, d, make, (owned_grad(o) && ...), make_grad_out<R>(o, d)...);
      } else {
        run_with_kept<Base, E, false>(e, d, make);
        run_grads<R>(d, outs);
      }
    }, outs);
  }
  template <std::size_t R, std::size_t Slot, class GE>
  bool spans(const detail::GradTo<Slot, GE>&, const Dims<R>& d) const {
    return numel(detail::slot_dims<G::facts[Slot].rank>(slots_[slots_[Slot].canon])) == numel(d);
  }
  template <std::size_t R, std::size_t Id, class GE>
  static constexpr bool spans(const detail::StageTo<Id, GE>&, const Dims<R>&) { return true; }
  void clear_grad_buffers() {
    if (adj_end_ > adj_begin_) Mem::zero_bytes(arena_.get() + adj_begin_, adj_end_ - adj_begin_);
  }

  /// Whether E (fused when Inl) or a node fused into it is kept.
  template <class E, bool Inl>
  static constexpr bool any_kept() {
    if constexpr (!is_node<E>::value) {
      return false;
    } else {
      return kept<E, Inl> || []<std::size_t... I>(std::index_sequence<I...>) {
        return ([] {
          using C = detail::child_t<E, I>;
          if constexpr (G::template inlined<C, detail::parent_allows_inline<E, I>()>) return any_kept<C, true>();
          else return false;  // (a materialized child's group is its own loop)
        }() || ...);
      }(std::make_index_sequence<E::arity>{});
    }
  }
  /// Calls f.template operator()<slot, C>(c) for each kept node of e's fused group, children first.
  template <std::size_t Base, class E, bool Inl, class F>
  void each_kept(const E& e, F&& f) const {
    each_child<Base>(e, [&]<std::size_t CB, class C, bool CI>(const C& c) {
      if constexpr (CI) each_kept<CB, C, true>(c, f);
    });
    if constexpr (kept<E, Inl>) f.template operator()<slot_of<Base, E>, E>(e);
  }

  template <std::size_t Base, class E>
  void reduce_forward(const E& e) {
    constexpr std::size_t s = slot_of<Base, E>;
    using C = detail::child_t<E, 0>;
    using T = value_t<E>;
    constexpr std::size_t RC = shape_t<C>::rank;
    constexpr bool ci = G::template inlined<C, true>;
    auto& r = slots_[s];
    auto out = detail::value_view<T, shape_t<E>::rank>(r);
    const T init = e.op.is_max ? -std::numeric_limits<T>::infinity() : T{0};
    set_view(out, init);
    const auto cd = detail::slot_dims<RC>(slots_[Base + C::node_count - 1]);
    auto dest = X::template access<T, RC>(out.data, e.op.kept_strides(cd, out.strides));
    auto run = [&]<backend::Mode M>() {
      auto make = [&]<bool Store>() {
        return X::template make_out<M>(dest, bind<Base, C, ci, Store>(e.template arg<0>()), slots_.data(), cd);
      };
      if constexpr (ci) run_with_kept<Base, C, true>(e.template arg<0>(), cd, make);
      else X::template run_fused<RC>(cd, true, make.template operator()<false>());
    };
    if (e.op.is_max) run.template operator()<backend::Mode::max>();
    else run.template operator()<backend::Mode::add>();
    if (e.op.is_mean) {
      const T scale = T(1) / T(numel(cd) / std::max<std::size_t>(1, out.size()));
      scale_view(out, scale);
    }
  }

  template <std::size_t Base, class E>
  void view_forward(const E& e) {
    constexpr std::size_t s = slot_of<Base, E>;
    using C = detail::child_t<E, 0>;
    using T = value_t<E>;
    constexpr std::size_t RC = shape_t<C>::rank, R = shape_t<E>::rank;
    constexpr std::size_t cs = Base + C::node_count - 1;
    auto& r = slots_[s];
    auto in = detail::value_view<T, RC>(slots_[cs]);
    auto gin = detail::adj_view<T, RC>(slots_[cs]);
    if (val_off_[s] != none) {  // copy mode: the input is not laid out as the view needs
      auto* own = reinterpret_cast<T*>(arena_.get() + val_off_[s]);
      detail::View<T, RC> c{own, in.dims, contiguous_strides(in.dims)};
      copy_into(c, in);
      in = c;
      gin = {adj_off_[s] != none ? reinterpret_cast<T*>(arena_.get() + adj_off_[s]) : nullptr, in.dims, c.strides};
    }
    detail::View<T, R> v = e.op.view(in), g = e.op.view(gin);
    r.val = v.data;
    r.adj = gin.data ? g.data : nullptr;
    for (std::size_t i = 0; i < R; ++i) r.dims[i] = v.dims[i], r.strides[i] = v.strides[i], r.adj_strides[i] = g.strides[i];
  }
  template <class T, std::size_t R>
  void copy_into(const detail::View<T, R>& dst, const detail::View<T, R>& src) const {
    detail::SlotRec tmp{};
    tmp.val = src.data;
    for (std::size_t i = 0; i < R; ++i) tmp.dims[i] = src.dims[i], tmp.strides[i] = src.strides[i];
    X::template run_fused<R>(dst.dims, true,
                             X::template make_out<backend::Mode::assign>(
                                   X::template access<T, R>(dst.data, dst.strides),
                                   SlotRef<T, DynShape<R>, 0, false, device_type>{}, &tmp, dst.dims));
  }

  // ---- backward ------------------------------------------------------------------------------------------
  template <std::size_t Base, class E, bool Inl>
  void bwd(const E& e) {
    constexpr std::size_t s = slot_of<Base, E>;
    if constexpr (E::requires_grad && E::kind != Kind::leaf && !Inl) {
      if (slots_[s].canon == s) {
        if constexpr (E::kind == Kind::elementwise) elementwise_backward<Base>(e);
        else if constexpr (E::kind == Kind::reduce) reduce_backward<Base>(e);
        else if constexpr (E::kind == Kind::view) view_backward<Base>(e);
        else kernel_backward<Base>(e);
      }
    }
    if constexpr (E::requires_grad)
      each_child_reverse<Base>(e, [&]<std::size_t CB, class C, bool CI>(const C& c) { bwd<CB, C, CI>(c); });
  }

  /// Gradient contributions of an elementwise node (root of its fused group, or inlined in it) whose
  /// incoming gradient is the expression g; returns one GradTo per materialized child reached.
  template <std::size_t Base, class E, bool IsRoot, class GE>
  auto backprop(const E& e, const GE& g) const {
    auto y = [&] {
      if constexpr (IsRoot || kept<E, true>) return SlotRef<value_t<E>, shape_t<E>, slot_of<Base, E>, false, device_t<E>>{};
      else return bind_self<Base>(e);
    }();
    return [&]<std::size_t... I>(std::index_sequence<I...>) {
      auto grads = e.op.vjp(g, y, bind<Base + E::child_offset[I], detail::child_t<E, I>,
                                       G::template inlined<detail::child_t<E, I>, detail::parent_allows_inline<E, I>()>>(
                                      e.template arg<I>())...);
      return std::tuple_cat(route<Base + E::child_offset[I], detail::child_t<E, I>,
                                  G::template inlined<detail::child_t<E, I>, detail::parent_allows_inline<E, I>()>>(
          e.template arg<I>(), std::get<I>(grads))...);
    }(std::make_index_sequence<E::arity>{});
  }
  /// The gradient g flowing into an inlined node C reaches each of C's differentiable inputs; where there
  /// are several and g is not a plain read, the host loop computes g once per chunk (a StageTo ahead of
  /// the outputs reading it) instead of once per output.
  template <std::size_t CB, class C, bool CI, class GE>
  auto route(const C& c, const GE& g) const {
    if constexpr (detail::is_nograd<GE> || !C::requires_grad) return std::tuple<>{};
    else if constexpr (CI) {
      if constexpr (X::stages && GE::kind != Kind::leaf && differentiable_inputs<C> >= 2) {
        constexpr std::size_t id = slot_of<CB, C>;
        return std::tuple_cat(std::tuple{detail::StageTo<id, GE>{g}},
                              backprop<CB, C, false>(c, StageRef<value_t<GE>, shape_t<GE>, id, device_t<GE>>{}));
      } else {
        return backprop<CB, C, false>(c, g);
      }
    } else {
      return std::tuple{detail::GradTo<slot_of<CB, C>, GE>{g}};
    }
  }
  template <class C>
  static constexpr std::size_t differentiable_inputs = []<std::size_t... I>(std::index_sequence<I...>) {
    return (std::size_t{detail::child_t<C, I>::requires_grad} + ... + 0);
  }(std::make_index_sequence<C::arity>{});
  template <std::size_t R, class... GT>
  void run_grads(const Dims<R>& d, const std::tuple<GT...>& outs) {
    if constexpr (sizeof...(GT) > 0)  // (none: no input of the group needs a gradient)
      std::apply([&](const auto&... o) {
        X::template run_fused<R>(d, (owned_grad(o) && ...), make_grad_out<R>(o, d)...);
      }, outs);
  }
  /// Gradient rows may run on several threads only when they land in owned buffers (not views).
  template <std::size_t Slot, class GE>
  static constexpr bool owned_grad(const detail::GradTo<Slot, GE>&) { return !G::facts[Slot].grad_aliases; }
  template <std::size_t Id, class GE>
  static constexpr bool owned_grad(const detail::StageTo<Id, GE>&) { return true; }
  template <std::size_t R, std::size_t Id, class GE>
  auto make_grad_out(const detail::StageTo<Id, GE>& o, const Dims<R>& d) const {
    return X::template make_stage<Id>(o.expr, slots_.data(), d);
  }
  template <std::size_t R, std::size_t Slot, class GE>
  auto make_grad_out(const detail::GradTo<Slot, GE>& o, const Dims<R>& d) const {
    using T = value_t<GE>;
    constexpr std::size_t RS = G::facts[Slot].rank;
    return X::template make_out<backend::Mode::add>(
        X::template slot_access<T, RS, R>(slots_[slots_[Slot].canon], true, d), o.expr, slots_.data(), d);
  }
  template <std::size_t Base, class E>
  void elementwise_backward(const E& e) {
    constexpr std::size_t s = slot_of<Base, E>;
    constexpr std::size_t R = shape_t<E>::rank;
    if constexpr (constant_seed && s == N - 1)
      run_grads<R>(detail::slot_dims<R>(slots_[s]), backprop<Base, E, true>(e, Scalar<value_t<E>, device_t<E>>(value_t<E>{1})));
    else
      run_grads<R>(detail::slot_dims<R>(slots_[s]),
                   backprop<Base, E, true>(e, SlotRef<value_t<E>, shape_t<E>, s, true, device_t<E>>{}));
  }
  template <std::size_t Base, class E>
  void reduce_backward(const E& e) {
    constexpr std::size_t s = slot_of<Base, E>;
    using C = detail::child_t<E, 0>;
    using T = value_t<E>;
    constexpr std::size_t RC = shape_t<C>::rank;
    constexpr bool ci = G::template inlined<C, true>;
    using Op = std::remove_cvref_t<decltype(e.op)>;
    const auto cd = detail::slot_dims<RC>(slots_[Base + C::node_count - 1]);
    // The incoming gradient, read with the reduced axes kept (extent 1), broadcast over the input.
    auto g = SlotRef<T, typename Op::template kept_shape<shape_t<C>>, s, true, device_t<E>>{};
    auto gv = SlotRef<T, typename Op::template kept_shape<shape_t<C>>, s, false, device_t<E>>{};
    const auto n_out = numel(detail::slot_dims<shape_t<E>::rank>(slots_[s]));
    keep_view(s, e.op, cd);
    auto x = bind<Base, C, ci>(e.template arg<0>());
    const T scale = e.op.is_mean ? T(1) / T(numel(cd) / std::max<std::size_t>(1, n_out)) : T(1);
    auto run = [&](const auto& gc) {
      if constexpr (ci) run_grads<RC>(cd, backprop<Base, C, false>(e.template arg<0>(), gc));
      else run_grads<RC>(cd, std::tuple{detail::GradTo<slot_of<Base, C>, std::remove_cvref_t<decltype(gc)>>{gc}});
    };
    if (e.op.is_max) run(g * equal(x, gv));
    else if (e.op.is_mean) run(g * scale);
    else run(g);
    unkeep_view(s);
  }
  // While a reduction's backward runs, its slot is read with the input's rank (reduced axes kept).
  template <class Op, std::size_t RC>
  void keep_view(std::size_t s, const Op& op, const Dims<RC>& cd) {
    saved_ = slots_[s];
    auto& r = slots_[s];
    const auto kd = op.kept_dims(cd);
    const auto ks = contiguous_strides(kd);
    for (std::size_t i = 0; i < RC; ++i) r.dims[i] = kd[i], r.strides[i] = r.adj_strides[i] = ks[i];
  }
  void unkeep_view(std::size_t s) { slots_[s] = saved_; }

  template <std::size_t Base, class E>
  void view_backward(const E&) {
    constexpr std::size_t s = slot_of<Base, E>;
    if (val_off_[s] == none) return;  // a true view: its gradient already is a view of the input's
    using C = detail::child_t<E, 0>;
    using T = value_t<E>;
    constexpr std::size_t RC = shape_t<C>::rank;
    constexpr std::size_t cs = Base + C::node_count - 1;
    const auto cd = detail::slot_dims<RC>(slots_[cs]);
    detail::SlotRec tmp{};
    tmp.val = arena_.get() + adj_off_[s];
    const auto st = contiguous_strides(cd);
    for (std::size_t i = 0; i < RC; ++i) tmp.dims[i] = cd[i], tmp.strides[i] = st[i];
    X::template run_fused<RC>(cd, false,
                              X::template make_out<backend::Mode::add>(
                                    X::template slot_access<T, RC, RC>(slots_[slots_[cs].canon], true, cd),
                                    SlotRef<T, DynShape<RC>, 0, false, device_type>{}, &tmp, cd));
  }
  template <std::size_t Base, class E>
  void kernel_backward(const E& e) {
    constexpr std::size_t s = slot_of<Base, E>;
    constexpr std::size_t R = shape_t<E>::rank;
    using T = value_t<E>;
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      const auto g = detail::adj_view<T, R>(slots_[s]);
      const auto v = detail::value_view<T, R>(slots_[s]);
      using Op = std::remove_cvref_t<decltype(e.op)>;
      using V = detail::View<T, R>;
      constexpr bool tagged =
          has_scratch<E> ? detail::TaggedBackward<Op, K, V, V, std::pair<in_view<E, I>, in_view<E, I>>..., T*>
                         : detail::TaggedBackward<Op, K, V, V, std::pair<in_view<E, I>, in_view<E, I>>...>;
      if constexpr (tagged && has_scratch<E>)
        e.op.backward(on<K>{}, g, v, child_arg<Base + E::child_offset[I], detail::child_t<E, I>>()..., scratch_of<E>(s));
      else if constexpr (tagged)
        e.op.backward(on<K>{}, g, v, child_arg<Base + E::child_offset[I], detail::child_t<E, I>>()...);
      else if constexpr (!HostDevice<device_type>)
        static_assert(tagged, "loom: this op has no backward kernel for loom::cuda yet");
      else if constexpr (has_scratch<E>)
        e.op.backward(detail::adj_view<T, R>(slots_[s]), detail::value_view<T, R>(slots_[s]),
                      child_arg<Base + E::child_offset[I], detail::child_t<E, I>>()..., scratch_of<E>(s));
      else
        e.op.backward(detail::adj_view<T, R>(slots_[s]), detail::value_view<T, R>(slots_[s]),
                      child_arg<Base + E::child_offset[I], detail::child_t<E, I>>()...);
    }(std::make_index_sequence<E::arity>{});
  }
  /// The view a kernel gets of input I of node E (backward: a (value, gradient) pair of them).
  template <class E, std::size_t I>
  using in_view = detail::View<value_t<detail::child_t<E, I>>, shape_t<detail::child_t<E, I>>::rank>;
  /// A kernel's view of one input: value, and gradient (data null when none flows there).
  template <std::size_t CB, class C>
  auto child_arg() const {
    constexpr std::size_t cs = slot_of<CB, C>;
    using T = value_t<C>;
    constexpr std::size_t RC = shape_t<C>::rank;
    auto g = detail::adj_view<T, RC>(slots_[cs]);
    if constexpr (!C::requires_grad) g.data = nullptr;
    return std::pair{detail::value_view<T, RC>(slots_[cs]), g};
  }

  std::string dims_string(std::size_t s) const {
    std::string out = "[";
    for (std::size_t i = 0; i < G::facts[s].rank; ++i) out += (i ? ", " : "") + std::to_string(slots_[s].dims[i]);
    return out + "]";
  }
  std::string role(std::size_t s) const {
    const auto& in = info_[s];
    if (slots_[s].canon != s) return "same value as %" + std::to_string(slots_[s].canon) + " (computed once)";
    if (in.fused_into != none)
      return "fused into the loop of %" + std::to_string(in.fused_into) +
             (val_off_[s] != none ? ", value kept for the backward (" + std::to_string(in.bytes) + " B)" : "");
    switch (in.kind) {
      case Kind::leaf: return "leaf";
      case Kind::view: return val_off_[s] != none ? "view (of a contiguous copy, " + std::to_string(in.bytes) + " B)" : "view (no copy)";
      default: return "buffer " + std::to_string(in.bytes) + " B" + (adj_off_[s] != none ? " + gradient buffer" : "");
    }
  }

  std::unique_ptr<Root> root_;
  std::array<detail::SlotRec, N> slots_{};
  std::array<const void*, N> node_{};
  std::array<const void*, N> rt_tag_{};  // run-time type identity of each slot's node
  std::array<Info, N> info_{};
  std::array<std::size_t, N> val_off_{}, adj_off_{}, scratch_off_{};
  static constexpr std::array<std::size_t, N> nones = [] {
    std::array<std::size_t, N> a{};
    a.fill(none);
    return a;
  }();
  std::array<std::size_t, N> input_id_ = nones;
  std::array<std::size_t, N> input_pos_{};
  std::array<std::size_t, N> let_ref_ = nones;                    // a let reference's definition slot
  std::vector<std::pair<std::size_t, std::size_t>> let_defs_;      // (let id, definition slot)
  std::size_t num_inputs_ = 0;
  std::shared_ptr<std::byte> arena_;
  std::size_t capacity_ = 0, adj_begin_ = 0, adj_end_ = 0;
  bool planned_ = false;
  bool with_grads_ = false;  // forward_backward() of a one_pass program: the root's loop adds the gradients
  detail::SlotRec saved_{};
  ProgramStats stats_{};
};

/// Generates the forward and backward passes of `e` (no work happens until forward()).
template <Expression E>
auto compile(const E& e) {
  if constexpr (E::kind == Kind::leaf || E::kind == Kind::view) return Program<decltype(materialize(e))>(materialize(e));
  else return Program<E>(e);
}

}  // namespace loom
