// The CUDA implementations of lstm_ext::recurrence_forward / recurrence_backward: argument checks (shared with
// the CPU kernels, csrc/ops.h), a device guard, the current stream, the dtype dispatch, and the launch of the
// torch-free kernels of recurrence_fwd.cu / recurrence_bwd.cu. dU is one GEMM here (design.md §3, §6.6).
// Compiled only when the extension is built with CUDA (CMakeLists.txt).
#include <ATen/ATen.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/Half.h>
#include <c10/util/BFloat16.h>
#include <torch/library.h>

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <tuple>
#include <vector>

#include "../ops.h"
#include "recurrence_cuda.cuh"

namespace lstm_ext {
namespace {

using at::Tensor;

// torch's scalar types -> the kernels' storage types (same bits).
template <typename S>
struct Storage {
  using type = S;
};
template <>
struct Storage<c10::Half> {
  using type = __half;
};
template <>
struct Storage<c10::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename S>
const typename Storage<S>::type* in_ptr(const Tensor& t) {
  return reinterpret_cast<const typename Storage<S>::type*>(t.const_data_ptr<S>());
}
template <typename S>
typename Storage<S>::type* out_ptr(Tensor& t) {
  return reinterpret_cast<typename Storage<S>::type*>(t.mutable_data_ptr<S>());
}

void check_dtype(const Tensor& A) {
  const auto st = A.scalar_type();
  TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
              "lstm_ext: the CUDA kernel takes float32, float64, float16 or bfloat16, got ", st);
}

void check_cuda(cudaError_t err, const char* what) {
  // a failed launch also sets the thread's last error: clear it, or torch's next launch check reports it
  if (err != cudaSuccess) (void)cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "lstm_ext: ", what, " failed: ", cudaGetErrorString(err));
}

void check_plan(const cuda::LaunchPlan& plan, const CellDims& d, int64_t B) {
  TORCH_CHECK(plan.ok, plan.error ? plan.error : "lstm_ext: no launch configuration", " (cells ", d.n_cells,
              ", block size ", d.block_size, ", gate rows ", d.gate_rows, ", recurrent size ", d.rec_size,
              ", batch ", B, ")");
}

// lengths (B,) int64 on A's device, contiguous, or an undefined tensor.
Tensor device_lengths(const std::optional<Tensor>& lengths, const Tensor& A) {
  if (!lengths.has_value()) return Tensor();
  return lengths->to(A.device(), at::kLong).contiguous();
}

// The forward on the GPU; with keep = false (inference) act and s_all are not kept and come back undefined.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> run_forward_cuda(
    const Tensor& A_in, const Tensor& U_in, const Tensor& r0_in, const Tensor& s0_in,
    const std::optional<Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate, bool keep) {
  const CellDims d = check_forward_args(A_in, U_in, r0_in, s0_in, lengths, forget_gate, block_size, feedback, squash,
                                        truncate);
  check_dtype(A_in);
  const c10::cuda::CUDAGuard guard(A_in.device());
  const Tensor A = A_in.contiguous(), U = U_in.contiguous(), r0 = r0_in.contiguous(), s0 = s0_in.contiguous();
  const int64_t T = A.size(0), B = A.size(1), C = d.n_cells;
  const Tensor len = device_lengths(lengths, A);
  Tensor y = at::empty({T, B, C}, A.options()), r_T = at::empty_like(r0), s_T = at::empty_like(s0);
  Tensor act = keep ? at::empty_like(A) : Tensor(), s_all = keep ? at::empty({T, B, C}, A.options()) : Tensor();
  if (B == 0) return {y, r_T, s_T, act, s_all};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const cuda::DeviceInfo dev = cuda::device_info(A.device().index());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, A.scalar_type(), "recurrence_forward_cuda", [&] {
    using T_ = typename Storage<scalar_t>::type;
    const cuda::LaunchPlan plan = cuda::plan_forward<T_>(d, B, dev);
    check_plan(plan, d, B);
    if (plan.n_tiles == 0) {  // no cells: r (the gate part, if any) and s stay as they were
      r_T.copy_(r0);
      s_T.copy_(s0);
      return;
    }
    Tensor ws = at::empty({int64_t(plan.workspace_bytes) + 1}, A.options().dtype(at::kByte));
    cuda::ForwardArgs<T_> args{d,
                               T,
                               B,
                               in_ptr<scalar_t>(A),
                               in_ptr<scalar_t>(U),
                               in_ptr<scalar_t>(r0),
                               in_ptr<scalar_t>(s0),
                               len.defined() ? len.const_data_ptr<int64_t>() : nullptr,
                               out_ptr<scalar_t>(y),
                               out_ptr<scalar_t>(r_T),
                               out_ptr<scalar_t>(s_T),
                               keep ? out_ptr<scalar_t>(act) : nullptr,
                               keep ? out_ptr<scalar_t>(s_all) : nullptr};
    check_cuda(cuda::recurrence_forward<T_>(args, plan, ws.mutable_data_ptr(), stream), "the forward kernel launch");
  });
  return {y, r_T, s_T, act, s_all};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> recurrence_forward_cuda(
    const Tensor& A, const Tensor& U, const Tensor& r0, const Tensor& s0, const std::optional<Tensor>& lengths,
    bool forget_gate, int64_t block_size, c10::string_view feedback, c10::string_view squash, bool truncate) {
  return run_forward_cuda(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate, true);
}

