// Torch-facing helpers shared by the CPU and CUDA registrations: argument checks with messages that
// name the argument and what was expected, and the config as the kernels take it.
#pragma once

#include <torch/library.h>
#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "cell.h"

namespace lstm_ext {

// The config arguments of the ops, checked, as CellDims for C cells.
CellDims cell_dims(int64_t n_cells, bool forget_gate, int64_t block_size, c10::string_view feedback,
                   c10::string_view squash, bool truncate);

// Checks of recurrence_forward's arguments; returns the CellDims they describe.
CellDims check_forward_args(const at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
                            const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size,
                            c10::string_view feedback, c10::string_view squash, bool truncate);

// Checks that `t` has `shape`, A's dtype and A's device.
void check_like(const at::Tensor& t, const char* name, at::IntArrayRef shape, const at::Tensor& A);

}  // namespace lstm_ext
