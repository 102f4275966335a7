// Checked shared memory for the CUDA emulator (included by emu.h; kernels use it
// through the aliases of launch.cuh, which are plain arrays and pointers under nvcc):
//   __shared__ Shared<float[32]> buf;          // a static shared array
//   SharedPtr<float> row = buf + 8;            // a pointer into shared memory
//   STRATA_DYNAMIC_SHARED(float, smem);        // dynamic shared memory, a SharedPtr
// Every element read or written through them goes to record(), which checks bounds,
// races between barriers and bank conflicts (sanitize.cpp).
// Invariant: an access through a Shared / SharedPtr never touches memory outside its
// array: an out-of-bounds one is reported and redirected to a sink buffer.
// The raw address (get()) is for code that records its own accesses, e.g. the
// emulated wmma load / store calling record_shared_access once per element.
#pragma once
#include <cstddef>
#include <cstdint>
#include <source_location>
#include <type_traits>

namespace strata::emu {

// One shared array of a block (a static Shared, or the launch's dynamic memory).
// Registered with its OS thread while it lives; its shadow state is sanitize.cpp's.
struct Region {
  char* base = nullptr;
  size_t bytes = 0;
  const char* file = "";  // where it is declared ("" for dynamic shared memory)
  unsigned line = 0;
  uint32_t id = 0;  // index among this OS thread's regions: its bank-neutral base
  void* shadow = nullptr;
  size_t shadow_bytes = 0;
  Region(void* base, size_t bytes, const char* file, unsigned line);
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;
  void resize(void* base, size_t bytes);  // dynamic shared memory, per launch
};

// Whether the block running on this OS thread is checked in full (races, banks), or
// for bounds only (the sanitizer's budget, emu.h). Set by the sanitizer per launch.
inline thread_local bool t_checking = false;

void* record_slow(Region* region, void* p, size_t bytes, bool write);

// Records one access of `bytes` at p by the running emulated thread: returns p, or a
// sink buffer when the access is outside the region (reported after the launch).
// Inline for the common case, an unchecked launch's access in bounds.
inline void* record(Region* region, void* p, size_t bytes, bool write) {
  const size_t offset = size_t(static_cast<char*>(p) - region->base);  // below base: huge
  if (!t_checking && offset <= region->bytes && bytes <= region->bytes - offset) [[likely]]
    return p;
  return record_slow(region, p, bytes, write);
}

// For code that reads or writes shared memory through raw pointers (the emulated
// wmma load / store): records an access of `bytes` at addr by the running thread,
// exactly as an element access through SharedPtr would (bounds, races, banks). addr
// must lie in a shared array of the running block; one that does not is reported as
// out of bounds. Call it once per element, in the order the thread accesses them.
void record_shared_access(const void* addr, size_t bytes, bool write);

template <class T>
class SharedPtr;

// An element of shared memory: reads and writes are recorded.
template <class T>
class SharedRef {
 public:
  SharedRef(T* p, Region* r) : p_(p), r_(r) {}
  SharedRef(const SharedRef&) = default;
  operator std::remove_const_t<T>() const { return *static_cast<T*>(record(r_, (void*)p_, sizeof(T), false)); }
  template <class U = T, class = std::enable_if_t<!std::is_const_v<U>>>
  const SharedRef& operator=(const T& v) const {
    *static_cast<T*>(record(r_, p_, sizeof(T), true)) = v;
    return *this;
  }
  const SharedRef& operator=(const SharedRef& o) const { return *this = T(o); }
#define STRATA_EMU_COMPOUND(op)                       \
  template <class V>                                  \
  const SharedRef& operator op##=(const V& v) const { \
    T x = *this;                                      \
    x op##= v;                                        \
    return *this = x;                                 \
  }
  STRATA_EMU_COMPOUND(+)
  STRATA_EMU_COMPOUND(-)
  STRATA_EMU_COMPOUND(*)
  STRATA_EMU_COMPOUND(/)
  STRATA_EMU_COMPOUND(%)
  STRATA_EMU_COMPOUND(&)
  STRATA_EMU_COMPOUND(|)
  STRATA_EMU_COMPOUND(^)
  STRATA_EMU_COMPOUND(<<)
  STRATA_EMU_COMPOUND(>>)
#undef STRATA_EMU_COMPOUND
  const SharedRef& operator++() const { return *this += 1; }
  const SharedRef& operator--() const { return *this -= 1; }
  SharedPtr<T> operator&() const { return SharedPtr<T>(p_, r_); }