// lstm_ext::recurrence below autograd (no gradient needed): the forward without its workspace.
std::tuple<Tensor, Tensor, Tensor> recurrence_inference_cuda(
    const Tensor& A, const Tensor& U, const Tensor& r0, const Tensor& s0, const std::optional<Tensor>& lengths,
    bool forget_gate, int64_t block_size, c10::string_view feedback, c10::string_view squash, bool truncate) {
  auto [y, r_T, s_T, act, s_all] =
      run_forward_cuda(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate, false);
  return {y, r_T, s_T};
}

// r_{t-1} of every step as the forward kept it, (T, B, R): r0, then the fed-back part of (act, y) of each step.
Tensor previous_sources(const CellDims& d, const Tensor& r0, const Tensor& y, const Tensor& act) {
  const int64_t T = act.size(0);
  if (T == 0) return r0.new_empty({0, r0.size(0), r0.size(1)});
  Tensor fed = y.narrow(0, 0, T - 1);  // (T-1, B, C)
  if (d.feedback_all) {
    const Tensor a = act.narrow(0, 0, T - 1);
    std::vector<Tensor> parts{a.narrow(2, d.iota_row(), d.n_blocks)};
    if (d.forget_gate) parts.push_back(a.narrow(2, d.phi_row(), d.n_blocks));
    parts.push_back(a.narrow(2, d.omega_row(), d.n_blocks));
    parts.push_back(fed);
    fed = at::cat(parts, 2);
  }
  return at::cat({r0.unsqueeze(0), fed}, 0);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> recurrence_backward_cuda(
    const Tensor& dy_in, const Tensor& dr_T_in, const Tensor& ds_T_in, const Tensor& U_in, const Tensor& r0_in,
    const Tensor& s0_in, const Tensor& y_in, const Tensor& act_in, const Tensor& s_all_in,
    const std::optional<Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate) {
  const CellDims d = check_forward_args(act_in, U_in, r0_in, s0_in, lengths, forget_gate, block_size, feedback,
                                        squash, truncate);
  check_dtype(act_in);
  const int64_t T = act_in.size(0), B = act_in.size(1), C = d.n_cells, G = d.gate_rows, R = d.rec_size;
  check_like(dy_in, "dy", {T, B, C}, act_in);
  check_like(dr_T_in, "dr_T", {B, R}, act_in);
  check_like(ds_T_in, "ds_T", {B, C}, act_in);
  check_like(y_in, "y", {T, B, C}, act_in);
  check_like(s_all_in, "s_all", {T, B, C}, act_in);
  const c10::cuda::CUDAGuard guard(act_in.device());
  const Tensor dy = dy_in.contiguous(), dr_T = dr_T_in.contiguous(), ds_T = ds_T_in.contiguous(),
               U = U_in.contiguous(), r0 = r0_in.contiguous(), s0 = s0_in.contiguous(), y = y_in.contiguous(),
               act = act_in.contiguous(), s_all = s_all_in.contiguous();
  const Tensor len = device_lengths(lengths, act);
  Tensor dA = at::empty_like(act), dr0 = at::empty_like(r0), ds0 = at::empty_like(s0);
  if (B > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    const cuda::DeviceInfo dev = cuda::device_info(act.device().index());
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, act.scalar_type(), "recurrence_backward_cuda", [&] {
      using T_ = typename Storage<scalar_t>::type;
      const cuda::LaunchPlan plan = cuda::plan_backward<T_>(d, B, dev);
      check_plan(plan, d, B);
      if (plan.n_tiles == 0) {
        dA.zero_();
        dr0.copy_(dr_T);
        ds0.copy_(ds_T);
        return;
      }
      Tensor ws = at::empty({int64_t(plan.workspace_bytes) + 1}, act.options().dtype(at::kByte));
      cuda::BackwardArgs<T_> args{d,
                                  T,
                                  B,
                                  in_ptr<scalar_t>(dy),
                                  in_ptr<scalar_t>(dr_T),
                                  in_ptr<scalar_t>(ds_T),
                                  in_ptr<scalar_t>(U),
                                  in_ptr<scalar_t>(s0),
                                  in_ptr<scalar_t>(act),
                                  in_ptr<scalar_t>(s_all),
                                  len.defined() ? len.const_data_ptr<int64_t>() : nullptr,
                                  out_ptr<scalar_t>(dA),
                                  out_ptr<scalar_t>(dr0),
                                  out_ptr<scalar_t>(ds0)};
      check_cuda(cuda::recurrence_backward<T_>(args, plan, ws.mutable_data_ptr(), stream),
                 "the backward kernel launch");
    });
  } else {
    dr0.copy_(dr_T);
    ds0.copy_(ds_T);
  }
  // dU = sum_t da_t^T r_{t-1}: one GEMM over all steps and rows (rows past their length have da = 0). 16-bit
  // types accumulate in float32 here too. float32 follows torch.backends.cuda.matmul (no TF32 by default).
  Tensor dU;
  if (T * B == 0) {
    dU = at::zeros_like(U);
  } else {
    const Tensor r_prev = previous_sources(d, r0, y, act).reshape({T * B, R});
    const Tensor dA2 = dA.reshape({T * B, G});
    const bool low = act.scalar_type() == at::kHalf || act.scalar_type() == at::kBFloat16;
    dU = low ? at::mm(dA2.t().to(at::kFloat), r_prev.to(at::kFloat)).to(act.scalar_type()) : at::mm(dA2.t(), r_prev);
  }
  return {dA, dU, dr0, ds0};
}

