// The autograd of lstm_ext::recurrence (the differentiable op the Python API calls) and of recurrence_forward and
// recurrence_backward, its forward and backward. It lives in C++, nodes of its own (OpBackward, autograd.h): a
// Python autograd kernel costs ~90 us per call here, ten times the whole fused recurrence of the paper's nets, and
// torch.func's transforms refuse C++ torch::autograd::Functions. Forward and backward are ordinary ops with fake
// kernels, which torch.compile and opcheck see.
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>

#include "autograd.h"
#include "ops.h"

namespace lstm_ext {

using Tensor = at::Tensor;

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> call_forward(const Tensor& A, const Tensor& U, const Tensor& r0,
                                                                const Tensor& s0,
                                                                const std::optional<Tensor>& lengths,
                                                                bool forget_gate, int64_t block_size,
                                                                c10::string_view feedback, c10::string_view squash,
                                                                bool truncate) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("lstm_ext::recurrence_forward", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor>(
                           const Tensor&, const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&,
                           bool, int64_t, c10::string_view, c10::string_view, bool)>();
  return op.call(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate);
}

std::tuple<Tensor, Tensor, Tensor, Tensor> call_backward(const Tensor& dy, const Tensor& dr_T, const Tensor& ds_T,
                                                         const Tensor& U, const Tensor& r0, const Tensor& s0,
                                                         const Tensor& y, const Tensor& act, const Tensor& s_all,
                                                         const std::optional<Tensor>& lengths, bool forget_gate,
                                                         int64_t block_size, c10::string_view feedback,
                                                         c10::string_view squash, bool truncate) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("lstm_ext::recurrence_backward", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor, Tensor>(
                           const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                           const Tensor&, const Tensor&, const Tensor&, const std::optional<Tensor>&, bool, int64_t,
                           c10::string_view, c10::string_view, bool)>();
  if (!at::GradMode::is_enabled()) {  // a plain backward (no create_graph): no node to record, skip autograd's kernel
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(dy, dr_T, ds_T, U, r0, s0, y, act, s_all, lengths, forget_gate, block_size, feedback, squash,
                   truncate);
  }
  return op.call(dy, dr_T, ds_T, U, r0, s0, y, act, s_all, lengths, forget_gate, block_size, feedback, squash,
                 truncate);
}

namespace {

constexpr const char* kSquashNames[] = {"tanh", "paper", "sigmoid_identity"};

}  // namespace

int64_t config_code(bool forget_gate, int64_t block_size, c10::string_view feedback, c10::string_view squash,
                    bool truncate) {
  int64_t squash_index = 0;
  while (squash_index < 3 && squash != kSquashNames[squash_index]) ++squash_index;
  TORCH_INTERNAL_ASSERT(squash_index < 3, "lstm_ext: unchecked squash");
  return int64_t(forget_gate) | int64_t(truncate) << 1 | int64_t(feedback == "all") << 2 | squash_index << 3 |
         block_size << 5;
}

ConfigArgs config_args(int64_t code) {
  return {bool(code & 1), code >> 5, (code & 4) ? "all" : "cells", kSquashNames[(code >> 3) & 3], bool(code & 2)};
}

void check_no_forward_grad(const char* op, std::initializer_list<const Tensor*> tensors) {
  for (const Tensor* t : tensors)
    TORCH_CHECK(!(t->defined() && t->_fw_grad(/*level=*/0).defined()), op,
                ": forward-mode AD (torch.autograd.forward_ad, jvp) is not supported by the fused op; use "
                "backend=\"reference\" for it");
}

std::tuple<Tensor, Tensor, Tensor, Tensor> backward_with_config(int64_t code, const Tensor& dy, const Tensor& dr_T,
                                                                const Tensor& ds_T, const Tensor& U, const Tensor& r0,
                                                                const Tensor& s0, const Tensor& y, const Tensor& act,
                                                                const Tensor& s_all, const Tensor& len) {
  const auto [forget_gate, block_size, feedback, squash, truncate] = config_args(code);
  const std::optional<Tensor> lengths = len.defined() ? std::optional<Tensor>(len) : std::nullopt;
  // A plain backward (no create_graph) of plain CPU tensors: the CPU kernel itself, which takes the outputs without
  // a gradient as undefined (no zero tensors to make, no dispatch).
  if (!at::GradMode::is_enabled() && !c10::impl::dispatch_mode_enabled()) {
    bool plain = true;
    for (const Tensor* t : {&dy, &dr_T, &ds_T, &U, &r0, &s0, &y, &act, &s_all}) plain = plain && plain_cpu(*t);
    if (plain)
      return recurrence_backward_cpu(dy, dr_T, ds_T, U, r0, s0, y, act, s_all, lengths, forget_gate, block_size,
                                     feedback, squash, truncate);
  }
  // Outputs without a gradient (unused) count as zero gradients.
  return call_backward(dy.defined() ? dy : at::zeros_like(y), dr_T.defined() ? dr_T : at::zeros_like(r0),
                       ds_T.defined() ? ds_T : at::zeros_like(s0), U, r0, s0, y, act, s_all, lengths, forget_gate,
                       block_size, feedback, squash, truncate);
}

namespace {

using torch::autograd::variable_list;

// lstm_ext::recurrence's node: A (T,B,G), U (G,R), r0 (B,R), s0 (B,C) -> y, r_T, s_T.
struct RecurrenceBackward : OpBackward<7> {
  enum Saved { kU, kR0, kS0, kY, kAct, kSAll, kLengths };
  std::string name() const override { return "RecurrenceBackward"; }
  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto saved = unpack_saved();
    auto [dA, dU, dr0, ds0] = backward_with_config(config, grads[0], grads[1], grads[2], saved[kU], saved[kR0],
                                                   saved[kS0], saved[kY], saved[kAct], saved[kSAll], saved[kLengths]);
    return {dA, dU, dr0, ds0};
  }
};

// recurrence_backward is differentiable once. Where its inputs require a gradient (a backward with create_graph),
// its outputs get torch's Error node, which raises when a second derivative reaches it instead of that derivative
// silently being 0. A node, not a torch::autograd::Function: torch.func's transforms refuse C++ Functions, and
// torch.func.grad runs this op's backward inside its transform.
std::tuple<Tensor, Tensor, Tensor, Tensor> recurrence_backward_autograd(
    const Tensor& dy, const Tensor& dr_T, const Tensor& ds_T, const Tensor& U, const Tensor& r0, const Tensor& s0,
    const Tensor& y, const Tensor& act, const Tensor& s_all, const std::optional<Tensor>& lengths, bool forget_gate,
    int64_t block_size, c10::string_view feedback, c10::string_view squash, bool truncate) {
  check_no_forward_grad("lstm_ext.recurrence_backward", {&dy, &dr_T, &ds_T, &U, &r0, &s0, &y, &act, &s_all});
  Tensor dA, dU, dr0, ds0;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(dA, dU, dr0, ds0) = call_backward(dy, dr_T, ds_T, U, r0, s0, y, act, s_all, lengths, forget_gate,
                                               block_size, feedback, squash, truncate);
  }
  if (torch::autograd::compute_requires_grad(dy, dr_T, ds_T, U, r0, s0, y, act, s_all)) {
    auto node = make_node<torch::autograd::Error>(
        "lstm_ext: the recurrence is differentiable once; double backward (a gradient of its gradient) is not "
        "supported. Use backend=\"reference\" for higher derivatives.",
        torch::autograd::collect_next_edges(dy, dr_T, ds_T, U, r0, s0, y, act, s_all));
    for (const Tensor& out : {dA, dU, dr0, ds0})
      if (out.defined()) torch::autograd::set_history(out, node);
  }
  return {dA, dU, dr0, ds0};
}

