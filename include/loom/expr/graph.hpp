// loom/expr/graph.hpp — type-level facts about a whole expression: node identities in post-order,
// which nodes are shared, which fuse into their consumer. One linear pass; no recursion over pairs.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>

#include "expr.hpp"

namespace loom::detail {

/// A structural 64-bit hash of a type, computed once per type: leaves and ops hash their spelled name,
/// nodes mix their op's hash with their children's. (Addresses of variables are not usable in constant
/// expressions under the sanitizers, so identity at compile time is a hash; a collision can only make
/// the program give a node a buffer it did not need, never merge two values: the run-time check that
/// merges values compares real types.)
constexpr std::uint64_t fnv1a(std::string_view s) {
  std::uint64_t h = 1469598103934665603ull;
  for (char c : s) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  return h;
}
template <class T>
constexpr std::uint64_t name_hash() { return fnv1a(__PRETTY_FUNCTION__); }
constexpr std::uint64_t mix(std::uint64_t h, std::uint64_t x) {
  return (h ^ (x + 0x9E3779B97F4A7C15ull + (h << 6) + (h >> 2))) * 1099511628211ull;
}
template <class E>
struct type_hash {
  static constexpr std::uint64_t value = name_hash<E>();
};
template <class Op, class... A>
struct type_hash<Node<Op, A...>> {
  static constexpr std::uint64_t value = [] {
    std::uint64_t h = name_hash<Op>();
    ((h = mix(h, type_hash<A>::value)), ...);
    return h;
  }();
};

template <class E>
struct child_types;
template <class Op, class... A>
struct child_types<Node<Op, A...>> {
  using type = std::tuple<A...>;
};
template <class E, std::size_t I>
using child_t = std::tuple_element_t<I, typename child_types<E>::type>;

struct NodeFacts {
  std::uint64_t tag = 0;
  std::size_t rank = 0;
  Kind kind = Kind::leaf;
  bool grad_aliases = false;  ///< gradient storage may overlap itself (rows must not run in parallel)
};

/// Whether a node's gradient storage may alias itself (a broadcast view): then gradient rows must not
/// be written from several threads. A let's gradient is its body's.
template <class E>
constexpr bool grad_aliases() {
  if constexpr (requires { E::grad_aliases; }) return E::grad_aliases;
  else if constexpr (is_let<E>::value) return grad_aliases<child_t<E, 1>>();
  else return E::kind == Kind::view;
}


template <class E>
constexpr void collect_facts(NodeFacts* out, std::size_t& i) {
  if constexpr (is_node<E>::value)
    [&]<class Op, class... A>(std::type_identity<Node<Op, A...>>) { (collect_facts<A>(out, i), ...); }(
        std::type_identity<E>{});
  out[i++] = NodeFacts{type_hash<E>::value, E::shape_type::rank, E::kind, grad_aliases<E>()};
}


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
    for (const auto& f : facts) n += (f.tag == type_hash<E>::value);
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