// The launch plans the CUDA kernels would use (for tests and benchmarks; nothing runs):
// [bt, group, n_groups, n_tiles, threads, ksplit, u_in_smem, smem_bytes, workspace_bytes, mma, tiles, cluster,
// dsmem] for the forward (backward=false) or backward kernel, or raises when no plan exists. tiles: batch tiles a
// group runs side by side (group > 1 with a per-step product; else 1); cluster: the groups are thread-block clusters
// (sm_90); dsmem: their CTAs exchange r_t (forward) or da_t (backward) through distributed shared memory.
std::vector<int64_t> cuda_launch_plan(int64_t n_cells, int64_t batch, c10::ScalarType dtype, bool forget_gate,
                                      int64_t block_size, c10::string_view feedback, c10::string_view squash,
                                      bool truncate, bool backward, int64_t device) {
  const CellDims d = cell_dims(n_cells, forget_gate, block_size, feedback, squash, truncate);
  TORCH_CHECK(batch >= 0, "lstm_ext: batch must be >= 0, got ", batch);
  const c10::cuda::CUDAGuard guard(c10::Device(c10::DeviceType::CUDA, c10::DeviceIndex(device)));
  const cuda::DeviceInfo dev = cuda::device_info(int(device));
  cuda::LaunchPlan plan;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "cuda_launch_plan", [&] {
    using T_ = typename Storage<scalar_t>::type;
    plan = backward ? cuda::plan_backward<T_>(d, batch, dev) : cuda::plan_forward<T_>(d, batch, dev);
  });
  check_plan(plan, d, batch);
  return {plan.bt,      plan.group,     plan.n_groups,           plan.n_tiles,
          plan.threads, plan.ksplit,    int64_t(plan.u_in_smem), int64_t(plan.smem_bytes),
          int64_t(plan.workspace_bytes), int64_t(plan.mma), int64_t(plan.tiles), int64_t(plan.cluster),
          int64_t(plan.dsmem)};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  m.def(
      "cuda_launch_plan(int n_cells, int batch, ScalarType dtype, bool forget_gate, int block_size, str feedback, "
      "str squash, bool truncate, bool backward, int device) -> int[]",
      &cuda_launch_plan);
}

TORCH_LIBRARY_IMPL(lstm_ext, CUDA, m) {
  m.impl("recurrence_forward", &recurrence_forward_cuda);
  m.impl("recurrence_backward", &recurrence_backward_cuda);
  m.impl("recurrence", &recurrence_inference_cuda);
}

}  // namespace lstm_ext
