// The backward recurrence kernel: instantiations, planning and launch (torch-free; nvcc alone compiles it).
// dU is not computed here: it is one GEMM over all steps (csrc/cuda/ops_cuda.cpp).
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "launch_common.cuh"
#include "recurrence_cuda.cuh"

namespace lstm_ext::cuda {
namespace {

using namespace detail;

template <typename T>
const void* backward_kernel_for(int bt) {
  return kernel_for_tile<T>(bt, [](auto tile) {
    return reinterpret_cast<const void*>(&backward_kernel<T, decltype(tile)::value>);
  });
}

}  // namespace

template <typename T>
LaunchPlan plan_backward(const CellDims& d, int64_t batch, const DeviceInfo& dev) {
  using A = typename AccType<T>::type;
  const int device = current_device();
  return cached_plan(plan_key(4 + type_id<T>(), device, d, batch), [&] {
    OccupancyCtx ctx{&backward_kernel_for<T>, dev.max_smem_per_block};
    const LaunchPlan plan = plan_launch(false, d, batch, dev, int(sizeof(T)), int(sizeof(A)), &occupancy, &ctx);
    return cluster_fits(plan, backward_kernel_for<T>(plan.bt), dev.max_smem_per_block);
  });
}

template <typename T>
cudaError_t recurrence_backward(const BackwardArgs<T>& args, const LaunchPlan& plan, void* workspace,
                                cudaStream_t stream) {
  using A = typename AccType<T>::type;
  if (!plan.ok) return cudaErrorInvalidConfiguration;
  if (plan.n_tiles == 0) return cudaSuccess;
  BwdKernelParams<T> params{args, plan_args(false, args.d, plan, workspace, int(sizeof(T)), int(sizeof(A)))};
  const void* k = backward_kernel_for<T>(plan.bt);
  if (k == nullptr) return cudaErrorInvalidConfiguration;
  return launch(k, plan, params, params.p, stream);
}

#define LSTM_EXT_INSTANTIATE(T)                                                                            \
  template LaunchPlan plan_backward<T>(const CellDims&, int64_t, const DeviceInfo&);                       \
  template cudaError_t recurrence_backward<T>(const BackwardArgs<T>&, const LaunchPlan&, void*, cudaStream_t);
LSTM_EXT_INSTANTIATE(float)
LSTM_EXT_INSTANTIATE(double)
LSTM_EXT_INSTANTIATE(__half)
LSTM_EXT_INSTANTIATE(__nv_bfloat16)
#undef LSTM_EXT_INSTANTIATE

}  // namespace lstm_ext::cuda
