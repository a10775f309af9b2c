// lstm_ext::layer: one LSTM layer in one direction, the input projection and the recurrence, as ONE
// differentiable op. At the paper's sizes (B=1, H=8) a layer's cost is nearly all per-op overhead: the
// projection as its own autograd nodes (bias add, addmm) cost more than the fused recurrence of 100 steps.
// Here the projection is computed inside the op and its gradients in the op's backward, so a layer is
// one node. Device-generic: the projection is ATen's (small ones on the CPU: plain loops,
// cpu/projection_cpu.h), the recurrence the ops recurrence_forward/backward.
//
//   x (T,B,D), w_ih (G,D), w_hh (G,R), b_ih/b_hh (G,) or None, h0 (B,R) or None, c0 (B,C) or None,
//   lengths (B,) int64 or None, a0 (B,G) or None
//   -> y (T,B,C), h_n (B,R), c_n (B,C)        with A = x w_ih^T + b_ih + b_hh, U = w_hh, r0 = h0, s0 = c0
// An absent h0 or c0 is zeros (nn.LSTM's hx=None), made here: the modules' usual call passes None for both.
// a0 is added to step 0's net input, A[0] += a0: a projected layer (nn.LSTM's proj_size) runs on its unprojected
// cell outputs with U = w_hh w_hr, and its given initial state h0 (B,P) reaches step 0 as a0 = h0 w_hh^T
// (lstm_ext/functional.py, _projected_layer).
#include <c10/core/impl/TorchDispatchModeTLS.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>

#include <cstring>

#include "autograd.h"
#include "cpu/projection_cpu.h"
#include "ops.h"

