// One vector register of T as GCC's vector extension (AVX: 8 floats or 4 doubles; a build without AVX: SSE's 16
// bytes): element-wise arithmetic that the build contracts into FMA where it has it, as it does plain loops. For short register tiles whose accumulators must stay in registers (named
// vector variables: GCC kept arrays of them, and 2-D arrays of scalars, on the stack).
#pragma once

#include <cstring>

namespace lstm_ext::cpu {

#if defined(__AVX__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif

template <typename T>
struct Vec {
  static constexpr int kWidth = kVecBytes / sizeof(T);
  typedef T type __attribute__((vector_size(kVecBytes)));
};

// p[0 .. n) as a vector, zeros past n (n <= kWidth).
template <typename T>
inline typename Vec<T>::type load_vec(const T* p, int n = Vec<T>::kWidth) {
  typename Vec<T>::type v{};
  if (n == Vec<T>::kWidth) {
    std::memcpy(&v, p, sizeof(v));
  } else {
    for (int j = 0; j < n; ++j) v[j] = p[j];
  }
  return v;
}

// v[0 .. n) into p[0 .. n).
template <typename T>
inline void store_vec(T* p, typename Vec<T>::type v, int n = Vec<T>::kWidth) {
  if (n == Vec<T>::kWidth) {
    std::memcpy(p, &v, sizeof(v));
  } else {
    for (int j = 0; j < n; ++j) p[j] = v[j];
  }
}

}  // namespace lstm_ext::cpu
