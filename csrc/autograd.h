// What the C++ autograd nodes of the ops (csrc/autograd.cpp, csrc/layer.cpp) share: the node itself, the cell
// config kept for the backward, and the backward recurrence run with it.
#pragma once

#include <torch/autograd.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/csrc/dynamo/compiled_autograd.h>

#include <array>
#include <mutex>
#include <optional>
#include <type_traits>

namespace lstm_ext {

// The backward node of a differentiable op, written as torch's generated nodes are (AddmmBackward0 in
// torch/csrc/autograd/generated/Functions.h), not as a torch::autograd::Function: the Function's context, input and
// output metadata and output wrapping cost 4.5 us a call (the B=1 H=8 layer op: 4.6 us without a graph, 9.1 with
// one), as much as 30 steps of its recurrence. The forward (an Autograd kernel) computes below autograd, then
// make_node, set_next_edges (its differentiable inputs, in order), set_history on each output, save() and
// `config`. apply() receives an undefined gradient for an output that none reached (unused output: zeros).
// N: the number of saved tensors; the subclass names them.
template <size_t N>
struct OpBackward : torch::autograd::Node {
  int64_t config = 0;  // config_code

  // Saves t (undefined: none) as saved tensor i; an output of the op saves without its grad_fn (no cycle), after
  // set_history.
  void save(size_t i, const at::Tensor& t, bool is_output = false) {
    saved_[i] = torch::autograd::SavedVariable(t, is_output);
    is_output_[i] = is_output;
  }

  // Saves `ts` as saved tensors 0, 1, ... in order; the one at index `output` (if any) is an output of the op.
  void save_all(std::initializer_list<at::Tensor> ts, std::optional<size_t> output = std::nullopt) {
    TORCH_INTERNAL_ASSERT(ts.size() == N);
    size_t i = 0;
    for (const at::Tensor& t : ts) {
      save(i, t, output == i);
      ++i;
    }
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (torch::autograd::SavedVariable& v : saved_) v.reset_data();
  }

  // torch.compile's compiled autograd: the saved tensors and the config are the node's state.
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    args.collect(name());
    for (size_t i = 0; i < N; ++i) args.collect(saved_[i], is_output_[i]);
    args.collect(config);
  }
  torch::autograd::variable_list apply_with_saved(const torch::autograd::variable_list& grads,
                                                  torch::dynamo::autograd::SwapSavedVariables& swap) override {
    for (torch::autograd::SavedVariable& v : saved_) swap.before(v);
    torch::autograd::variable_list out = apply(torch::autograd::variable_list(grads));
    for (torch::autograd::SavedVariable& v : saved_) swap.after(v);
    return out;
  }

 protected:
  // The saved tensors, in save()'s order; raises if the graph was freed (a second backward without retain_graph)
  // or a saved tensor was changed in place since.
  std::array<at::Tensor, N> unpack_saved() {
    std::array<at::Tensor, N> out;
    const auto self = getptr();
    for (size_t i = 0; i < N; ++i) out[i] = is_output_[i] ? saved_[i].unpack(self) : saved_[i].unpack();
    return out;
  }

 private:
  std::array<torch::autograd::SavedVariable, N> saved_;
  std::array<bool, N> is_output_{};
};

// A new node, NodeT(args...). torch 2.13 holds autograd nodes in c10::intrusive_ptr; earlier releases (2.11 on the
// lent GPUs) in a std::shared_ptr whose deleter is torch::autograd::deleteNode (found by argument-dependent lookup,
// so that this compiles against both).
template <typename NodeT, typename... Args>
auto make_node(Args&&... args) {
  if constexpr (std::is_base_of_v<c10::intrusive_ptr_target, NodeT>) {
    return c10::make_intrusive<NodeT>(std::forward<Args>(args)...);
  } else {
    return std::shared_ptr<NodeT>(new NodeT(std::forward<Args>(args)...), [](NodeT* node) { deleteNode(node); });
  }
}

// Raises if any of `tensors` carries a forward-mode gradient (torch.autograd.forward_ad): the ops have no jvp, and
// an output without a tangent would be silently wrong.
void check_no_forward_grad(const char* op, std::initializer_list<const at::Tensor*> tensors);

// The config arguments of the recurrence as one int64, what the autograd nodes keep for their backward (a map with
// string keys, five entries, two of them strings, took 1.4 us of a 60 us call at B=1 H=8): bit 0 forget_gate,
// 1 truncate, 2 feedback "all", 3-4 the squash, 5- block_size.
int64_t config_code(bool forget_gate, int64_t block_size, c10::string_view feedback, c10::string_view squash,
                    bool truncate);

// The config arguments that config_code packed.
struct ConfigArgs {
  bool forget_gate;
  int64_t block_size;
  c10::string_view feedback, squash;
  bool truncate;
};
ConfigArgs config_args(int64_t code);

// recurrence_backward with the config of config_code. dy, dr_T, ds_T: the output gradients (undefined: unused
// output, zeros); the rest as the forward returned or took them (len undefined: no lengths).
// -> dA (T,B,G), dU (G,R), dr0 (B,R), ds0 (B,C)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_with_config(
    int64_t config, const at::Tensor& dy, const at::Tensor& dr_T, const at::Tensor& ds_T, const at::Tensor& U,
    const at::Tensor& r0, const at::Tensor& s0, const at::Tensor& y, const at::Tensor& act, const at::Tensor& s_all,
    const at::Tensor& len);

}  // namespace lstm_ext