namespace lstm_ext {
namespace {

using torch::autograd::variable_list;
using Tensor = at::Tensor;
using OptTensor = std::optional<Tensor>;

// Checks of what the recurrence op does not see (x, w_ih, the biases); w_hh, h0 and c0 are checked by name.
// Returns the cell dims they describe.
CellDims check_layer_args(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                          const OptTensor& b_hh, const OptTensor& h0, const OptTensor& c0, const OptTensor& a0,
                          bool forget_gate, int64_t block_size, c10::string_view feedback, c10::string_view squash,
                          bool truncate) {
  TORCH_CHECK(x.dim() == 3, "lstm_ext.layer: x must be 3-D (T, B, D), got ", x.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "lstm_ext.layer: x must be a floating-point tensor, got ",
              x.scalar_type());
  TORCH_CHECK(w_ih.dim() == 2, "lstm_ext.layer: w_ih must be 2-D (G, D), got ", w_ih.dim(), "-D");
  // B (like T) is symbolic under torch.compile's and torch.export's dynamic shapes: compared, never read as a number
  const int64_t G = w_ih.size(0);
  const c10::SymInt D = x.sym_size(2), B = x.sym_size(1);
  check_like(w_ih, "w_ih", {G, D}, x, "x");
  TORCH_CHECK(block_size >= 1, "lstm_ext.layer: block_size must be >= 1, got ", block_size);
  const int64_t per_block = block_size + (forget_gate ? 3 : 2);
  TORCH_CHECK(G % per_block == 0, "lstm_ext.layer: w_ih has ", G, " gate rows, not a multiple of block_size + ",
              "gates per block (", per_block, ")");
  const CellDims d = cell_dims(G / per_block * block_size, forget_gate, block_size, feedback, squash, truncate);
  check_like(w_hh, "w_hh", {G, d.rec_size}, x, "x");
  if (b_ih.has_value()) check_like(*b_ih, "b_ih", {G}, x, "x");
  if (b_hh.has_value()) check_like(*b_hh, "b_hh", {G}, x, "x");
  if (h0.has_value()) check_like(*h0, "h0", {B, d.rec_size}, x, "x");
  if (c0.has_value()) check_like(*c0, "c0", {B, d.n_cells}, x, "x");
  if (a0.has_value()) check_like(*a0, "a0", {B, G}, x, "x");
  return d;
}

// The initial state: h0 (B,R) and c0 (B,C) as given, zeros where absent.
std::pair<Tensor, Tensor> initial_state(const Tensor& x, const OptTensor& h0, const OptTensor& c0, const CellDims& d) {
  auto zeros = [&](int64_t n) {
    if (!plain_cpu(x) || c10::impl::dispatch_mode_enabled()) return at::zeros_symint({x.sym_size(1), n}, x.options());
    Tensor t = new_cpu({x.size(1), n}, x);  // no dispatch (new_cpu)
    std::memset(t.data_ptr(), 0, t.nbytes());
    return t;
  };
  return {h0.has_value() ? *h0 : zeros(d.rec_size), c0.has_value() ? *c0 : zeros(d.n_cells)};
}

// Whether x, w_ih and the `others` are plain CPU tensors: not the fake and functional tensors that torch.compile
// and opcheck trace with, which have no data for the CPU loops to read (they take ATen's path, which they know),
// and not under a Python dispatch mode, which sees the ops that this op calls (and ought to see the recurrence op
// whole, not the kernel's inner ATen calls).
bool plain_cpu_all(const Tensor& x, const Tensor& w_ih, std::initializer_list<OptTensor> others) {
  if (c10::impl::dispatch_mode_enabled()) return false;
  for (const OptTensor& t : others)
    if (t.has_value() && !plain_cpu(*t)) return false;
  return plain_cpu(x) && plain_cpu(w_ih);
}

// Whether the projection of x (T,B,D) onto w_ih's G gate rows is small enough for the CPU loops
// (cpu/projection_cpu.h), on plain CPU tensors.
bool small_cpu_projection(const Tensor& x, const Tensor& w_ih, std::initializer_list<OptTensor> others) {
  return plain_cpu_all(x, w_ih, others) && (x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble) &&
         x.size(0) * x.size(1) * x.size(2) * w_ih.size(0) <= cpu::kSmallProjection;
}

// Long sequences project their input a chunk of steps at a time (chunk_steps): without a gradient the
// recurrence consumes each chunk as it is made, so the (T,B,G) projection is never held at once. A fresh
// tensor of that size costs more in page faults than its product (T=1000 B=32 G=512, 65 MB: 27 of 40 ms
// here), and nn.LSTM pays it too. With a gradient the chunks are written into the whole A, by the same
// calls, so both paths see the same bits (the recurrence's choices do not depend on the number of steps).
// Plain CPU tensors only (what small_cpu_projection calls plain).
constexpr int64_t kProjectionChunkElems = int64_t(1) << 20;  // 4 MB of float32 per chunk
// Each chunk is one call of the recurrence, which packs U for its panel kernel (G*R elements): a chunk of at
// least this many rows x steps keeps that below a few per cent of the chunk's products.
constexpr int64_t kMinChunkRowSteps = 1024;

// Steps per chunk (the last chunk takes the remainder): T (no chunking) unless the projection is larger than
// two chunks.
int64_t chunk_steps(const Tensor& x, const Tensor& w_ih, std::initializer_list<OptTensor> others) {
  if (!plain_cpu_all(x, w_ih, others)) return x.size(0);
  const int64_t T = x.size(0), B = x.size(1), BG = B * w_ih.size(0);
  if (BG == 0 || T * BG <= 2 * kProjectionChunkElems) return T;
  return std::min(T, std::max({int64_t(1), kProjectionChunkElems / BG, (kMinChunkRowSteps + B - 1) / B}));
}

template <typename T>
const T* data_or_null(const Tensor& t) {
  return t.defined() ? t.const_data_ptr<T>() : nullptr;
}

// b_ih + b_hh, either, or none.
OptTensor summed_bias(const OptTensor& b_ih, const OptTensor& b_hh) {
  if (b_ih.has_value() && b_hh.has_value()) return *b_ih + *b_hh;
  return b_ih.has_value() ? b_ih : b_hh;
}

// The input projection's weights as project_steps takes them. On the CPU the bias is one more column of the
// weights, [w_ih | bias] (G, D+1), and x gets a column of ones: A = [x | 1] [w_ih | bias]^T is one product that
// writes A, where addmm (w_ih and the bias apart) first copies the bias into every row of A and then adds the
// product to it, one more pass over the (T,B,G) tensor (10 % of the forward at B=128 H=128 T=100). The copy of x
// costs D/G of that (1/16 at D=32, H=128). The copy of the weights costs (D+1)/(T*B) of that pass: calls of fewer
// rows x steps than D+1 (a step at a time, as in decoding; B=1 T=1 H=256: a 1 MB copy, 78 of 238 us) take addmm,
// as every device but the CPU does (its BLAS adds the bias in the product). Decided once for the whole x: the chunks
// of a long sequence (project_steps) all project the same way.
struct ProjectionWeights {
  Tensor w;        // (G, D) or, with bias_column, (G, D+1)
  OptTensor bias;  // (G,) for addmm, or none
  bool bias_column = false;
};

ProjectionWeights projection_weights(const Tensor& x, const Tensor& w_ih, const OptTensor& b_ih,
                                     const OptTensor& b_hh) {
  const OptTensor bias = summed_bias(b_ih, b_hh);
  // (symbolic sizes, under torch.compile's and torch.export's dynamic shapes, only trace shapes: either way will do)
  const bool many_rows = x.unsafeGetTensorImpl()->has_symbolic_sizes_strides() || x.size(0) * x.size(1) > x.size(2) + 1;
  if (bias.has_value() && x.is_cpu() && many_rows) return {at::cat({w_ih, bias->unsqueeze(1)}, 1), std::nullopt, true};
  return {w_ih, bias, false};
}

// Steps [t0, t0 + n) of the projection into `out`, a contiguous (n,B,G) tensor: x w_ih^T + bias.
void project_steps(const Tensor& x, const ProjectionWeights& pw, int64_t t0, int64_t n, Tensor out) {
  const int64_t B = x.size(1), D = x.size(2), G = pw.w.size(0);
  Tensor out2 = out.view({n * B, G});
  if (pw.bias_column) {
    Tensor x1 = at::empty({n, B, D + 1}, x.options());  // [x | 1]
    x1.narrow(2, 0, D).copy_(x.narrow(0, t0, n));
    x1.select(2, D).fill_(1);
    at::mm_out(out2, x1.view({n * B, D + 1}), pw.w.t());
    return;
  }
  const Tensor x2 = x.narrow(0, t0, n).reshape({n * B, D});
  if (pw.bias.has_value()) {
    at::addmm_out(out2, *pw.bias, x2, pw.w.t());
  } else {
    at::mm_out(out2, x2, pw.w.t());
  }
}

// The whole projection x w^T + bias as project_steps computes it, in functional ATen calls (no out=): the only
// kind that tracing tensors and torch.func's transforms (which unwrap their tensors below this op's autograd) can
// follow. The same products as project_steps, so the same bits; and, as its out= calls are, in x's dtype under
// autocast (whose dispatch keys stay on inside the op).
// Sizes are symbolic where the tensors' are (dynamic shapes).
Tensor projection(const Tensor& x, const ProjectionWeights& pw) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const c10::SymInt T = x.sym_size(0), B = x.sym_size(1), D = x.sym_size(2);
  if (pw.bias_column) {
    const Tensor x1 = at::cat({x, at::ones_symint({T, B, 1}, x.options())}, 2);  // [x | 1]
    return at::mm(x1.view_symint({T * B, D + 1}), pw.w.t()).view_symint({T, B, -1});
  }
  const Tensor x2 = x.reshape_symint({T * B, D});
  return (pw.bias.has_value() ? at::addmm(*pw.bias, x2, pw.w.t()) : at::mm(x2, pw.w.t())).view_symint({T, B, -1});
}

// Calls body(t0, n) for the chunks of `step` steps that cover [0, T); the last one takes the remainder.
template <typename F>
void for_each_time_chunk(int64_t T, int64_t step, F body) {
  const int64_t chunks = std::max<int64_t>(1, T / step);
  for (int64_t i = 0; i < chunks; ++i) body(i * step, i == chunks - 1 ? T - i * step : step);
}

// A = x w_ih^T + b_ih + b_hh: (T,B,G), contiguous; long sequences chunk by chunk (chunk_steps).
Tensor input_projection(const Tensor& x, const Tensor& w_ih, const OptTensor& b_ih, const OptTensor& b_hh) {
  if (!plain_cpu_all(x, w_ih, {b_ih, b_hh})) return projection(x, projection_weights(x, w_ih, b_ih, b_hh));
  const int64_t T = x.size(0), B = x.size(1), G = w_ih.size(0);
  if (small_cpu_projection(x, w_ih, {b_ih, b_hh})) {
    const int64_t D = x.size(2);
    const Tensor xc = x.contiguous(), w = w_ih.contiguous();
    const Tensor bi = b_ih.has_value() ? b_ih->contiguous() : Tensor();
    const Tensor bh = b_hh.has_value() ? b_hh->contiguous() : Tensor();
    Tensor A = new_cpu({T, B, G}, x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "projection_forward", [&] {
      cpu::projection_forward<scalar_t>(T * B, D, G, xc.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                        data_or_null<scalar_t>(bi), data_or_null<scalar_t>(bh),
                                        A.mutable_data_ptr<scalar_t>());
    });
    return A;
  }
  const ProjectionWeights pw = projection_weights(x, w_ih, b_ih, b_hh);
  const int64_t step = std::max<int64_t>(1, chunk_steps(x, w_ih, {b_ih, b_hh}));
  Tensor A = at::empty({T, B, G}, x.options());
  for_each_time_chunk(T, step, [&](int64_t t0, int64_t n) { project_steps(x, pw, t0, n, A.narrow(0, t0, n)); });
  return A;
}

// A[0] += a0, where there is a step 0: A (T,B,G) is the op's own projection (or a chunk of it that starts at 0).
void add_to_step0(const Tensor& A, const OptTensor& a0) {
  if (a0.has_value() && A.sym_size(0) != 0) A.select(0, 0).add_(*a0);
}

// dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, da0: the layer's gradients (undefined: not asked for, or an absent bias
// or a0).
using LayerGrads = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// The layer's gradients by the kernels, from what its forward saved: x (T,B,D), w_ih (G,D), w_hh (G,R), the initial
// state h0 (B,R), c0 (B,C) it ran from, y, act, s_all, len (undefined: no lengths), and the output gradients dy,
// dh_n, dc_n (undefined: zeros). `want`: which of the gradients dx, dw_ih, db_ih, db_hh, da0 (that of step 0's net
// input, dA[0]) to compute.
LayerGrads layer_gradients(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& h0, const Tensor& c0,
                           const Tensor& y, const Tensor& act, const Tensor& s_all, const Tensor& len, int64_t config,
                           const Tensor& dy, const Tensor& dh_n, const Tensor& dc_n, std::array<bool, 5> want) {
  auto [dA, dw_hh, dh0, dc0] = backward_with_config(config, dy, dh_n, dc_n, w_hh, h0, c0, y, act, s_all, len);
  const auto [want_x, want_w_ih, want_b_ih, want_b_hh, want_a0] = want;
  Tensor dx, dw_ih, db_ih, db_hh, da0;
  if (want_a0)  // (B,G), a tensor of its own; zeros without a step 0
    da0 = dA.sym_size(0) != 0 ? dA.select(0, 0).clone()
                              : at::zeros_symint({x.sym_size(1), w_ih.sym_size(0)}, x.options());
  if (small_cpu_projection(x, w_ih, {dA})) {
    const int64_t T = x.size(0), B = x.size(1), D = x.size(2), G = w_ih.size(0);
    const Tensor xc = x.contiguous(), w = w_ih.contiguous(), dAc = dA.contiguous();
    if (want_x) dx = new_cpu({T, B, D}, x);
    if (want_w_ih) dw_ih = new_cpu({G, D}, x);
    if (want_b_ih) db_ih = new_cpu({G}, x);
    if (want_b_hh) db_hh = new_cpu({G}, x);
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "projection_backward", [&] {
      auto out = [](Tensor& t) { return t.defined() ? t.mutable_data_ptr<scalar_t>() : nullptr; };
      scalar_t* db = want_b_ih ? out(db_ih) : out(db_hh);
      cpu::projection_backward<scalar_t>(T * B, D, G, xc.const_data_ptr<scalar_t>(), w.const_data_ptr<scalar_t>(),
                                         dAc.const_data_ptr<scalar_t>(), out(dw_ih), db, out(dx));
      // Two parameters must not share one gradient tensor (an in-place change of one would change both).
      if (want_b_ih && want_b_hh) std::copy(db, db + G, out(db_hh));
    });
  } else {  // sizes may be symbolic (dynamic shapes)
    const c10::SymInt T = x.sym_size(0), B = x.sym_size(1), D = x.sym_size(2), G = w_ih.sym_size(0);
    const Tensor dA2 = dA.reshape_symint({T * B, G});  // (T*B, G)
    if (want_x) dx = at::_unsafe_view_symint(dA2.mm(w_ih), {T, B, D});  // not a view: an output of layer_backward
    if (want_w_ih) dw_ih = dA2.t().mm(x.reshape_symint({T * B, D}));
    const Tensor db = (want_b_ih || want_b_hh) ? dA2.sum(0) : Tensor();
    // Two parameters must not share one gradient tensor (an in-place change of one would change both).
    if (want_b_ih) db_ih = db;
    if (want_b_hh) db_hh = want_b_ih ? db.clone() : db;
  }
  return {dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, da0};
}

