// The fused CUDA recurrence: torch-free interface (raw pointers, a params struct, a cudaStream_t).
//
// Semantics are exactly those of the CPU kernels (csrc/cpu/recurrence_cpu.h): all T steps of one layer and
// direction, rows past their length keep their state (y and act are 0 there), gradients pass through frozen
// steps unchanged, truncate drops the gradient through r_{t-1}. Two differences in what the kernels do:
//   * the backward kernel does NOT compute dU: dU = sum_t da_t^T r_{t-1} is one large GEMM, left to the caller
//     (csrc/cuda/ops_cuda.cpp does it with torch);
//   * float16 / bfloat16 storage: every product accumulates in float32, the cell state and the recurrent
//     source r stay float32 inside the kernel (only what is written out is rounded to the storage type).
//     On sm_80 and later the per-step product of a tile of 8 rows runs on the tensor cores (mma.sync
//     m16n8k16, float32 accumulation): its operand r_{t-1} (forward) or da_t (backward) is then rounded to the
//     storage type for the product, as cuDNN and nn.LSTM do in these dtypes; LSTM_EXT_CUDA_MMA=0 turns it off.
//
// Design (../shared/design.md §6): ONE persistent launch per sequence for the forward and one for the backward.
// A "group" of G_n CTAs runs a batch tile of BT rows through all T steps; the memory-cell blocks are split over
// the CTAs of the group, and each CTA keeps its slice of U on chip (shared memory) for the whole sequence:
//   forward:  the U rows of its blocks' gates (U[g, :] for its g), exchanging its part of r_t per step;
//   backward: the U columns of its blocks' entries of r (U[:, k] for its k), exchanging its part of da_t.
// G_n = 1 (the small-H path): a CTA holds all of U, steps are separated by __syncthreads only. G_n > 1 (the
// medium-H path): the group synchronises per step with a flag barrier (an epoch counter in global memory);
// the grid is launched cooperatively so that all CTAs are co-resident. On sm_90, a group of at most 16 CTAs is
// launched as a thread-block cluster instead, and synchronises with the cluster's hardware barrier; its CTAs then
// write r_t (forward) or da_t (backward) straight into each other's shared memory (where that fits). Where there are more batch tiles than
// groups, a group runs its tiles side by side (step t of each of them, then the group barrier: one barrier per
// step, not one per tile and step), in rounds where their state does not all fit in shared memory.
// When U does not fit the on-chip memory of the whole GPU, the slices live in a global workspace instead
// (read through L2 every step: correct, but slow).
#pragma once

#include <cstddef>
#include <cstdint>

#include "../cell.h"
#include "runtime.cuh"

namespace lstm_ext::cuda {

// T: float, double, __half or __nv_bfloat16 (the last two instantiated from the .cu files only).
template <typename T>
struct ForwardArgs {
  CellDims d;
  int64_t steps;           // T
  int64_t batch;           // B
  const T* A;              // (T, B, G)
  const T* U;              // (G, R)
  const T* r0;             // (B, R)
  const T* s0;             // (B, C)
  const int64_t* lengths;  // (B) on the device, or nullptr for all T
  T* y;                    // (T, B, C)
  T* r_T;                  // (B, R)
  T* s_T;                  // (B, C)
  T* act;                  // (T, B, G)  or nullptr with s_all: not kept (inference)
  T* s_all;                // (T, B, C)
};

template <typename T>
struct BackwardArgs {
  CellDims d;
  int64_t steps;
  int64_t batch;
  const T* dy;             // (T, B, C)
  const T* dr_T;           // (B, R)
  const T* ds_T;           // (B, C)
  const T* U;              // (G, R)
  const T* s0;             // (B, C)
  const T* act;            // (T, B, G)
  const T* s_all;          // (T, B, C)
  const int64_t* lengths;  // (B) on the device, or nullptr
  T* dA;                   // (T, B, G) out
  T* dr0;                  // (B, R) out
  T* ds0;                  // (B, C) out
};

// What a launch needs to know about the device (queried once per device).
struct DeviceInfo {
  int sm_count = 0;
  int max_smem_per_block = 0;  // opt-in maximum of dynamic shared memory per block (bytes)
  int max_smem_per_sm = 0;
  int max_threads_per_sm = 0;
  int cooperative = 0;         // cooperative launch supported
  int mma = 0;                 // tensor-core product for 16-bit storage (sm_80+, unless LSTM_EXT_CUDA_MMA=0)
  int cluster = 0;             // largest thread-block cluster a group may form (sm_90: 16, unless
                               // LSTM_EXT_CUDA_CLUSTER=0); 0: none
};

// How one launch runs (see plan_forward / plan_backward). Plain data.
struct LaunchPlan {
  bool ok = false;
  const char* error = nullptr;  // when !ok: why no plan exists
  int bt = 1;                   // batch rows per tile (a kernel template parameter: 1, 2, 4 or 8)
  int n_tiles = 0;              // ceil(B / bt)
  int group = 1;                // CTAs per group (G_n)
  int n_groups = 0;             // groups running at once (grid = group * n_groups)
  int tiles = 1;                // batch tiles one group runs side by side, a step of each between two group
                                // barriers (group > 1 with a per-step product; else 1: one tile after another)
  int threads = 0;              // threads per CTA
  int ksplit = 1;               // split of the reduction dimension of the per-step product over thread sets
  int max_blocks = 0;           // most memory-cell blocks one CTA owns
  bool u_in_smem = true;        // false: U slices in the global workspace
  bool mma = false;             // the per-step product on the tensor cores (16-bit storage, bt = 8)
  bool cluster = false;         // each group is a thread-block cluster (sm_90) and its per-step barrier the
                                // cluster's hardware barrier, not the flag barrier in global memory
  bool dsmem = false;           // (cluster) r_t (forward) or da_t (backward) goes straight into the group's CTAs'
                                // shared memory (distributed), not through the exchange buffer in global memory
  size_t smem_bytes = 0;        // dynamic shared memory per CTA
  size_t workspace_bytes = 0;   // global workspace the caller provides
};

DeviceInfo device_info(int device);

// Plan a launch for a given problem on a given device; does not launch anything.
template <typename T>
LaunchPlan plan_forward(const CellDims& d, int64_t batch, const DeviceInfo& dev);
template <typename T>
LaunchPlan plan_backward(const CellDims& d, int64_t batch, const DeviceInfo& dev);

// Run the recurrence on `stream`. `workspace` holds plan.workspace_bytes bytes of device memory (any
// content; nullptr when 0). Returns the first CUDA error (launch errors only: the kernels run asynchronously).
template <typename T>
cudaError_t recurrence_forward(const ForwardArgs<T>& args, const LaunchPlan& plan, void* workspace,
                               cudaStream_t stream);
template <typename T>
cudaError_t recurrence_backward(const BackwardArgs<T>& args, const LaunchPlan& plan, void* workspace,
                                cudaStream_t stream);

}  // namespace lstm_ext::cuda
