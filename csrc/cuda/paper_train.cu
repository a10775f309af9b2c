// The paper nets' training kernel (paper_train_cuda.cuh): planning and launch (torch-free; nvcc alone compiles it).
#include "paper_train_kernel.cuh"

namespace lstm_ext::cuda {

template <typename T>
cudaError_t paper_train(const PaperTrainArgs<T>& args, const PaperTrainPlan& plan, void* workspace,
                        cudaStream_t stream) {
  if (args.n == 0) return cudaSuccess;
  const detail::PaperKernelParams<T> params{args, plan.in_smem ? nullptr : static_cast<T*>(workspace)};
  const size_t smem = plan.in_smem ? plan.state_bytes : 0;
  auto* kernel = &detail::paper_train_kernel<T>;
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
  }
  kernel<<<1, plan.threads, smem, stream>>>(params);
  return cudaGetLastError();
}

#define LSTM_EXT_INSTANTIATE(T)                                                                               \
  template cudaError_t paper_train<T>(const PaperTrainArgs<T>&, const PaperTrainPlan&, void*, cudaStream_t);
LSTM_EXT_INSTANTIATE(float)
LSTM_EXT_INSTANTIATE(double)
#undef LSTM_EXT_INSTANTIATE

}  // namespace lstm_ext::cuda