// lstm_ext::layer's node: x (T,B,D), w_ih, w_hh, b_ih, b_hh, h0, c0, a0 -> y, h_n, c_n; one gradient per input, in
// that order (none for an absent bias, state or a0). It keeps the initial state the forward ran from (zeros it made
// for an absent one), and the biases for a second derivative. A plain backward computes here; one that records a
// graph (create_graph; torch.func.grad always does) calls lstm_ext::layer_backward, whose autograd records the
// second derivative at every level of a transform.
struct LayerBackward : OpBackward<12> {
  enum Saved { kX, kWih, kWhh, kBih, kBhh, kH0, kC0, kA0, kY, kAct, kSAll, kLengths };
  bool has_b_ih = false, has_b_hh = false, has_a0 = false;

  std::string name() const override { return "LayerBackward"; }
  void compiled_args(torch::dynamo::autograd::CompiledNodeArgs& args) const override {
    OpBackward<12>::compiled_args(args);
    args.collect(has_b_ih);
    args.collect(has_b_hh);
    args.collect(has_a0);
  }
  variable_list apply(variable_list&& grads) override;
};

// The node of lstm_ext::layer_backward's gradients: its inputs are the layer's inputs and the output gradients, in
// the order x, w_ih, w_hh, b_ih, b_hh, h0, c0, a0, dy, dh_n, dc_n. Its apply is lstm_ext::layer_double_backward
// (lstm_ext/ops.py): the reference layer differentiated twice (a per-step loop, run only where a second derivative
// is taken). The first-order gradients themselves stay the kernels'.
struct LayerDoubleBackward : OpBackward<12> {
  enum Saved { kX, kWih, kWhh, kBih, kBhh, kH0, kC0, kA0, kLengths, kDy, kDhn, kDcn };
  std::string name() const override { return "LayerDoubleBackward"; }
  variable_list apply(variable_list&& grads) override;
};

