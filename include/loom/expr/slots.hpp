// loom/expr/slots.hpp — the run-time record of one node of a compiled program (type-erased so that a
// program's table is one flat array, whatever the node types).
#pragma once
#include <cstddef>

#include "../core/device.hpp"
#include "../core/shape.hpp"

namespace loom::detail {

struct SlotRec {
  void* val = nullptr;  ///< value storage (own buffer, leaf storage or a view into another slot)
  void* adj = nullptr;  ///< gradient storage; null when no gradient flows here
  std::size_t dims[max_rank]{};
  std::ptrdiff_t strides[max_rank]{};      ///< value strides
  std::ptrdiff_t adj_strides[max_rank]{};  ///< gradient strides (equal to value strides unless a leaf)
  std::size_t canon = 0;                   ///< the slot computing this value (itself unless deduplicated)
};

/// A typed strided view into raw memory (what kernels take; copying it costs no reference count).
template <class T, std::size_t R>
struct View {
  T* data = nullptr;
  Dims<R> dims{};
  Strides<R> strides{};
  std::size_t size() const { return numel(dims); }
  bool contiguous() const { return strides == contiguous_strides(dims); }
};

/// Offset of row k of a view: rows are its elements over the leading R - 1 axes, in row-major order
/// (the last axis is the row).
template <class T, std::size_t R>
std::ptrdiff_t row_offset(std::size_t k, const View<T, R>& v) {
  std::ptrdiff_t off = 0;
  for (std::size_t a = R - 1; a-- > 0;) {
    off += static_cast<std::ptrdiff_t>(k % v.dims[a]) * v.strides[a];
    k /= v.dims[a];
  }
  return off;
}

/// A view's extents and strides as a trivially copyable value that device code can hold: the offset of
/// element k (row-major order), or of row k (the elements over the leading R - 1 axes).
template <std::size_t R>
struct Layout {
  std::size_t dims[R > 0 ? R : 1]{};
  std::ptrdiff_t st[R > 0 ? R : 1]{};
  template <class T>
  static Layout of(const View<T, R>& v) {
    Layout l;
    for (std::size_t a = 0; a < R; ++a) l.dims[a] = v.dims[a], l.st[a] = v.strides[a];
    return l;
  }
  LOOM_HOST_DEVICE std::ptrdiff_t at(std::size_t k) const { return over(k, R); }
  LOOM_HOST_DEVICE std::ptrdiff_t row(std::size_t k) const { return over(k, R - 1); }
  LOOM_HOST_DEVICE std::ptrdiff_t over(std::size_t k, std::size_t axes) const {
    std::ptrdiff_t off = 0;
    for (std::size_t a = axes; a-- > 0;) {
      off += static_cast<std::ptrdiff_t>(k % dims[a]) * st[a];
      k /= dims[a];
    }
    return off;
  }
};

template <class T, std::size_t R>
View<T, R> value_view(const SlotRec& s) {
  View<T, R> v{static_cast<T*>(s.val), {}, {}};
  for (std::size_t i = 0; i < R; ++i) v.dims[i] = s.dims[i], v.strides[i] = s.strides[i];
  return v;
}
template <class T, std::size_t R>
View<T, R> adj_view(const SlotRec& s) {
  View<T, R> v{static_cast<T*>(s.adj), {}, {}};
  for (std::size_t i = 0; i < R; ++i) v.dims[i] = s.dims[i], v.strides[i] = s.adj_strides[i];
  return v;
}
template <std::size_t R>
Dims<R> slot_dims(const SlotRec& s) {
  Dims<R> d{};
  for (std::size_t i = 0; i < R; ++i) d[i] = s.dims[i];
  return d;
}

}  // namespace loom::detail
