// Plain loops for small input projections (see projection_cpu.h). The innermost loops run over G, the
// contiguous gate rows of A and dA, so the compiler vectorises them.
#include "projection_cpu.h"

#include <algorithm>
#include <vector>

namespace lstm_ext::cpu {

template <typename T>
void projection_forward(int64_t N, int64_t D, int64_t G, const T* x, const T* w, const T* b_ih, const T* b_hh,
                        T* A) {
  std::vector<T> wt(size_t(D * G));  // w^T (D, G): row d holds every gate's weight on input d
  for (int64_t g = 0; g < G; ++g)
    for (int64_t d = 0; d < D; ++d) wt[d * G + g] = w[g * D + d];
  for (int64_t n = 0; n < N; ++n) {
    T* a = A + n * G;
    for (int64_t g = 0; g < G; ++g) a[g] = (b_ih ? b_ih[g] : T(0)) + (b_hh ? b_hh[g] : T(0));
    for (int64_t d = 0; d < D; ++d) {
      const T xv = x[n * D + d];
      const T* wd = wt.data() + d * G;
      for (int64_t g = 0; g < G; ++g) a[g] += xv * wd[g];
    }
  }
}

template <typename T>
void projection_backward(int64_t N, int64_t D, int64_t G, const T* x, const T* w, const T* dA, T* dw, T* db,
                         T* dx) {
  if (dw != nullptr || db != nullptr) {
    std::vector<T> dwt(dw ? size_t(D * G) : 0, T(0));  // dw^T (D, G)
    if (db) std::fill(db, db + G, T(0));
    for (int64_t n = 0; n < N; ++n) {
      const T* da = dA + n * G;
      if (db)
        for (int64_t g = 0; g < G; ++g) db[g] += da[g];
      if (dw)
        for (int64_t d = 0; d < D; ++d) {
          const T xv = x[n * D + d];
          T* row = dwt.data() + d * G;
          for (int64_t g = 0; g < G; ++g) row[g] += xv * da[g];
        }
    }
    if (dw)
      for (int64_t g = 0; g < G; ++g)
        for (int64_t d = 0; d < D; ++d) dw[g * D + d] = dwt[d * G + g];
  }
  if (dx != nullptr) {
    for (int64_t n = 0; n < N; ++n) {
      const T* da = dA + n * G;
      for (int64_t d = 0; d < D; ++d) {
        T sum = 0;
        for (int64_t g = 0; g < G; ++g) sum += da[g] * w[g * D + d];
        dx[n * D + d] = sum;
      }
    }
  }
}

template void projection_forward<float>(int64_t, int64_t, int64_t, const float*, const float*, const float*,
                                        const float*, float*);
template void projection_forward<double>(int64_t, int64_t, int64_t, const double*, const double*, const double*,
                                         const double*, double*);
template void projection_backward<float>(int64_t, int64_t, int64_t, const float*, const float*, const float*,
                                         float*, float*, float*);
template void projection_backward<double>(int64_t, int64_t, int64_t, const double*, const double*, const double*,
                                          double*, double*, double*);

}  // namespace lstm_ext::cpu