auto& layer_backward_op() {
  static auto op =
      c10::Dispatcher::singleton()
          .findSchemaOrThrow("lstm_ext::layer_backward", "")
          .typed<LayerGrads(const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                            const Tensor&, const Tensor&, const OptTensor&, const Tensor&, const Tensor&,
                            const Tensor&, const OptTensor&, bool, int64_t, c10::string_view, c10::string_view, bool,
                            const Tensor&, const Tensor&, const Tensor&, std::array<bool, 5>)>();
  return op;
}

OptTensor optional(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }

variable_list LayerBackward::apply(variable_list&& grads) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto saved = unpack_saved();
  const std::array<bool, 5> want = {should_compute_output(0), should_compute_output(1),
                                    has_b_ih && should_compute_output(3), has_b_hh && should_compute_output(4),
                                    has_a0 && should_compute_output(7)};
  LayerGrads out;
  if (!at::GradMode::is_enabled()) {
    out = layer_gradients(saved[kX], saved[kWih], saved[kWhh], saved[kH0], saved[kC0], saved[kY], saved[kAct],
                          saved[kSAll], saved[kLengths], config, grads[0], grads[1], grads[2], want);
  } else {
    auto or_zeros = [](const Tensor& g, const Tensor& like) { return g.defined() ? g : at::zeros_like(like); };
    const auto [forget_gate, block_size, feedback, squash, truncate] = config_args(config);
    out = layer_backward_op().call(saved[kX], saved[kWih], saved[kWhh], optional(saved[kBih]),
                                   optional(saved[kBhh]), saved[kH0], saved[kC0], optional(saved[kA0]), saved[kY],
                                   saved[kAct],
                                   saved[kSAll], optional(saved[kLengths]), forget_gate, block_size, feedback, squash,
                                   truncate, or_zeros(grads[0], saved[kY]), or_zeros(grads[1], saved[kH0]),
                                   or_zeros(grads[2], saved[kC0]), want);
  }
  auto [dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, da0] = std::move(out);
  return {dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, da0};
}

