// The fused CPU recurrence: all T steps of one layer and direction in one call. Torch-free (raw
// pointers, row-major, contiguous); csrc/ops.cpp checks the tensors and calls these.
#pragma once

#include <cstdint>
#include <functional>

#include "../cell.h"

namespace lstm_ext::cpu {

template <typename T>
struct ForwardArgs {
  CellDims d;
  int64_t steps;           // T
  int64_t batch;           // B
  const T* A;              // (T, B, G)  input part of the net inputs, x W^T + b
  const T* U;              // (G, R)     recurrent weights
  const T* r0;             // (B, R)     recurrent source before step 0
  const T* s0;             // (B, C)     cell state before step 0
  const int64_t* lengths;  // (B) steps each row runs, or nullptr for all T
  T* y;                    // (T, B, C)  out: cell outputs (0 past a row's length)
  T* r_T;                  // (B, R)     out: recurrent source after the row's last step
  T* s_T;                  // (B, C)     out: cell state after the row's last step
  T* act;                  // (T, B, G)  out: activations, kept for the backward (0 past a row's length);
                           //            nullptr: not kept (inference), the kernel uses a per-step buffer;
                           //            may be A itself (each step reads its A_t before it writes act_t)
  T* s_all;                // (T, B, C)  out: cell states, kept for the backward; nullptr with act
};

template <typename T>
struct BackwardArgs {
  CellDims d;
  int64_t steps;           // T
  int64_t batch;           // B
  const T* dy;             // (T, B, C)  gradient on y, strides dy_strides; nullptr: zeros (y unused)
  const T* dr_T;           // (B, R)     gradient on r_T; nullptr: zeros
  const T* ds_T;           // (B, C)     gradient on s_T; nullptr: zeros
  const T* U;              // (G, R)
  const T* r0;             // (B, R)
  const T* s0;             // (B, C)
  const T* y;              // (T, B, C)  as returned by the forward
  const T* act;            // (T, B, G)  as returned by the forward
  const T* s_all;          // (T, B, C)  as returned by the forward
  const int64_t* lengths;  // (B) or nullptr
  T* dA;                   // (T, B, G)  out
  T* dU;                   // (G, R)     out
  T* dr0;                  // (B, R)     out
  T* ds0;                  // (B, C)     out
  // dy's strides in elements over (T, B, C), nullptr: contiguous (the expanded gradient of y.sum() has 0, 0, 0).
  // The other tensors are contiguous.
  const int64_t* dy_strides = nullptr;
};

// How the kernels may use threads: for_each(n, grain, body) runs body(begin, end) over [0, n) in
// chunks of `grain` rows, concurrently (csrc/ops.cpp passes one). Empty: serial.
// team(n, body) runs body(tid, n_threads) once on each of n_threads <= n threads at the same time (tid in
// [0, n_threads)), for kernels whose threads meet at barriers. Empty: serial.
struct Parallel {
  int threads = 1;
  std::function<void(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body)> for_each;
  std::function<void(int n, const std::function<void(int tid, int n_threads)>& body)> team;
};

// Batch rows run in parallel chunks (no synchronisation inside the time loop) when the work allows.
template <typename T>
void recurrence_forward(const ForwardArgs<T>& p, const Parallel& par = {});

template <typename T>
void recurrence_backward(const BackwardArgs<T>& p, const Parallel& par = {});

// Whether an optimised BLAS (sgemm_/dgemm_ from the libraries torch links) was found at load time.
bool have_blas();

// The kernel of the float32 per-step products that are large enough for it (panel_gemm.h): "avx512" (the CPU
// has AVX-512F and LSTM_EXT_CPU_AVX512 is not 0; products of 3 rows still take the AVX2 tiles), "avx2" (an
// AVX2+FMA build), else "blas".
const char* panel_kernel();

}  // namespace lstm_ext::cpu
