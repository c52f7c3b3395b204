// loom/expr/expr.hpp — the graph is a type: leaves (Param, Input, Constant, Scalar) and Node<Op, Args...>.
#pragma once
#include <atomic>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>

#include "../core/tensor.hpp"

namespace loom {

/// How the compiled program treats a node.
enum class Kind {
  leaf,         ///< storage owned outside the program (parameter, input, constant)
  elementwise,  ///< fused into its consumer's loop unless shared or shape-changing
  reduce,       ///< a fused loop over its (possibly fused) input, accumulating into its own buffer
  view,         ///< a strided view of its input; no buffer, no copy
  kernel        ///< a kernel writing its own buffer (matmul, concat, ...)
};

namespace detail {
template <class E>
inline constexpr char type_tag = 0;  // &type_tag<E> identifies the type E at run time
}  // namespace detail

/// What every node offers: element type, static shape, device, node count and kind.
template <class E>
concept Expression = requires {
  typename std::remove_cvref_t<E>::value_type;
  typename std::remove_cvref_t<E>::shape_type;
  typename std::remove_cvref_t<E>::device_type;
  { std::remove_cvref_t<E>::node_count } -> std::convertible_to<std::size_t>;
  { std::remove_cvref_t<E>::kind } -> std::convertible_to<Kind>;
};

template <class E>
using value_t = typename std::remove_cvref_t<E>::value_type;
template <class E>
using shape_t = typename std::remove_cvref_t<E>::shape_type;
template <class E>
using device_t = typename std::remove_cvref_t<E>::device_type;

/// Marks a gradient that does not flow (masks, comparisons, detached values).
struct NoGrad {};

// ---- leaves -------------------------------------------------------------------------------------------

template <Dtype T, ShapeType S, Device D = cpu>
struct LeafBase {
  using value_type = T;
  using shape_type = S;
  using device_type = D;
  static constexpr std::size_t node_count = 1;
  static constexpr Kind kind = Kind::leaf;
};

/// A trainable tensor: value and gradient with stable addresses, shared by every copy of the handle.
template <Dtype T, StaticShape S, Device D = cpu>
class Param : public LeafBase<T, S, D> {
 public:
  static constexpr bool requires_grad = true;
  explicit Param(std::string name = {}) : d_(std::make_shared<Data>()) { d_->name = std::move(name); }
  explicit Param(const Tensor<T, S, D>& init, std::string name = {}) : Param(std::move(name)) {
    d_->value.assign(init);
  }
  const Tensor<T, S, D>& value() const { return d_->value; }
  const Tensor<T, S, D>& grad() const { return d_->grad; }
  const std::string& name() const { return d_->name; }
  void zero_grad() const { d_->grad.fill(T{}); }
  const void* identity() const { return d_.get(); }

 private:
  struct Data {
    Tensor<T, S, D> value, grad;
    std::string name;
  };
  std::shared_ptr<Data> d_;
};

namespace detail {
inline std::size_t next_input_id() {
  static std::atomic<std::size_t> n{0};
  return n++;
}
}  // namespace detail

/// A placeholder bound to a tensor when the step runs; its `dyn` extents may change between steps.
template <Dtype T, ShapeType S, Device D = cpu>
class Input : public LeafBase<T, S, D> {
 public:
  static constexpr bool requires_grad = false;
  Input() : d_(std::make_shared<Data>()) { d_->id = detail::next_input_id(); }
  /// Binds the tensor that the next forward reads (no copy: keep it alive until then).
  template <ShapeType S2>
    requires(S2::rank == S::rank)  // (a tensor of another rank does not fit: Program::forward says which)
  void bind(const Tensor<T, S2, D>& t) const {
    check_dims<S>(t.dims(), "loom::Input::bind");
    d_->bound = Tensor<T, S, D>::wrap(t.data(), t.dims(), t.strides(), t.owner());
  }
  const Tensor<T, S, D>& bound() const { return d_->bound; }
  std::size_t id() const { return d_->id; }
  const void* identity() const { return d_.get(); }