// lstm_ext::layer_backward below autograd.
LayerGrads layer_backward_kernel(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                                 const OptTensor& b_hh, const Tensor& h0, const Tensor& c0, const OptTensor& a0,
                                 const Tensor& y, const Tensor& act, const Tensor& s_all, const OptTensor& lengths,
                                 bool forget_gate, int64_t block_size, c10::string_view feedback,
                                 c10::string_view squash, bool truncate, const Tensor& dy, const Tensor& dh_n,
                                 const Tensor& dc_n, std::array<bool, 5> want) {
  want[2] = want[2] && b_ih.has_value();
  want[3] = want[3] && b_hh.has_value();
  want[4] = want[4] && a0.has_value();
  return layer_gradients(x, w_ih, w_hh, h0, c0, y, act, s_all, lengths.value_or(Tensor()),
                         config_code(forget_gate, block_size, feedback, squash, truncate), dy, dh_n, dc_n, want);
}

// lstm_ext::layer_backward's autograd: the gradients below it, and, where the layer's inputs or the output gradients
// require a gradient, LayerDoubleBackward on them (torch's Error node for the truncated gradient).
LayerGrads layer_backward_autograd(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const OptTensor& b_ih,
                                   const OptTensor& b_hh, const Tensor& h0, const Tensor& c0, const OptTensor& a0,
                                   const Tensor& y, const Tensor& act, const Tensor& s_all, const OptTensor& lengths,
                                   bool forget_gate, int64_t block_size, c10::string_view feedback,
                                   c10::string_view squash, bool truncate, const Tensor& dy, const Tensor& dh_n,
                                   const Tensor& dc_n, std::array<bool, 5> want) {
  const Tensor bi = b_ih.value_or(Tensor()), bh = b_hh.value_or(Tensor()), a = a0.value_or(Tensor());
  check_no_forward_grad("lstm_ext.layer_backward", {&x, &w_ih, &w_hh, &bi, &bh, &h0, &c0, &a, &dy, &dh_n, &dc_n});
  LayerGrads out;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    out = layer_backward_op().call(x, w_ih, w_hh, b_ih, b_hh, h0, c0, a0, y, act, s_all, lengths, forget_gate,
                                   block_size, feedback, squash, truncate, dy, dh_n, dc_n, want);
  }
  if (!torch::autograd::compute_requires_grad(x, w_ih, w_hh, bi, bh, h0, c0, a, dy, dh_n, dc_n)) return out;
  auto edges = torch::autograd::collect_next_edges(x, w_ih, w_hh, bi, bh, h0, c0, a, dy, dh_n, dc_n);
  auto attach = [&](const auto& node) {  // the node of the eight gradients
    std::apply([&](const auto&... g) { (torch::autograd::set_history(g, node), ...); }, out);
  };
  if (truncate) {
    // The 1997 rule's gradient is not the derivative of the forward, and the reference's (a stop-gradient on
    // r_{t-1}) cannot be differentiated into its derivative: a second derivative raises.
    attach(make_node<torch::autograd::Error>(
        "lstm_ext: the truncated gradient (truncate=True, the 1997 learning rule) is differentiable once; double "
        "backward (a gradient of its gradient) is not supported",
        std::move(edges)));
    return out;
  }
  auto node = make_node<LayerDoubleBackward>();
  node->set_next_edges(std::move(edges));
  attach(node);
  node->save_all({x, w_ih, w_hh, bi, bh, h0, c0, a, lengths.value_or(Tensor()), dy, dh_n, dc_n});  // Saved's order
  node->config = config_code(forget_gate, block_size, feedback, squash, truncate);
  return out;
}

