// Torch-facing helpers shared by the CPU and CUDA registrations: argument checks with messages that
// name the argument and what was expected, and the config as the kernels take it.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>
#include <ATen/EmptyTensor.h>

#include <optional>
#include <string>

#include "cell.h"
#include "paper_net.h"

namespace lstm_ext {

// A new, uninitialised CPU tensor of `like`'s dtype, from the CPU allocator without a dispatch (at::empty's costs
// about 0.3 us, and a call of the B=1 H=8 layer makes a dozen tensors). For the CPU kernels, which write every
// element.
inline at::Tensor new_cpu(at::IntArrayRef sizes, const at::Tensor& like) {
  return at::detail::empty_cpu(sizes, like.scalar_type());
}

// Whether t is a plain CPU tensor, one the CPU loops can read: on the CPU, strided, and not a wrapper without
// storage of its own: a fake or functional tensor of torch.compile's or opcheck's tracing, or a torch.func
// transform's tensor (grad's TensorWrapper, vmap's BatchedTensor), which the dispatcher unwraps level by level.
// Undefined counts as plain. Callers also check for a Python dispatch mode (c10::impl::dispatch_mode_enabled),
// which ought to see the ops whole.
inline bool plain_cpu(const at::Tensor& t) {
  using c10::DispatchKey;
  const auto wrapped = c10::DispatchKeySet({DispatchKey::Python, DispatchKey::Functionalize,
                                            DispatchKey::FuncTorchGradWrapper, DispatchKey::FuncTorchBatched});
  return !t.defined() || (t.is_cpu() && t.layout() == at::kStrided && !t.key_set().has_any(wrapped));
}

// The config arguments of the ops, checked, as CellDims for C cells.
CellDims cell_dims(int64_t n_cells, bool forget_gate, int64_t block_size, c10::string_view feedback,
                   c10::string_view squash, bool truncate);

// Checks of recurrence_forward's arguments; returns the CellDims they describe.
CellDims check_forward_args(const at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
                            const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size,
                            c10::string_view feedback, c10::string_view squash, bool truncate);

// Checks of per-row lengths (B,) for T steps: int64, on the CPU or on ref's device, values in [0, T].
void check_lengths(const at::Tensor& lengths, int64_t T, int64_t B, const at::Tensor& ref);

// Checks that `t` has `shape` and the dtype and device of `ref` (named `ref_name` in the messages). Symbolic sizes
// (torch.compile's and torch.export's dynamic shapes) are compared without specialising them.
void check_like(const at::Tensor& t, const char* name, c10::SymIntArrayRef shape, const at::Tensor& ref,
                const char* ref_name = "A");

// The ops recurrence_forward and recurrence_backward through the dispatcher (for the autograd kernels).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_forward(
    const at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate);
// recurrence_forward's CPU kernel with the activations written over A, which it consumes: act is A itself, and no
// second (T, B, G) tensor is allocated and faulted in. For the layer op, whose A is its own temporary; A must be a
// contiguous float32/float64 CPU tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrence_forward_cpu_over_A(
    at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate);
// lstm_ext::recurrence on the CPU without a gradient, y written into `y`, a contiguous (T,B,C) CPU tensor of A's
// dtype (a chunk of steps of a longer output: csrc/layer.cpp); returns (r_T, s_T).
std::tuple<at::Tensor, at::Tensor> recurrence_inference_cpu_into(
    const at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate, at::Tensor& y);
// recurrence_backward's CPU kernel, which the autograd nodes call directly on plain CPU tensors
// (backward_with_config). There dy, dr_T and ds_T may be undefined: no gradient on that output, zeros.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrence_backward_cpu(
    const at::Tensor& dy, const at::Tensor& dr_T, const at::Tensor& ds_T, const at::Tensor& U, const at::Tensor& r0,
    const at::Tensor& s0, const at::Tensor& y, const at::Tensor& act, const at::Tensor& s_all,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate);
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> call_backward(
    const at::Tensor& dy, const at::Tensor& dr_T, const at::Tensor& ds_T, const at::Tensor& U, const at::Tensor& r0,
    const at::Tensor& s0, const at::Tensor& y, const at::Tensor& act, const at::Tensor& s_all,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate);

// Checks of paper_train's arguments (csrc/paper_ops.cpp; every tensor on Wh's device, the values of lengths and
// x_index in range); returns the net they describe.
PaperNetDims check_paper_train_args(const at::Tensor& Wh, const at::Tensor& Wo, const at::Tensor& Mh,
                                    const at::Tensor& Mo, const std::optional<at::Tensor>& x,
                                    const std::optional<at::Tensor>& x_index, const at::Tensor& lengths,
                                    const at::Tensor& targets, const at::Tensor& target_mask, int64_t n_blocks,
                                    int64_t block_size, bool forget_gate, bool output_gate, c10::string_view squash,
                                    double lr, bool learn, bool update_each_step, bool truncate,
                                    c10::string_view output);

// paper_train's tensors as its kernels take them (after check_paper_train_args): the inputs contiguous, the
// outputs allocated on Wh's device (zeros; y_all is (0,) unless return_outputs).
struct PaperTrainTensors {
  at::Tensor x, x_index, lengths, targets, target_mask, Mh, Mo;  // x or x_index undefined
  at::Tensor loss, err_max, err_last, y_last, y_all;
  bool return_outputs = false;

  template <typename T>
  PaperTrainArgs<T> args(const PaperNetDims& d, at::Tensor& Wh, at::Tensor& Wo, double lr, bool learn,
                         bool update_each_step, bool truncate) const {
    auto in = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<T>() : nullptr; };
    PaperTrainArgs<T> p{};
    p.d = d;
    p.Wh = Wh.mutable_data_ptr<T>();
    p.Mh = in(Mh);
    p.Wo = Wo.mutable_data_ptr<T>();
    p.Mo = in(Mo);
    p.n = lengths.size(0);
    p.steps = targets.size(1);
    p.x = in(x);
    p.x_index = x_index.defined() ? x_index.const_data_ptr<int64_t>() : nullptr;
    p.lengths = lengths.const_data_ptr<int64_t>();
    p.targets = in(targets);
    p.target_mask = in(target_mask);
    p.lr = T(lr);
    p.learn = learn;
    p.update_each_step = update_each_step;
    p.truncate = truncate;
    p.loss = loss.mutable_data_ptr<T>();
    p.err_max = err_max.mutable_data_ptr<T>();
    p.err_last = err_last.mutable_data_ptr<T>();
    p.y_last = y_last.mutable_data_ptr<T>();
    p.y_all = return_outputs ? y_all.mutable_data_ptr<T>() : nullptr;
    return p;
  }
};
PaperTrainTensors paper_train_tensors(const PaperNetDims& d, const at::Tensor& Wh, const at::Tensor& Mh,
                                      const at::Tensor& Mo, const std::optional<at::Tensor>& x,
                                      const std::optional<at::Tensor>& x_index, const at::Tensor& lengths,
                                      const at::Tensor& targets, const at::Tensor& target_mask,
                                      bool return_outputs);

}  // namespace lstm_ext