// recurrence_forward below autograd, and (where A, U, r0 or s0 require a gradient) RecurrenceBackward on its
// differentiable outputs y, r_T, s_T; act and s_all are the backward's workspace, not differentiable.
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> recurrence_forward_autograd(
    const Tensor& A, const Tensor& U, const Tensor& r0, const Tensor& s0, const std::optional<Tensor>& lengths,
    bool forget_gate, int64_t block_size, c10::string_view feedback, c10::string_view squash, bool truncate) {
  check_no_forward_grad("lstm_ext.recurrence_forward", {&A, &U, &r0, &s0});
  Tensor y, r_T, s_T, act, s_all;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(y, r_T, s_T, act, s_all) =
        call_forward(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate);
  }
  if (torch::autograd::compute_requires_grad(A, U, r0, s0)) {
    auto node = make_node<RecurrenceBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(A, U, r0, s0));
    for (const Tensor& out : {y, r_T, s_T}) torch::autograd::set_history(out, node);
    node->save_all({U, r0, s0, y, act, s_all, lengths.value_or(Tensor())}, RecurrenceBackward::kY);  // Saved's order
    node->config = config_code(forget_gate, block_size, feedback, squash, truncate);
  }
  return {y, r_T, s_T, act, s_all};
}

std::tuple<Tensor, Tensor, Tensor> recurrence_autograd(const Tensor& A, const Tensor& U, const Tensor& r0,
                                                       const Tensor& s0, const std::optional<Tensor>& lengths,
                                                       bool forget_gate, int64_t block_size,
                                                       c10::string_view feedback, c10::string_view squash,
                                                       bool truncate) {
  check_no_forward_grad("lstm_ext.recurrence", {&A, &U, &r0, &s0});
  if (!torch::autograd::compute_requires_grad(A, U, r0, s0)) {
    // no graph to record: the op below autograd, which keeps no workspace on the CPU
    static auto op = c10::Dispatcher::singleton()
                         .findSchemaOrThrow("lstm_ext::recurrence", "")
                         .typed<std::tuple<Tensor, Tensor, Tensor>(
                             const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                             const std::optional<Tensor>&, bool, int64_t, c10::string_view, c10::string_view, bool)>();
    at::AutoDispatchBelowADInplaceOrView guard;
    return op.call(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate);
  }
  auto [y, r_T, s_T, act, s_all] =
      recurrence_forward_autograd(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate);
  return {y, r_T, s_T};
}