variable_list LayerDoubleBackward::apply(variable_list&& grads) {
  std::lock_guard<std::mutex> lock(mutex_);
  const auto saved = unpack_saved();
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("lstm_ext::layer_double_backward", "")
                       .typed<std::vector<Tensor>(
                           const Tensor&, const Tensor&, const Tensor&, const OptTensor&, const OptTensor&,
                           const Tensor&, const Tensor&, const OptTensor&, const OptTensor&, bool, int64_t,
                           c10::string_view, c10::string_view, bool, const Tensor&, const Tensor&, const Tensor&,
                           const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&, const OptTensor&,
                           const OptTensor&, const OptTensor&, const OptTensor&)>();
  const auto [forget_gate, block_size, feedback, squash, truncate] = config_args(config);
  std::vector<Tensor> out = op.call(
      saved[kX], saved[kWih], saved[kWhh], optional(saved[kBih]), optional(saved[kBhh]), saved[kH0], saved[kC0],
      optional(saved[kA0]), optional(saved[kLengths]), forget_gate, block_size, feedback, squash, truncate,
      saved[kDy], saved[kDhn], saved[kDcn], optional(grads[0]), optional(grads[1]), optional(grads[2]),
      optional(grads[3]), optional(grads[4]), optional(grads[5]), optional(grads[6]), optional(grads[7]));
  return variable_list(out.begin(), out.end());
}