 private:
  T* p_;
  Region* r_;
};

// A pointer into shared memory: arithmetic as a T*, element accesses recorded. For
// T an array type (a row of a 2-D Shared), [] gives a SharedPtr to the row's first
// element, as a T* would decay.
template <class T>
class SharedPtr {
 public:
  SharedPtr() = default;
  SharedPtr(std::nullptr_t) {}
  SharedPtr(T* p, Region* r) : p_(p), r_(r) {}
  template <class U, class = std::enable_if_t<std::is_convertible_v<U*, T*>>>
  SharedPtr(const SharedPtr<U>& o) : p_(o.get()), r_(o.region()) {}

  auto operator[](int64_t i) const {
    if constexpr (std::is_array_v<T>)
      return SharedPtr<std::remove_extent_t<T>>(p_[i], r_);
    else
      return SharedRef<T>(p_ + i, r_);
  }
  auto operator*() const { return (*this)[0]; }
  SharedPtr operator+(int64_t n) const { return SharedPtr(p_ + n, r_); }
  SharedPtr operator-(int64_t n) const { return SharedPtr(p_ - n, r_); }
  friend SharedPtr operator+(int64_t n, const SharedPtr& p) { return p + n; }
  ptrdiff_t operator-(const SharedPtr& o) const { return p_ - o.p_; }
  SharedPtr& operator+=(int64_t n) { return p_ += n, *this; }
  SharedPtr& operator-=(int64_t n) { return p_ -= n, *this; }
  SharedPtr& operator++() { return ++p_, *this; }
  SharedPtr& operator--() { return --p_, *this; }
  SharedPtr operator++(int) { return SharedPtr(p_++, r_); }
  SharedPtr operator--(int) { return SharedPtr(p_--, r_); }
  bool operator==(const SharedPtr& o) const { return p_ == o.p_; }
  auto operator<=>(const SharedPtr& o) const { return p_ <=> o.p_; }
  explicit operator bool() const { return p_ != nullptr; }

  // The raw address, unchecked: for code that calls record_shared_access itself.
  T* get() const { return p_; }
  Region* region() const { return r_; }

 private:
  T* p_ = nullptr;
  Region* r_ = nullptr;
};

// A static shared array: `__shared__ Shared<float[64][129]> tile;` (a static
// thread_local under emulation). Indexes and decays like the array it holds.
template <class A>
class Shared;

template <class E, size_t N>
class Shared<E[N]> {
 public:
  explicit Shared(std::source_location at = std::source_location::current())
      : region_(data_, sizeof(data_), at.file_name(), at.line()) {}
  auto operator[](int64_t i) const { return ptr()[i]; }
  operator SharedPtr<E>() const { return ptr(); }
  operator SharedPtr<const E>() const { return ptr(); }
  SharedPtr<E> operator+(int64_t n) const { return ptr() + n; }
  SharedPtr<E> ptr() const { return SharedPtr<E>(const_cast<E*>(data_), const_cast<Region*>(&region_)); }

 private:
  alignas(16) E data_[N];
  Region region_;
};

// The launch's dynamic shared memory as a SharedPtr<T> (STRATA_DYNAMIC_SHARED).
Region* dynamic_shared_region();
template <class T>
SharedPtr<T> dynamic_shared_ptr() {
  Region* r = dynamic_shared_region();
  return SharedPtr<T>(reinterpret_cast<T*>(r->base), r);
}

}  // namespace strata::emu
