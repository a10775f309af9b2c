// The forward recurrence kernel: instantiations, planning and launch (torch-free; nvcc alone compiles it).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdlib>
#include <string>

#include "launch_common.cuh"
#include "recurrence_cuda.cuh"

namespace lstm_ext::cuda {
namespace {

using namespace detail;

template <typename T>
const void* forward_kernel_for(int bt) {
  return kernel_for_tile<T>(bt, [](auto tile) {
    return reinterpret_cast<const void*>(&forward_kernel<T, decltype(tile)::value>);
  });
}

}  // namespace

DeviceInfo device_info(int device) {
  static std::mutex mu;
  static std::map<int, DeviceInfo> cache;
  std::lock_guard<std::mutex> lock(mu);
  const auto it = cache.find(device);
  if (it != cache.end()) return it->second;
  DeviceInfo info;
  (void)cudaDeviceGetAttribute(&info.sm_count, cudaDevAttrMultiProcessorCount, device);
  (void)cudaDeviceGetAttribute(&info.max_smem_per_block, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  (void)cudaDeviceGetAttribute(&info.max_smem_per_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
  (void)cudaDeviceGetAttribute(&info.max_threads_per_sm, cudaDevAttrMaxThreadsPerMultiProcessor, device);
  (void)cudaDeviceGetAttribute(&info.cooperative, cudaDevAttrCooperativeLaunch, device);
  int major = 0;
  (void)cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  const char* mma = std::getenv("LSTM_EXT_CUDA_MMA");
  // the tensor-core product needs sm_80 code: not where the kernels run from older PTX (JIT-compiled)
  cudaFuncAttributes fa{};
  const bool sm80_code =
      cudaFuncGetAttributes(&fa, forward_kernel_for<__half>(8)) == cudaSuccess && fa.ptxVersion >= 80;
  info.mma = major >= 8 && sm80_code && !(mma != nullptr && std::string(mma) == "0");
  // thread-block clusters need sm_90 code (the cluster barrier): not where the kernels run from older PTX
  const char* cluster = std::getenv("LSTM_EXT_CUDA_CLUSTER");
  const bool sm90_code = sm80_code && fa.ptxVersion >= 90;
  info.cluster = major >= 9 && sm90_code && !(cluster != nullptr && std::string(cluster) == "0") ? 16 : 0;
  (void)cudaGetLastError();
  cache.emplace(device, info);
  return info;
}

template <typename T>
LaunchPlan plan_forward(const CellDims& d, int64_t batch, const DeviceInfo& dev) {
  using A = typename AccType<T>::type;
  const int device = current_device();
  return cached_plan(plan_key(type_id<T>(), device, d, batch), [&] {
                       OccupancyCtx ctx{&forward_kernel_for<T>, dev.max_smem_per_block};
                       const LaunchPlan plan =
                           plan_launch(true, d, batch, dev, int(sizeof(T)), int(sizeof(A)), &occupancy, &ctx);
                       return cluster_fits(plan, forward_kernel_for<T>(plan.bt), dev.max_smem_per_block);
                     });
}

template <typename T>
cudaError_t recurrence_forward(const ForwardArgs<T>& args, const LaunchPlan& plan, void* workspace,
                               cudaStream_t stream) {
  using A = typename AccType<T>::type;
  if (!plan.ok) return cudaErrorInvalidConfiguration;
  if (plan.n_tiles == 0) return cudaSuccess;  // B == 0 (or no cells): nothing to do
  FwdKernelParams<T> params{args, plan_args(true, args.d, plan, workspace, int(sizeof(T)), int(sizeof(A)))};
  const void* k = forward_kernel_for<T>(plan.bt);
  if (k == nullptr) return cudaErrorInvalidConfiguration;
  return launch(k, plan, params, params.p, stream);
}

#define LSTM_EXT_INSTANTIATE(T)                                                                            \
  template LaunchPlan plan_forward<T>(const CellDims&, int64_t, const DeviceInfo&);                        \
  template cudaError_t recurrence_forward<T>(const ForwardArgs<T>&, const LaunchPlan&, void*, cudaStream_t);
LSTM_EXT_INSTANTIATE(float)
LSTM_EXT_INSTANTIATE(double)
LSTM_EXT_INSTANTIATE(__half)
LSTM_EXT_INSTANTIATE(__nv_bfloat16)
#undef LSTM_EXT_INSTANTIATE

}  // namespace lstm_ext::cuda