// Without a gradient to record: the projection and lstm_ext::recurrence, which keeps no workspace. A long
// sequence of plain CPU tensors goes chunk by chunk (chunk_steps), the state carried from one chunk to the next;
// the chunks' lengths are the rows' lengths within them. The CPU kernel writes each chunk's steps of y in place
// (recurrence_inference_cpu_into): a copy from a y per chunk took 4-5 % of the forward at B=32-128 H=256 T=100.
std::tuple<Tensor, Tensor, Tensor> layer_no_grad(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                                                 const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& h0_in,
                                                 const OptTensor& c0_in, const OptTensor& lengths, bool forget_gate,
                                                 int64_t block_size, c10::string_view feedback,
                                                 c10::string_view squash, bool truncate, const OptTensor& a0) {
  const CellDims d = check_layer_args(x, w_ih, w_hh, b_ih, b_hh, h0_in, c0_in, a0, forget_gate, block_size, feedback,
                                      squash, truncate);
  const auto [h0, c0] = initial_state(x, h0_in, c0_in, d);
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("lstm_ext::recurrence", "")
                       .typed<std::tuple<Tensor, Tensor, Tensor>(const Tensor&, const Tensor&, const Tensor&,
                                                                 const Tensor&, const OptTensor&, bool, int64_t,
                                                                 c10::string_view, c10::string_view, bool)>();
  const int64_t T = x.size(0), B = x.size(1), G = w_ih.size(0);
  const int64_t step =
      small_cpu_projection(x, w_ih, {b_ih, b_hh}) ? T : chunk_steps(x, w_ih, {b_ih, b_hh, w_hh, h0, c0});
  if (step >= T) {
    const Tensor A = input_projection(x, w_ih, b_ih, b_hh);
    add_to_step0(A, a0);
    return op.call(A, w_hh, h0, c0, lengths, forget_gate, block_size, feedback, squash, truncate);
  }
  if (lengths.has_value()) check_lengths(*lengths, T, B, x);  // before the chunks see their clamped parts
  const ProjectionWeights pw = projection_weights(x, w_ih, b_ih, b_hh);
  Tensor y = at::empty({T, B, c0.size(1)}, x.options());
  Tensor A = at::empty({std::min(T, 2 * step - 1), B, G}, x.options());  // the largest chunk
  Tensor h = h0, c = c0;
  for_each_time_chunk(T, step, [&](int64_t t0, int64_t n) {
    Tensor a = A.narrow(0, 0, n);
    project_steps(x, pw, t0, n, a);
    if (t0 == 0) add_to_step0(a, a0);
    const OptTensor len = lengths.has_value() ? OptTensor((*lengths - t0).clamp(0, n)) : std::nullopt;
    // plain CPU tensors (chunk_steps): the CPU kernel writes the chunk's steps of y in place
    Tensor y_c = y.narrow(0, t0, n);
    std::tie(h, c) =
        recurrence_inference_cpu_into(a, w_hh, h, c, len, forget_gate, block_size, feedback, squash, truncate, y_c);
  });
  return {y, h, c};
}

