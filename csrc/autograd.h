// What the C++ autograd nodes of the ops (csrc/autograd.cpp, csrc/layer.cpp) share: the cell config kept
// for the backward, and the backward recurrence run with it.
#pragma once

#include <torch/autograd.h>

#include <optional>

namespace lstm_ext {

// Keeps the config arguments of the recurrence in ctx->saved_data (as the one entry "config").
void save_config(torch::autograd::AutogradContext* ctx, bool forget_gate, int64_t block_size,
                 c10::string_view feedback, c10::string_view squash, bool truncate);

// recurrence_backward with the config save_config kept. dy, dr_T, ds_T: the output gradients (undefined:
// unused output, zeros); the rest as the forward returned or took them (len undefined: no lengths).
// -> dA (T,B,G), dU (G,R), dr0 (B,R), ds0 (B,C)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_with_saved_config(
    torch::autograd::AutogradContext* ctx, const at::Tensor& dy, const at::Tensor& dr_T, const at::Tensor& ds_T,
    const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0, const at::Tensor& y, const at::Tensor& act,
    const at::Tensor& s_all, const at::Tensor& len);

}  // namespace lstm_ext