 private:
  struct Data {
    Tensor<T, S, D> bound;
    std::size_t id = 0;
  };
  std::shared_ptr<Data> d_;
};

template <Dtype T, ShapeType S, Device D = cpu>
Input<T, S, D> input() { return {}; }

/// A placeholder bound at run time to a value AND a gradient tensor (both caller-owned): like an Input,
/// but the program's backward adds d(sum of root)/d(value) into the bound gradient. What a sub-program
/// (a scan cell) needs to hand gradients back to its caller.
template <Dtype T, ShapeType S, Device D = cpu>
class Variable : public LeafBase<T, S, D> {
 public:
  static constexpr bool requires_grad = true;
  Variable() : d_(std::make_shared<Data>()) {}
  /// Binds the value and the gradient (same extents; no copies: keep both alive until backward).
  template <ShapeType S2, ShapeType S3>
    requires(S2::rank == S::rank && S3::rank == S::rank)
  void bind(const Tensor<T, S2, D>& value, const Tensor<T, S3, D>& grad) const {
    check_dims<S>(value.dims(), "loom::Variable::bind");
    if (grad.dims() != value.dims())
      throw shape_error("loom::Variable::bind: gradient " + to_string(grad.dims()) + " does not match value " +
                        to_string(value.dims()));
    d_->value = Tensor<T, S, D>::wrap(value.data(), value.dims(), value.strides(), value.owner());
    d_->grad = Tensor<T, S, D>::wrap(grad.data(), grad.dims(), grad.strides(), grad.owner());
  }
  const Tensor<T, S, D>& value() const { return d_->value; }
  const Tensor<T, S, D>& grad() const { return d_->grad; }
  const void* identity() const { return d_.get(); }

 private:
  struct Data {
    Tensor<T, S, D> value, grad;
  };
  std::shared_ptr<Data> d_;
};

/// A tensor whose value the program reads but never differentiates.
template <Dtype T, ShapeType S, Device D = cpu>
class Constant : public LeafBase<T, S, D> {
 public:
  static constexpr bool requires_grad = false;
  explicit Constant(const Tensor<T, S, D>& t) : t_(t) {}
  const Tensor<T, S, D>& value() const { return t_; }
  const void* identity() const { return t_.data(); }

 private:
  Tensor<T, S, D> t_;
};

/// A number broadcast against anything; evaluated in registers, never stored.
template <Dtype T, Device D = cpu>
struct Scalar : LeafBase<T, Shape<>, D> {
  static constexpr bool requires_grad = false;
  T value;
  constexpr explicit Scalar(T v) : value(v) {}
};

template <class E>
struct is_scalar : std::false_type {};
template <class T, class D>
struct is_scalar<Scalar<T, D>> : std::true_type {};

/// Reads a slot of a compiled program: its value (Adj = false) or its gradient (Adj = true).
/// Backward expressions are written over these.
template <Dtype T, ShapeType S, std::size_t Slot, bool Adj = false, Device D = cpu>
struct SlotRef : LeafBase<T, S, D> {
  static constexpr bool requires_grad = false;
  static constexpr std::size_t slot = Slot;
  static constexpr bool adj = Adj;
};

/// A value computed once per chunk of a fused backward loop and read by several of its outputs: the
/// gradient flowing into an inlined node with several differentiable inputs (host loops only; see
/// backend/cpu/fused.hpp). Id is that node's slot.
template <Dtype T, ShapeType S, std::size_t Id, Device D = cpu>
struct StageRef : LeafBase<T, S, D> {
  static constexpr bool requires_grad = false;
};

/// A fused node's value stored into slot Slot's buffer as the loop computes it, and passed on: how a
/// forward loop keeps a node its backward reads (Program's kept nodes).
template <class E, std::size_t Slot>
struct Tee : LeafBase<typename E::value_type, typename E::shape_type, typename E::device_type> {
  static constexpr bool requires_grad = false;
  E expr;
};

// ---- interior nodes --------------------------------------------------------------------------------------

namespace detail {

// A minimal heterogeneous pack (std::tuple's constructors cost noticeable compile time per node type).
template <std::size_t I, class T>
struct PackItem {
  T value;
};
template <class Seq, class... T>
struct PackImpl;
template <std::size_t... I, class... T>
struct PackImpl<std::index_sequence<I...>, T...> : PackItem<I, T>... {
  constexpr explicit PackImpl(T... t) : PackItem<I, T>{std::move(t)}... {}
};
template <class... T>
using Pack = PackImpl<std::index_sequence_for<T...>, T...>;
template <std::size_t I, class T>
constexpr const T& get(const PackItem<I, T>& p) { return p.value; }
template <std::size_t I, class T>
constexpr T& get(PackItem<I, T>& p) { return p.value; }

template <class... A>
struct first_of {
  using type = void;
};
template <class A, class... R>
struct first_of<A, R...> {
  using type = A;
};

/// Instantiated with both element types so that the compiler's note shows them.
template <bool Ok, class Lhs, class Rhs>
struct check_dtype {
  static_assert(Ok, "loom: dtype mismatch: operands have different element types (see check_dtype below)");
};
template <bool Ok, class Lhs, class Rhs>
struct check_device {
  static_assert(Ok, "loom: device mismatch: an expression mixes tensors on different devices; transfer "
                    "explicitly (see check_device below)");
};

template <class Op, class... A>
struct node_value {
  using type = typename std::remove_cvref_t<typename first_of<A...>::type>::value_type;
};
template <class Op, class... A>
  requires requires { typename Op::template value_type<A...>; }
struct node_value<Op, A...> {
  using type = typename Op::template value_type<A...>;
};

}  // namespace detail

/// One operation applied to its arguments. Op says the math (shape rule, forward, VJP); Node does
/// the graph work. Arguments are held by value: the tree is a value, copies share leaves.
template <class Op, Expression... Args>
struct Node {
  using value_type = typename detail::node_value<Op, Args...>::type;
  using shape_type = typename Op::template shape<typename Args::shape_type...>;
  using device_type = typename detail::first_of<Args...>::type::device_type;
  static constexpr std::size_t arity = sizeof...(Args);
  static constexpr std::size_t node_count = 1 + (Args::node_count + ... + 0);
  static constexpr Kind kind = Op::kind;
  static constexpr bool requires_grad = Op::differentiable && (Args::requires_grad || ...);
  /// Offset of child I's subtree from this node's first slot (slots are numbered in post-order).
  static constexpr std::array<std::size_t, arity + 1> child_offset = [] {
    std::array<std::size_t, arity + 1> r{};
    std::size_t c[] = {Args::node_count..., 0}, acc = 0;
    for (std::size_t i = 0; i < arity; ++i) r[i] = acc, acc += c[i];
    r[arity] = acc;
    return r;
  }();