std::tuple<Tensor, Tensor, Tensor> layer_autograd(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh,
                                                  const OptTensor& b_ih, const OptTensor& b_hh, const OptTensor& h0_in,
                                                  const OptTensor& c0_in, const OptTensor& lengths, bool forget_gate,
                                                  int64_t block_size, c10::string_view feedback,
                                                  c10::string_view squash, bool truncate, const OptTensor& a0) {
  check_no_forward_grad("lstm_ext.layer", {&x, &w_ih, &w_hh});
  for (const OptTensor* t : {&b_ih, &b_hh, &h0_in, &c0_in, &a0})
    if (t->has_value()) check_no_forward_grad("lstm_ext.layer", {&**t});
  auto requires_grad = [](const OptTensor& t) { return t.has_value() && t->requires_grad(); };
  const bool needs_grad = at::GradMode::is_enabled() &&
                          (x.requires_grad() || w_ih.requires_grad() || w_hh.requires_grad() || requires_grad(h0_in) ||
                           requires_grad(c0_in) || requires_grad(b_ih) || requires_grad(b_hh) || requires_grad(a0));
  if (!needs_grad) {
    at::AutoDispatchBelowADInplaceOrView guard;
    return layer_no_grad(x, w_ih, w_hh, b_ih, b_hh, h0_in, c0_in, lengths, forget_gate, block_size, feedback, squash,
                         truncate, a0);
  }
  const CellDims d = check_layer_args(x, w_ih, w_hh, b_ih, b_hh, h0_in, c0_in, a0, forget_gate, block_size, feedback,
                                      squash, truncate);
  Tensor h0, c0;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    std::tie(h0, c0) = initial_state(x, h0_in, c0_in, d);
  }
  Tensor y, h_n, c_n, act, s_all;
  {
    at::AutoDispatchBelowADInplaceOrView guard;
    Tensor A = input_projection(x, w_ih, b_ih, b_hh);
    add_to_step0(A, a0);
    // A is this op's own temporary: on the CPU the kernel writes the activations over it (one (T,B,G) tensor
    // fewer to allocate and fault in; B=128 H=256 T=100: 52 MB).
    std::tie(y, h_n, c_n, act, s_all) =
        plain_cpu_all(x, w_ih, {w_hh, h0, c0})
            ? recurrence_forward_cpu_over_A(A, w_hh, h0, c0, lengths, forget_gate, block_size, feedback, squash,
                                            truncate)
            : call_forward(A, w_hh, h0, c0, lengths, forget_gate, block_size, feedback, squash, truncate);
  }
  auto node = make_node<LayerBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(x, w_ih, w_hh, b_ih, b_hh, h0_in, c0_in, a0));
  for (const Tensor& out : {y, h_n, c_n}) torch::autograd::set_history(out, node);
  node->save_all({x, w_ih, w_hh, b_ih.value_or(Tensor()), b_hh.value_or(Tensor()), h0, c0, a0.value_or(Tensor()), y,
                  act, s_all, lengths.value_or(Tensor())},
                 LayerBackward::kY);  // Saved's order
  node->config = config_code(forget_gate, block_size, feedback, squash, truncate);
  node->has_b_ih = b_ih.has_value();
  node->has_b_hh = b_hh.has_value();
  node->has_a0 = a0.has_value();
  return {y, h_n, c_n};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  m.def(
      "layer(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor? h0, Tensor? c0, "
      "Tensor? lengths, bool forget_gate, int block_size, str feedback, str squash, bool truncate, "
      "Tensor? a0=None) -> (Tensor y, Tensor h_n, Tensor c_n)");
}

TORCH_LIBRARY_FRAGMENT(lstm_ext, m) {
  // The gradients of lstm_ext::layer (dx, dw_ih, dw_hh, db_ih, db_hh, dh0, dc0, da0; undefined where `want` (dx,
  // dw_ih, db_ih, db_hh, da0) says no or a bias or a0 is absent) from what its forward saved and the output
  // gradients: what a backward that records a graph calls, differentiable once more (LayerDoubleBackward).
  m.def(
      "layer_backward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor h0, Tensor c0, "
      "Tensor? a0, Tensor y, Tensor act, Tensor s_all, Tensor? lengths, bool forget_gate, int block_size, "
      "str feedback, str squash, bool truncate, Tensor dy, Tensor dh_n, Tensor dc_n, bool[5] want) -> (Tensor dx, "
      "Tensor dw_ih, Tensor dw_hh, Tensor db_ih, Tensor db_hh, Tensor dh0, Tensor dc0, Tensor da0)");
  // The second derivative of lstm_ext::layer (LayerDoubleBackward): the gradients of <dx, gg_x> + <dw_ih, gg_w_ih> +
  // ... + <da0, gg_a0> with respect to x, w_ih, w_hh, b_ih, b_hh, h0, c0, a0, dy, dh_n, dc_n (in that order; an
  // empty tensor for an absent bias or a0), where dx .. da0 are the layer's gradients under the output gradients dy,
  // dh_n, dc_n. Implemented in Python (lstm_ext/ops.py) on the reference.
  m.def(
      "layer_double_backward(Tensor x, Tensor w_ih, Tensor w_hh, Tensor? b_ih, Tensor? b_hh, Tensor h0, Tensor c0, "
      "Tensor? a0, Tensor? lengths, bool forget_gate, int block_size, str feedback, str squash, bool truncate, "
      "Tensor dy, Tensor dh_n, Tensor dc_n, Tensor? gg_x, Tensor? gg_w_ih, Tensor? gg_w_hh, Tensor? gg_b_ih, "
      "Tensor? gg_b_hh, Tensor? gg_h0, Tensor? gg_c0, Tensor? gg_a0) -> Tensor[]");
}

TORCH_LIBRARY_IMPL(lstm_ext, Autograd, m) {
  m.impl("layer", &layer_autograd);
  m.impl("layer_backward", &layer_backward_autograd);
}

TORCH_LIBRARY_IMPL(lstm_ext, CompositeExplicitAutograd, m) {
  m.impl("layer", &layer_no_grad);
  m.impl("layer_backward", &layer_backward_kernel);
}

}  // namespace lstm_ext
