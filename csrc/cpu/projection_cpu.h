// The input projection of a layer, A = x W^T + b, and its gradients, as plain loops for small sizes on
// the CPU. At the paper's sizes (T*B = 100 rows, D = 2, G = 32) a BLAS call and its dispatch cost ~10 us
// each, more than the whole fused recurrence of 100 steps; these loops take ~1 us. csrc/layer.cpp uses them
// below kSmallProjection multiply-adds and ATen's matmuls above. Torch-free (raw pointers, row-major,
// contiguous).
#pragma once

#include <cstdint>

namespace lstm_ext::cpu {

// N*G*D multiply-adds up to which the loops are used.
constexpr int64_t kSmallProjection = int64_t(1) << 14;

// A (N, G) = x (N, D) w^T + b_ih + b_hh; w (G, D); either bias (G) may be nullptr.
template <typename T>
void projection_forward(int64_t N, int64_t D, int64_t G, const T* x, const T* w, const T* b_ih, const T* b_hh, T* A);

// From dA (N, G): dw (G, D) = dA^T x and db (G) = sum over rows of dA (each nullptr: not wanted);
// dx (N, D) = dA w (nullptr: not wanted).
template <typename T>
void projection_backward(int64_t N, int64_t D, int64_t G, const T* x, const T* w, const T* dA, T* dw, T* db, T* dx);

}  // namespace lstm_ext::cpu
