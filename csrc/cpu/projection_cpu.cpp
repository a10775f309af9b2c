// Plain loops for small input projections (see projection_cpu.h). They run over G, the contiguous gate rows of A
// and dA, a vector at a time (simd_vec.h).
#include "projection_cpu.h"

#include "simd_vec.h"

#include <algorithm>
#include <vector>

namespace lstm_ext::cpu {

template <typename T>
void projection_forward(int64_t N, int64_t D, int64_t G, const T* x, const T* w, const T* b_ih, const T* b_hh,
                        T* A) {
  constexpr int W = Vec<T>::kWidth;
  std::vector<T> wt(size_t(D * G));  // w^T (D, G): row d holds every gate's weight on input d
  std::vector<T> bias(static_cast<size_t>(G));  // b_ih + b_hh
  for (int64_t g = 0; g < G; ++g) {
    for (int64_t d = 0; d < D; ++d) wt[d * G + g] = w[g * D + d];
    bias[g] = (b_ih ? b_ih[g] : T(0)) + (b_hh ? b_hh[g] : T(0));
  }
  // a row of A a vector of gates at a time, in a register over all d: stored once (B=1 H=8 T=100: 0.5 us less)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g0 = 0; g0 < G; g0 += W) {
      const int width = int(std::min<int64_t>(W, G - g0));
      typename Vec<T>::type a = load_vec(bias.data() + g0, width);
      for (int64_t d = 0; d < D; ++d) a += x[n * D + d] * load_vec(wt.data() + d * G + g0, width);
      store_vec(A + n * G + g0, a, width);
    }
}

template <typename T>
void projection_backward(int64_t N, int64_t D, int64_t G, const T* x, const T* w, const T* dA, T* dw, T* db,
                         T* dx) {
  // db and dw: a vector of gates at a time, the sums over rows in registers (db and up to four inputs d of dw), each
  // stored once; row after row in memory they were stored and reloaded every row.
  using V = typename Vec<T>::type;
  constexpr int W = Vec<T>::kWidth;
  for (int64_t g0 = 0; g0 < G && (dw != nullptr || db != nullptr); g0 += W) {
    const int width = int(std::min<int64_t>(W, G - g0));
    for (int64_t d0 = 0; d0 == 0 || (dw != nullptr && d0 < D); d0 += 4) {
      const int nd = dw == nullptr ? 0 : int(std::min<int64_t>(4, D - d0));
      const bool with_db = db != nullptr && d0 == 0;
      V s{}, w0{}, w1{}, w2{}, w3{};
      for (int64_t n = 0; n < N; ++n) {
        const V da = load_vec(dA + n * G + g0, width);
        const T* xn = x + n * D + d0;
        if (with_db) s += da;
        if (nd > 0) w0 += xn[0] * da;
        if (nd > 1) w1 += xn[1] * da;
        if (nd > 2) w2 += xn[2] * da;
        if (nd > 3) w3 += xn[3] * da;
      }
      if (with_db) store_vec(db + g0, s, width);
      const V wv[4] = {w0, w1, w2, w3};
      for (int j = 0; j < nd; ++j)
        for (int i = 0; i < width; ++i) dw[(g0 + i) * D + d0 + j] = wv[j][i];
    }
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
