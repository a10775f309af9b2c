// The custom ops: schemas, argument checks and the CPU implementations. The CUDA implementations are
// registered in cuda/ops_cuda.cpp when the extension is built with CUDA.
#include "ops.h"

#include <Python.h>

#include <ATen/Parallel.h>

#if defined(_OPENMP)
#include <omp.h>
#endif

#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cpu/recurrence_cpu.h"

namespace lstm_ext {

namespace {

std::string shape_str(c10::SymIntArrayRef s) {
  std::ostringstream o;
  o << "(";
  for (size_t i = 0; i < s.size(); ++i) o << (i ? ", " : "") << s[i];
  o << (s.size() == 1 ? ",)" : ")");
  return o.str();
}

}  // namespace

CellDims cell_dims(int64_t n_cells, bool forget_gate, int64_t block_size, c10::string_view feedback,
                   c10::string_view squash, bool truncate) {
  TORCH_CHECK(block_size >= 1, "lstm_ext: block_size must be >= 1, got ", block_size);
  TORCH_CHECK(feedback == "cells" || feedback == "all",
              "lstm_ext: feedback must be \"cells\" or \"all\", got \"", feedback, "\"");
  Squash q;
  if (squash == "tanh") {
    q = Squash::Tanh;
  } else if (squash == "paper") {
    q = Squash::Paper;
  } else if (squash == "sigmoid_identity") {
    q = Squash::SigmoidIdentity;
  } else {
    TORCH_CHECK(false, "lstm_ext: squash must be \"tanh\", \"paper\" or \"sigmoid_identity\", got \"", squash, "\"");
  }
  TORCH_CHECK(n_cells % block_size == 0, "lstm_ext: the number of cells (", n_cells,
              ") must be a multiple of block_size (", block_size, ")");
  return make_cell_dims(int(n_cells), int(block_size), forget_gate, feedback == "all", truncate, q);
}

void check_like(const at::Tensor& t, const char* name, c10::SymIntArrayRef shape, const at::Tensor& ref,
                const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), "lstm_ext: ", name, " must be on ", ref_name, "'s device ", ref.device(),
              ", got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "lstm_ext: ", name, " must have ", ref_name, "'s dtype ",
              ref.scalar_type(), ", got ", t.scalar_type());
  TORCH_CHECK(t.sym_sizes() == shape, "lstm_ext: ", name, " must have shape ", shape_str(shape), ", got ",
              shape_str(t.sym_sizes()));
}

void check_lengths(const at::Tensor& l, int64_t T, int64_t B, const at::Tensor& ref) {
  TORCH_CHECK(l.scalar_type() == at::kLong, "lstm_ext: lengths must be int64, got ", l.scalar_type());
  TORCH_CHECK(l.dim() == 1 && l.size(0) == B, "lstm_ext: lengths must have shape (", B, ",), got ",
              shape_str(l.sym_sizes()));
  TORCH_CHECK(l.device().is_cpu() || l.device() == ref.device(),
              "lstm_ext: lengths must be on the CPU or on A's device");
  if (B > 0) {
    const auto lo = l.min().item<int64_t>(), hi = l.max().item<int64_t>();
    TORCH_CHECK(lo >= 0 && hi <= T, "lstm_ext: lengths must lie in [0, T] = [0, ", T, "], got values in [", lo, ", ",
                hi, "]");
  }
}

CellDims check_forward_args(const at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
                            const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size,
                            c10::string_view feedback, c10::string_view squash, bool truncate) {
  TORCH_CHECK(A.dim() == 3, "lstm_ext: A must be 3-D (T, B, G), got ", A.dim(), "-D");
  TORCH_CHECK(at::isFloatingType(A.scalar_type()), "lstm_ext: A must be a floating-point tensor, got ",
              A.scalar_type());
  TORCH_CHECK(s0.dim() == 2, "lstm_ext: s0 must be 2-D (B, C), got ", s0.dim(), "-D");
  const int64_t T = A.size(0), B = A.size(1), G = A.size(2), C = s0.size(1);
  CellDims d = cell_dims(C, forget_gate, block_size, feedback, squash, truncate);
  TORCH_CHECK(G == d.gate_rows, "lstm_ext: A must have G = ", d.gate_rows, " gate rows for ", C,
              " cells in blocks of ", block_size, (forget_gate ? " with" : " without"), " a forget gate, got ", G);
  check_like(U, "U", {G, d.rec_size}, A);
  check_like(r0, "r0", {B, d.rec_size}, A);
  check_like(s0, "s0", {B, C}, A);
  if (lengths.has_value()) check_lengths(*lengths, T, B, A);
  TORCH_CHECK(T <= INT32_MAX && B * std::max<int64_t>(G, 1) <= INT32_MAX, "lstm_ext: sizes too large");
  return d;
}