  [[no_unique_address]] Op op;
  detail::Pack<Args...> args;

  Node(Op o, Args... a) : op(std::move(o)), args(std::move(a)...) {}
  template <std::size_t I>
  const auto& arg() const { return detail::get<I>(args); }
};

/// Builds a node after checking that the arguments agree on dtype and device.
template <class Op, Expression... A>
auto make_node(Op op, A... a) {
  using First = typename detail::first_of<A...>::type;
  (detail::check_device<std::is_same_v<device_t<First>, device_t<A>>, device_t<First>, device_t<A>>{}, ...);
  if constexpr (!requires { typename Op::template value_type<A...>; })
    (detail::check_dtype<std::is_same_v<value_t<First>, value_t<A>>, value_t<First>, value_t<A>>{}, ...);
  return Node<Op, A...>(std::move(op), std::move(a)...);
}

template <class E>
struct is_node : std::false_type {};
template <class Op, class... A>
struct is_node<Node<Op, A...>> : std::true_type {};

/// A leaf standing for the value of the let whose definition has hash Def (the hash keeps references
/// to different definitions different types, so unrelated blocks still fuse their own elementwise work).
template <Dtype T, ShapeType S, std::uint64_t Def, Device D, bool RequiresGrad, bool Aliases>
struct LetRef : LeafBase<T, S, D> {
  static constexpr bool requires_grad = RequiresGrad;
  static constexpr bool grad_aliases = Aliases;
  std::size_t id = 0;  ///< the let this refers to
  std::size_t identity() const { return id; }
};

template <class E>
struct is_let_ref : std::false_type {};
template <class T, class S, std::uint64_t H, class D, bool G, bool A>
struct is_let_ref<LetRef<T, S, H, D, G, A>> : std::true_type {};

namespace ops {
/// let(definition, body): the value (and gradient) of the body. The program evaluates the definition
/// first (it is child 0), makes every LetRef with this id read the definition's slot, then the body;
/// in backward the body's contributions reach the definition's gradient before the definition's own
/// backward runs (children are walked in reverse).
struct Let {
  static constexpr std::string_view name = "let";
  static constexpr Kind kind = Kind::view;
  static constexpr bool differentiable = true;
  std::size_t id = 0;
  template <ShapeType SX, ShapeType SB>
  using shape = SB;
  template <class X, class B>
  using value_type = typename B::value_type;
  bool operator==(const Let&) const = default;
};
}  // namespace ops

template <class E>
struct is_let : std::false_type {};
template <class X, class B>
struct is_let<Node<ops::Let, X, B>> : std::true_type {};

}  // namespace loom
