// The op lstm_ext::paper_train: on-line training (or evaluation) of a paper network on a chunk of
// sequences, in place on its weights. The network and the learning rule: csrc/cpu/paper_train.h. The checks here
// serve the CPU kernel and the CUDA one (csrc/cuda/paper_ops_cuda.cpp).
#include <torch/library.h>
#include <ATen/ATen.h>

#include <cmath>

#include "cpu/paper_train.h"
#include "ops.h"

namespace lstm_ext {

namespace {

Squash parse_squash(c10::string_view squash) {
  if (squash == "tanh") return Squash::Tanh;
  if (squash == "paper") return Squash::Paper;
  TORCH_CHECK(squash == "sigmoid_identity",
              "lstm_ext.paper_train: squash must be \"tanh\", \"paper\" or \"sigmoid_identity\", got \"", squash, "\"");
  return Squash::SigmoidIdentity;
}

// The output units: "logistic" (the paper's) or "linear".
bool parse_linear_output(c10::string_view output) {
  TORCH_CHECK(output == "logistic" || output == "linear",
              "lstm_ext.paper_train: output must be \"logistic\" or \"linear\", got \"", output, "\"");
  return output == "linear";
}

void check_mutable_weight(const at::Tensor& w, const char* name) {
  TORCH_CHECK(w.scalar_type() == at::kFloat || w.scalar_type() == at::kDouble,
              "lstm_ext.paper_train: ", name, " must be float32 or float64, got ", w.scalar_type());
  TORCH_CHECK(w.dim() == 2, "lstm_ext.paper_train: ", name, " must be 2-D, got ", w.dim(), "-D");
  TORCH_CHECK(w.is_contiguous(), "lstm_ext.paper_train: ", name, " must be contiguous (it is changed in place)");
}

void check_like_wh(const at::Tensor& t, const char* name, at::IntArrayRef shape, const at::Tensor& Wh) {
  TORCH_CHECK(t.device() == Wh.device(), "lstm_ext.paper_train: ", name, " must be on Wh's device ", Wh.device(),
              ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == Wh.scalar_type(), "lstm_ext.paper_train: ", name, " must have Wh's dtype ",
              Wh.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, "lstm_ext.paper_train: ", name, " must have shape ", shape, ", got ", t.sizes());
}

}  // namespace

PaperNetDims check_paper_train_args(const at::Tensor& Wh, const at::Tensor& Wo, const at::Tensor& Mh,
                                    const at::Tensor& Mo, const std::optional<at::Tensor>& x,
                                    const std::optional<at::Tensor>& x_index, const at::Tensor& lengths,
                                    const at::Tensor& targets, const at::Tensor& target_mask, int64_t n_blocks,
                                    int64_t block_size, bool forget_gate, bool output_gate, c10::string_view squash,
                                    double lr, bool learn, bool update_each_step, bool truncate,
                                    c10::string_view output) {
  check_mutable_weight(Wh, "Wh");
  check_mutable_weight(Wo, "Wo");
  TORCH_CHECK(n_blocks >= 1 && block_size >= 1, "lstm_ext.paper_train: n_blocks and block_size must be >= 1, got ",
              n_blocks, " and ", block_size);
  TORCH_CHECK(!learn || (std::isfinite(lr) && lr >= 0), "lstm_ext.paper_train: lr must be a finite number >= 0, got ",
              lr);
  TORCH_CHECK(truncate || !update_each_step || !learn,
              "lstm_ext.paper_train: the full gradient (truncate=False) changes weights once per sequence; "
              "update_each_step needs the truncated gradient");
  TORCH_CHECK(x.has_value() != x_index.has_value(),
              "lstm_ext.paper_train: give exactly one of x (real-valued inputs) and x_index (one-hot inputs)");
  PaperNetDims d{};
  d.n_blocks = int(n_blocks);
  d.block_size = int(block_size);
  d.forget_gate = forget_gate;
  d.output_gate = output_gate;
  d.squash = parse_squash(squash);
  d.linear_output = parse_linear_output(output);
  d.outputs = int(Wo.size(0));
  const int64_t H = d.hidden_rows(), R = d.rec_size();
  TORCH_CHECK(Wh.size(0) == H, "lstm_ext.paper_train: Wh must have ", H,
              " rows (gates and cells of this net), got ", Wh.size(0));
  TORCH_CHECK(Wh.size(1) >= R + 1, "lstm_ext.paper_train: Wh must have I + ", R + 1, " columns, got ", Wh.size(1));
  d.inputs = int(Wh.size(1) - R - 1);
  if (x.has_value()) {
    TORCH_CHECK(x->dim() == 3, "lstm_ext.paper_train: x must be (n, T, I), got ", x->dim(), "-D");
    TORCH_CHECK(x->size(2) == d.inputs, "lstm_ext.paper_train: Wh must have I + R + 1 = ", x->size(2) + R + 1,
                " columns for x's I = ", x->size(2), " inputs and R = ", R, ", got ", Wh.size(1));
  }
  const int64_t I = d.inputs, O = d.outputs, C = d.n_cells();
  check_like_wh(Wo, "Wo", {O, C + I + 1}, Wh);
  check_like_wh(Mh, "Mh", Wh.sizes(), Wh);
  check_like_wh(Mo, "Mo", Wo.sizes(), Wh);
  TORCH_CHECK(lengths.device() == Wh.device() && lengths.scalar_type() == at::kLong && lengths.dim() == 1,
              "lstm_ext.paper_train: lengths must be a 1-D int64 tensor on Wh's device ", Wh.device(), ", got ",
              lengths.scalar_type(), " ", lengths.dim(), "-D on ", lengths.device());
  const int64_t n = lengths.size(0);
  TORCH_CHECK(targets.dim() == 3, "lstm_ext.paper_train: targets must be (n, T, O), got ", targets.dim(), "-D");
  const int64_t T = targets.size(1);
  check_like_wh(targets, "targets", {n, T, O}, Wh);
  check_like_wh(target_mask, "target_mask", {n, T}, Wh);
  if (x.has_value()) {
    check_like_wh(*x, "x", {n, T, I}, Wh);
  } else {
    TORCH_CHECK(x_index->device() == Wh.device() && x_index->scalar_type() == at::kLong,
                "lstm_ext.paper_train: x_index must be an int64 tensor on Wh's device ", Wh.device(), ", got ",
                x_index->scalar_type(), " on ", x_index->device());
    TORCH_CHECK(x_index->sizes() == at::IntArrayRef({n, T}), "lstm_ext.paper_train: x_index must have shape (", n,
                ", ", T, "), got ", x_index->sizes());
    if (x_index->numel() > 0) {
      TORCH_CHECK(x_index->min().item<int64_t>() >= -1 && x_index->max().item<int64_t>() < I,
                  "lstm_ext.paper_train: x_index values must be in [-1, ", I, ")");
    }
  }
  if (n > 0) {
    TORCH_CHECK(lengths.min().item<int64_t>() >= 0 && lengths.max().item<int64_t>() <= T,
                "lstm_ext.paper_train: lengths must be in [0, ", T, "]");
  }
  return d;
}

PaperTrainTensors paper_train_tensors(const PaperNetDims& d, const at::Tensor& Wh, const at::Tensor& Mh,
                                      const at::Tensor& Mo, const std::optional<at::Tensor>& x,
                                      const std::optional<at::Tensor>& x_index, const at::Tensor& lengths,
                                      const at::Tensor& targets, const at::Tensor& target_mask,
                                      bool return_outputs) {
  const int64_t n = lengths.size(0), T = targets.size(1), O = d.outputs;
  const auto opts = Wh.options();
  PaperTrainTensors t;
  t.x = x.has_value() ? x->contiguous() : at::Tensor();
  t.x_index = x_index.has_value() ? x_index->contiguous() : at::Tensor();
  t.lengths = lengths.contiguous();
  t.targets = targets.contiguous();
  t.target_mask = target_mask.contiguous();
  t.Mh = Mh.contiguous();
  t.Mo = Mo.contiguous();
  t.loss = at::zeros({n}, opts);
  t.err_max = at::zeros({n}, opts);
  t.err_last = at::zeros({n}, opts);
  t.y_last = at::zeros({n, O}, opts);
  t.y_all = return_outputs ? at::zeros({n, T, O}, opts) : at::zeros({0}, opts);
  t.return_outputs = return_outputs;
  return t;
}

namespace {

// Wh (H, K), Wo (O, Ko), masks like them; x (n, T, I) or x_index (n, T); lengths (n,);
// targets (n, T, O); target_mask (n, T) -> loss, err_max, err_last (n,), y_last (n, O), y_all (n, T, O) | (0,)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> paper_train_cpu(
    at::Tensor& Wh, at::Tensor& Wo, const at::Tensor& Mh, const at::Tensor& Mo, const std::optional<at::Tensor>& x,
    const std::optional<at::Tensor>& x_index, const at::Tensor& lengths, const at::Tensor& targets,
    const at::Tensor& target_mask, int64_t n_blocks, int64_t block_size, bool forget_gate, bool output_gate,
    c10::string_view squash, double lr, bool learn, bool update_each_step, bool return_outputs, bool truncate,
    c10::string_view output) {
  TORCH_CHECK(Wh.device().is_cpu(), "lstm_ext.paper_train: the CPU kernel got Wh on ", Wh.device());
  const PaperNetDims d = check_paper_train_args(Wh, Wo, Mh, Mo, x, x_index, lengths, targets, target_mask, n_blocks,
                                                block_size, forget_gate, output_gate, squash, lr, learn,
                                                update_each_step, truncate, output);
  const PaperTrainTensors t = paper_train_tensors(d, Wh, Mh, Mo, x, x_index, lengths, targets, target_mask, return_outputs);
  AT_DISPATCH_FLOATING_TYPES(Wh.scalar_type(), "paper_train", [&] {
    cpu::paper_train(t.args<scalar_t>(d, Wh, Wo, lr, learn, update_each_step, truncate));
  });
  return {t.loss, t.err_max, t.err_last, t.y_last, t.y_all};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  m.def(
      "paper_train(Tensor(a!) Wh, Tensor(b!) Wo, Tensor Mh, Tensor Mo, Tensor? x, Tensor? x_index, Tensor lengths, "
      "Tensor targets, Tensor target_mask, int n_blocks, int block_size, bool forget_gate, bool output_gate, "
      "str squash, float lr, bool learn, bool update_each_step, bool return_outputs, bool truncate=True, "
      "str output=\"logistic\") "
      "-> (Tensor loss, Tensor err_max, Tensor err_last, Tensor y_last, Tensor y_all)");
}

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) { m.impl("paper_train", &paper_train_cpu); }

}  // namespace lstm_ext