namespace {

// The CPU kernels' threads: as many as torch's intra-op setting, each running its chunk of batch rows for
// the whole sequence. With an OpenMP torch they are torch's own pool (at::parallel_for; the extension is
// built with -fopenmp and links the libgomp.so.1 torch has loaded): a second set of threads would compete
// for the cores with the pool's workers, which spin for milliseconds after each of torch's parallel ops
// (the input projection just before the forward) and made the B=32 H=128 forward 2x slower.
cpu::Parallel torch_parallel() {
  cpu::Parallel par;
  par.threads = at::get_num_threads();
#if AT_PARALLEL_OPENMP && defined(_OPENMP)
  par.for_each = [](int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
    at::parallel_for(0, n, grain, body);
  };
  par.team = [](int n, const std::function<void(int, int)>& body) {
#pragma omp parallel num_threads(n)
    body(omp_get_thread_num(), omp_get_num_threads());
  };
#else
  par.for_each = [](int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& body) {
    std::vector<std::thread> workers;
    for (int64_t b = grain; b < n; b += grain) workers.emplace_back(body, b, std::min(n, b + grain));
    body(0, std::min(n, grain));
    for (auto& w : workers) w.join();
  };
  par.team = [](int n, const std::function<void(int, int)>& body) {
    std::vector<std::thread> workers;
    for (int tid = 1; tid < n; ++tid) workers.emplace_back(body, tid, n);
    body(0, n);
    for (auto& w : workers) w.join();
  };
#endif
  return par;
}

// The forward on the CPU; with keep = false (inference) act and s_all are not kept and come back undefined.
// over_A (with keep): act is written over A, which the caller gives up (recurrence_forward_cpu_over_A).
// y_out: where y goes (a contiguous (T,B,C) tensor of A's dtype, recurrence_inference_cpu_into), else a new tensor.
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> run_forward_cpu(
    const at::Tensor& A_in, const at::Tensor& U_in, const at::Tensor& r0_in, const at::Tensor& s0_in,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate, bool keep, bool over_A = false, const at::Tensor& y_out = {}) {
  const CellDims d = check_forward_args(A_in, U_in, r0_in, s0_in, lengths, forget_gate, block_size, feedback, squash,
                                        truncate);
  TORCH_CHECK(A_in.scalar_type() == at::kFloat || A_in.scalar_type() == at::kDouble,
              "lstm_ext: the CPU kernel takes float32 or float64, got ", A_in.scalar_type());
  const at::Tensor A = A_in.contiguous(), U = U_in.contiguous(), r0 = r0_in.contiguous(), s0 = s0_in.contiguous();
  const int64_t T = A.size(0), B = A.size(1), C = d.n_cells;
  at::Tensor len = lengths.has_value() ? lengths->to(at::kCPU).contiguous() : at::Tensor();
  at::Tensor y = y_out.defined() ? y_out : new_cpu({T, B, C}, A);
  at::Tensor r_T = new_cpu(r0.sizes(), A), s_T = new_cpu(s0.sizes(), A);
  at::Tensor act = over_A ? A : keep ? new_cpu(A.sizes(), A) : at::Tensor();
  at::Tensor s_all = keep ? new_cpu({T, B, C}, A) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(A.scalar_type(), "recurrence_forward_cpu", [&] {
    cpu::ForwardArgs<scalar_t> p{d,
                                 T,
                                 B,
                                 A.const_data_ptr<scalar_t>(),
                                 U.const_data_ptr<scalar_t>(),
                                 r0.const_data_ptr<scalar_t>(),
                                 s0.const_data_ptr<scalar_t>(),
                                 len.defined() ? len.const_data_ptr<int64_t>() : nullptr,
                                 y.mutable_data_ptr<scalar_t>(),
                                 r_T.mutable_data_ptr<scalar_t>(),
                                 s_T.mutable_data_ptr<scalar_t>(),
                                 keep ? act.mutable_data_ptr<scalar_t>() : nullptr,
                                 keep ? s_all.mutable_data_ptr<scalar_t>() : nullptr};
    cpu::recurrence_forward(p, torch_parallel());
  });
  return {y, r_T, s_T, act, s_all};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrence_forward_cpu(
    const at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate) {
  return run_forward_cpu(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate, true);
}

// lstm_ext::recurrence below autograd (no gradient needed): the forward without its workspace, so that
// inference holds y and the final state only, as nn.LSTM does, not the (T, B, G) activations.
std::tuple<at::Tensor, at::Tensor, at::Tensor> recurrence_inference_cpu(
    const at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate) {
  auto [y, r_T, s_T, act, s_all] =
      run_forward_cpu(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate, false);
  return {y, r_T, s_T};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> recurrence_inference_cpu_into(
    const at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate, at::Tensor& y) {
  TORCH_INTERNAL_ASSERT(y.is_cpu() && y.is_contiguous() && y.scalar_type() == A.scalar_type() && y.dim() == 3 &&
                            y.size(0) == A.size(0) && y.size(1) == A.size(1),
                        "lstm_ext: y must be a contiguous CPU (T, B, C) tensor of A's dtype");
  auto [y_, r_T, s_T, act, s_all] =
      run_forward_cpu(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate, false, false, y);
  TORCH_INTERNAL_ASSERT(y_.size(2) == y.size(2));
  return {r_T, s_T};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrence_backward_cpu(
    const at::Tensor& dy_in, const at::Tensor& dr_T_in, const at::Tensor& ds_T_in, const at::Tensor& U_in,
    const at::Tensor& r0_in, const at::Tensor& s0_in, const at::Tensor& y_in, const at::Tensor& act_in,
    const at::Tensor& s_all_in, const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size,
    c10::string_view feedback, c10::string_view squash, bool truncate) {
  const CellDims d = check_forward_args(act_in, U_in, r0_in, s0_in, lengths, forget_gate, block_size, feedback,
                                        squash, truncate);
  TORCH_CHECK(act_in.scalar_type() == at::kFloat || act_in.scalar_type() == at::kDouble,
              "lstm_ext: the CPU kernel takes float32 or float64, got ", act_in.scalar_type());
  const int64_t T = act_in.size(0), B = act_in.size(1), C = d.n_cells;
  // The output gradients: undefined (from the autograd nodes only) means zeros. dy is read through its strides (the
  // gradient of y.sum() is one value expanded: a copy of it cost 1.6 us of a 60 us call at B=1 H=8).
  auto grad_in = [&](const at::Tensor& g, const char* name, c10::SymIntArrayRef shape, bool strided) {
    if (!g.defined()) return g;
    check_like(g, name, shape, act_in);
    return strided ? g : g.contiguous();
  };
  const at::Tensor dy = grad_in(dy_in, "dy", {T, B, C}, true);
  const at::Tensor dr_T = grad_in(dr_T_in, "dr_T", {B, d.rec_size}, false);
  const at::Tensor ds_T = grad_in(ds_T_in, "ds_T", {B, C}, false);
  check_like(y_in, "y", {T, B, C}, act_in);
  check_like(s_all_in, "s_all", {T, B, C}, act_in);
  const at::Tensor U = U_in.contiguous(), r0 = r0_in.contiguous(), s0 = s0_in.contiguous(), y = y_in.contiguous(),
                   act = act_in.contiguous(), s_all = s_all_in.contiguous();
  at::Tensor len = lengths.has_value() ? lengths->to(at::kCPU).contiguous() : at::Tensor();
  at::Tensor dA = new_cpu(act.sizes(), act), dU = new_cpu(U.sizes(), act), dr0 = new_cpu(r0.sizes(), act),
             ds0 = new_cpu(s0.sizes(), act);
  AT_DISPATCH_FLOATING_TYPES(act.scalar_type(), "recurrence_backward_cpu", [&] {
    auto in = [](const at::Tensor& t) { return t.defined() ? t.const_data_ptr<scalar_t>() : nullptr; };
    cpu::BackwardArgs<scalar_t> p{d,
                                  T,
                                  B,
                                  in(dy),
                                  in(dr_T),
                                  in(ds_T),
                                  U.const_data_ptr<scalar_t>(),
                                  r0.const_data_ptr<scalar_t>(),
                                  s0.const_data_ptr<scalar_t>(),
                                  y.const_data_ptr<scalar_t>(),
                                  act.const_data_ptr<scalar_t>(),
                                  s_all.const_data_ptr<scalar_t>(),
                                  len.defined() ? len.const_data_ptr<int64_t>() : nullptr,
                                  dA.mutable_data_ptr<scalar_t>(),
                                  dU.mutable_data_ptr<scalar_t>(),
                                  dr0.mutable_data_ptr<scalar_t>(),
                                  ds0.mutable_data_ptr<scalar_t>()};
    if (dy.defined()) p.dy_strides = dy.strides().data();
    cpu::recurrence_backward(p, torch_parallel());
  });
  return {dA, dU, dr0, ds0};
}

namespace {

bool have_blas() { return cpu::have_blas(); }

std::string cpu_panel_kernel() { return cpu::panel_kernel(); }

// Whether this CPU runs the CPU kernel as it was compiled (AVX2+FMA builds need both).
bool cpu_kernel_supported() {
#if defined(LSTM_EXT_CPU_AVX2)
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
  return true;
#endif
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrence_forward_cpu_over_A(
    at::Tensor& A, const at::Tensor& U, const at::Tensor& r0, const at::Tensor& s0,
    const std::optional<at::Tensor>& lengths, bool forget_gate, int64_t block_size, c10::string_view feedback,
    c10::string_view squash, bool truncate) {
  TORCH_INTERNAL_ASSERT(A.is_cpu() && A.is_contiguous(), "lstm_ext: act over A needs a contiguous CPU A");
  return run_forward_cpu(A, U, r0, s0, lengths, forget_gate, block_size, feedback, squash, truncate, true, true);
}

TORCH_LIBRARY(lstm_ext, m) {
  // A (T,B,G), U (G,R), r0 (B,R), s0 (B,C), lengths (B,) int64 ->
  //   y (T,B,C), r_T (B,R), s_T (B,C), act (T,B,G) and s_all (T,B,C) (kept for the backward)
  m.def(
      "recurrence_forward(Tensor A, Tensor U, Tensor r0, Tensor s0, Tensor? lengths, bool forget_gate, "
      "int block_size, str feedback, str squash, bool truncate) "
      "-> (Tensor y, Tensor r_T, Tensor s_T, Tensor act, Tensor s_all)");
  // gradients on (y, r_T, s_T) + what the forward returned -> gradients on (A, U, r0, s0)
  m.def(
      "recurrence_backward(Tensor dy, Tensor dr_T, Tensor ds_T, Tensor U, Tensor r0, Tensor s0, Tensor y, "
      "Tensor act, Tensor s_all, Tensor? lengths, bool forget_gate, int block_size, str feedback, str squash, "
      "bool truncate) -> (Tensor dA, Tensor dU, Tensor dr0, Tensor ds0)");
  m.def("have_blas() -> bool", &have_blas);
  m.def("cpu_kernel_supported() -> bool", &cpu_kernel_supported);
  m.def("cpu_panel_kernel() -> str", &cpu_panel_kernel);
}

TORCH_LIBRARY_IMPL(lstm_ext, CPU, m) {
  m.impl("recurrence_forward", &recurrence_forward_cpu);
  m.impl("recurrence_backward", &recurrence_backward_cpu);
  m.impl("recurrence", &recurrence_inference_cpu);
}

}  // namespace lstm_ext

// The Python module lstm_ext._C: empty; importing it runs the registrations above.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
