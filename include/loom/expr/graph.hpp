// loom/expr/graph.hpp — type-level facts about a whole expression: node identities in post-order,
// which nodes are shared, which fuse into their consumer. One linear pass; no recursion over pairs.
#pragma once
#include <array>

#include "expr.hpp"

namespace loom::detail {

struct NodeFacts {
  const void* tag = nullptr;
  std::size_t rank = 0;
  Kind kind = Kind::leaf;
};

template <class E>
constexpr void collect_facts(NodeFacts* out, std::size_t& i) {
  if constexpr (is_node<E>::value)
    [&]<class Op, class... A>(std::type_identity<Node<Op, A...>>) { (collect_facts<A>(out, i), ...); }(
        std::type_identity<E>{});
  out[i++] = NodeFacts{&type_tag<E>, E::shape_type::rank, E::kind};
}

template <class E>
struct child_types;
template <class Op, class... A>
struct child_types<Node<Op, A...>> {
  using type = std::tuple<A...>;
};
template <class E, std::size_t I>
using child_t = std::tuple_element_t<I, typename child_types<E>::type>;

/// Post-order facts about the tree rooted at Root.
template <class Root>
struct Graph {
  static constexpr std::size_t size = Root::node_count;
  static constexpr std::array<NodeFacts, size> facts = [] {
    std::array<NodeFacts, size> a{};
    std::size_t i = 0;
    collect_facts<Root>(a.data(), i);
    return a;
  }();
  template <class E>
  static constexpr std::size_t occurrences = [] {
    std::size_t n = 0;
    for (const auto& f : facts) n += (f.tag == &type_tag<E>);
    return n;
  }();
  /// A node type met more than once may be one value used several times: it gets a buffer, and the
  /// program checks at compile() which of its occurrences really are the same value.
  template <class E>
  static constexpr bool shared = occurrences<E> > 1;
  /// An elementwise node fuses into its consumer when it has one use and its consumer is an
  /// elementwise op of the same static shape, or a reduction.
  template <class E, bool ParentAllows>
  static constexpr bool inlined = E::kind == Kind::elementwise && ParentAllows && !shared<E>;
};

template <class P, std::size_t I>
constexpr bool parent_allows_inline() {
  if constexpr (P::kind == Kind::elementwise) return std::is_same_v<typename P::shape_type, typename child_t<P, I>::shape_type>;
  else return P::kind == Kind::reduce;
}

}  // namespace loom::detail