// Below autograd (inference mode, or after autograd has been traced away) on a device without a kernel of
// its own for lstm_ext::recurrence (the CPU and CUDA have one that keeps no workspace): the forward op alone.
std::tuple<Tensor, Tensor, Tensor> recurrence_no_grad(const Tensor& A, const Tensor& U, const Tensor& r0,
                                                      const Tensor& s0, const std::optional<Tensor>& lengths,
                                                      bool forget_gate, int64_t block_size,
                                                      c10::string_view feedback, c10::string_view squash,
                                                      bool truncate) {
  auto [y, r_T, s_T, act, s_all] =
      call_forward(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate);
  return {y, r_T, s_T};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  // A (T,B,G), U (G,R), r0 (B,R), s0 (B,C), lengths (B,) -> y (T,B,C), r_T (B,R), s_T (B,C); differentiable.
  m.def(
      "recurrence(Tensor A, Tensor U, Tensor r0, Tensor s0, Tensor? lengths, bool forget_gate, int block_size, "
      "str feedback, str squash, bool truncate) -> (Tensor y, Tensor r_T, Tensor s_T)");
}

TORCH_LIBRARY_IMPL(lstm_ext, Autograd, m) {
  m.impl("recurrence", &recurrence_autograd);
  m.impl("recurrence_forward", &recurrence_forward_autograd);
  m.impl("recurrence_backward", &recurrence_backward_autograd);
}

TORCH_LIBRARY_IMPL(lstm_ext, CompositeExplicitAutograd, m) { m.impl("recurrence", &recurrence_no_grad); }

}  // namespace lstm_ext
