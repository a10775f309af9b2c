// The CUDA implementation of lstm_ext::paper_train: the checks shared with the CPU kernel (csrc/paper_ops.cpp),
// a device guard, the current stream, and the launch of the torch-free kernel of paper_train.cu (one CTA trains
// the net on the chunk). The truncated rule only: the full gradient (truncate = false) trains on the CPU.
// Compiled only when the extension is built with CUDA (CMakeLists.txt).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <tuple>

#include "../ops.h"
#include "paper_train_cuda.cuh"

namespace lstm_ext {
namespace {

using at::Tensor;

// The device's opt-in maximum of dynamic shared memory per block, per device (queried once).
int max_smem_optin(int device) {
  static int cached[64] = {};
  if (device < 0 || device >= 64) return 48 * 1024;
  if (cached[device] == 0) {
    int v = 48 * 1024;
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, device) != cudaSuccess) {
      (void)cudaGetLastError();
      v = 48 * 1024;
    }
    cached[device] = v;
  }
  return cached[device];
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> paper_train_cuda(
    Tensor& Wh, Tensor& Wo, const Tensor& Mh, const Tensor& Mo, const std::optional<Tensor>& x,
    const std::optional<Tensor>& x_index, const Tensor& lengths, const Tensor& targets, const Tensor& target_mask,
    int64_t n_blocks, int64_t block_size, bool forget_gate, bool output_gate, c10::string_view squash, double lr,
    bool learn, bool update_each_step, bool return_outputs, bool truncate, c10::string_view output) {
  TORCH_CHECK(Wh.is_cuda(), "lstm_ext.paper_train: the CUDA kernel got Wh on ", Wh.device());
  const PaperNetDims d = check_paper_train_args(Wh, Wo, Mh, Mo, x, x_index, lengths, targets, target_mask, n_blocks,
                                                block_size, forget_gate, output_gate, squash, lr, learn,
                                                update_each_step, truncate, output);
  TORCH_CHECK(truncate || !learn,
              "lstm_ext.paper_train: the full gradient (truncate=False) has no CUDA kernel; train on the CPU");
  const c10::cuda::CUDAGuard guard(Wh.device());
  const PaperTrainTensors t = paper_train_tensors(d, Wh, Mh, Mo, x, x_index, lengths, targets, target_mask, return_outputs);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(Wh.scalar_type(), "paper_train_cuda", [&] {
    const cuda::PaperTrainPlan plan =
        cuda::plan_paper_train<scalar_t>(d, learn, update_each_step, max_smem_optin(Wh.get_device()));
    Tensor ws = at::empty({int64_t(plan.workspace_bytes) + 1}, Wh.options().dtype(at::kByte));
    const auto p = t.args<scalar_t>(d, Wh, Wo, lr, learn, update_each_step, truncate);
    const cudaError_t err = cuda::paper_train<scalar_t>(p, plan, ws.mutable_data_ptr(), stream);
    if (err != cudaSuccess) (void)cudaGetLastError();
    TORCH_CHECK(err == cudaSuccess, "lstm_ext.paper_train: the CUDA kernel launch failed: ", cudaGetErrorString(err));
  });
  return {t.loss, t.err_max, t.err_last, t.y_last, t.y_all};
}

}  // namespace

TORCH_LIBRARY_IMPL(lstm_ext, CUDA, m) { m.impl("paper_train", &paper_train_cuda); }

}  // namespace lstm_ext
