// Host-side launch helpers shared by recurrence_fwd.cu and recurrence_bwd.cu (nvcc only; torch-free).
#pragma once

#include <array>
#include <map>
#include <mutex>
#include <type_traits>

#include "recurrence_kernels.cuh"

namespace lstm_ext::cuda::detail {

// A kernel for one batch tile size (1, 2, 4 or 8), by its host stub.
using KernelFor = const void* (*)(int bt);

// The host stub of batch tile bt of a kernel template: kernel(std::integral_constant<int, BT>{}) returns it for
// BT = bt; nullptr for a tile the storage type T has no instantiation of (max_batch_tile) or no tile size.
template <typename T, typename KernelOfTile>
const void* kernel_for_tile(int bt, KernelOfTile kernel) {
  switch (bt) {
    case 1: return kernel(std::integral_constant<int, 1>{});
    case 2: return kernel(std::integral_constant<int, 2>{});
    case 4:
      if constexpr (max_batch_tile(int(sizeof(T))) >= 4) return kernel(std::integral_constant<int, 4>{});
      return nullptr;
    case 8:
      if constexpr (max_batch_tile(int(sizeof(T))) >= 8) return kernel(std::integral_constant<int, 8>{});
      return nullptr;
    default: return nullptr;
  }
}

struct OccupancyCtx {
  KernelFor kernel;
  int max_smem;  // the device's opt-in maximum of dynamic shared memory per block
};

inline int occupancy(int bt, int threads, size_t smem, void* ctx) {
  const auto* c = static_cast<const OccupancyCtx*>(ctx);
  const void* k = c->kernel(bt);
  if (k == nullptr) return 0;
  if (cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, c->max_smem) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  int n = 0;
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, threads, smem) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return n;
}

template <typename T>
constexpr int type_id() {
  if constexpr (std::is_same_v<T, float>) return 0;
  if constexpr (std::is_same_v<T, double>) return 1;
  if constexpr (std::is_same_v<T, __half>) return 2;
  return 3;
}

// Plans are cached per (kernel, device, sizes, config): planning queries the occupancy many times.
using PlanKey = std::array<int64_t, 12>;

// which: (forward 0 | backward 4) + type_id
inline PlanKey plan_key(int which, int device, const CellDims& d, int64_t batch) {
  return {which, device, d.n_blocks, d.block_size, d.n_cells, d.gate_rows, d.rec_size, d.forget_gate,
          d.feedback_all, d.truncate, int(d.squash), batch};
}

template <typename F>
LaunchPlan cached_plan(const PlanKey& key, F make) {
  static std::mutex mu;
  static std::map<PlanKey, LaunchPlan> cache;
  {
    std::lock_guard<std::mutex> lock(mu);
    const auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  const LaunchPlan plan = make();
  std::lock_guard<std::mutex> lock(mu);
  if (cache.size() > 4096) cache.clear();
  cache.emplace(key, plan);
  return plan;
}

inline int current_device() {
  int dev = 0;
  (void)cudaGetDevice(&dev);
  return dev;
}

// The launch configuration of a plan whose groups are thread-block clusters (attr: storage for the attribute).
inline cudaLaunchConfig_t cluster_config(const LaunchPlan& plan, cudaStream_t stream, cudaLaunchAttribute* attr) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(plan.group * plan.n_groups));
  cfg.blockDim = dim3(unsigned(plan.threads));
  cfg.dynamicSmemBytes = plan.smem_bytes;
  cfg.stream = stream;
  attr->id = cudaLaunchAttributeClusterDimension;
  attr->val.clusterDim.x = unsigned(plan.group);
  attr->val.clusterDim.y = 1;
  attr->val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

// Whether the GPU holds all of a plan's groups as thread-block clusters at once (a cluster's CTAs must share one
// GPC; more than 8 per cluster is a non-portable size the kernel has to allow). Where it does not, the plan keeps
// the flag barrier and the cooperative launch, which the planner has checked. Leaves no error behind.
inline LaunchPlan cluster_fits(LaunchPlan plan, const void* kernel, int max_smem) {
  if (!plan.ok || !plan.cluster || kernel == nullptr) {
    plan.cluster = plan.dsmem = false;
    return plan;
  }
  cudaLaunchAttribute attr{};
  const cudaLaunchConfig_t cfg = cluster_config(plan, nullptr, &attr);
  int n = 0;
  const bool ok =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem) == cudaSuccess &&
      cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) == cudaSuccess &&
      cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) == cudaSuccess && n >= plan.n_groups;
  (void)cudaGetLastError();
  plan.cluster = ok;
  plan.dsmem = plan.dsmem && ok;  // (its shared memory stays reserved: the kernel's layout then needs less)
  return plan;
}

// Launch `kernel` with one parameter struct: a plain launch for independent CTAs (group 1), a cluster launch
// where the groups are thread-block clusters (plan.cluster), a cooperative one (all CTAs co-resident) where CTAs
// of a group wait for each other at the flag barrier.
template <typename P>
cudaError_t launch(const void* kernel, const LaunchPlan& plan, const P& params, const PlanArgs& pa,
                   cudaStream_t stream) {
  // Always the device's opt-in maximum (as occupancy() sets it), never plan.smem_bytes: the attribute is
  // per kernel and device, and two host threads launching the same kernel with different plans would
  // otherwise lower it between the other's set and launch (cudaErrorInvalidValue).
  int dev = 0, max_smem = 0;
  cudaError_t err = cudaGetDevice(&dev);
  if (err == cudaSuccess) err = cudaDeviceGetAttribute(&max_smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev);
  if (err == cudaSuccess) err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, max_smem);
  if (err != cudaSuccess) return err;
  const dim3 grid(unsigned(plan.group * plan.n_groups)), block(unsigned(plan.threads));
  void* args[] = {const_cast<P*>(&params)};
  if (plan.group == 1) return cudaLaunchKernel(kernel, grid, block, args, plan.smem_bytes, stream);
  if (plan.cluster) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
    if (err != cudaSuccess) return err;
    cudaLaunchAttribute attr{};
    const cudaLaunchConfig_t cfg = cluster_config(plan, stream, &attr);
    return cudaLaunchKernelExC(&cfg, kernel, args);
  }
  err = cudaMemsetAsync(pa.counters, 0, size_t(plan.n_groups) * sizeof(unsigned), stream);
  if (err != cudaSuccess) return err;
  return cudaLaunchCooperativeKernel(kernel, grid, block, args, plan.smem_bytes, stream);
}

}  // namespace lstm_ext::cuda::detail
