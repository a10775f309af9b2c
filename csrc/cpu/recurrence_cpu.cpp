// The fused CPU recurrence. One call runs all T steps: per step one product with U (hand-written
// loops for the paper's tiny nets; for large ones the panel kernel of panel_gemm.h, AVX2 or AVX-512, in
// float32, BLAS otherwise), then the cell math of cell.h per block. Threads take chunks of the batch rows,
// or, in the forward of wide layers, shares of the cells (forward_cell_split).
#include "recurrence_cpu.h"

#include "panel_gemm.h"
#include "simd_vec.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <type_traits>
#include <utility>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

// BLAS as torch's own libraries export it (MKL on x86 builds). Weak: where absent, hand loops run.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const float* alpha, const float* a, const int* lda, const float* b, const int* ldb,
            const float* beta, float* c, const int* ldc) __attribute__((weak));
void dgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k,
            const double* alpha, const double* a, const int* lda, const double* b, const int* ldb,
            const double* beta, double* c, const int* ldc) __attribute__((weak));
int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));
}

namespace lstm_ext::cpu {
namespace {

// Products of at least this many multiply-adds go to BLAS; smaller ones run the hand loops, which
// have no call overhead (the paper's nets: B=1, G=32, R=8 is 256 per step).
constexpr int64_t kBlasMinWork = 65536;
// Below this many multiply-adds per product BLAS runs on the calling thread: waking a thread team
// for a few microseconds of work costs more than it saves, and hurts badly on a busy machine.
constexpr int64_t kBlasParallelMinWork = int64_t(1) << 21;

// While alive, BLAS (MKL) calls of this thread use one thread if `single` (no-op without MKL).
class BlasSingleThread {
 public:
  explicit BlasSingleThread(bool single) : active_(single && MKL_Set_Num_Threads_Local != nullptr) {
    if (active_) previous_ = MKL_Set_Num_Threads_Local(1);
  }
  ~BlasSingleThread() {
    if (active_) MKL_Set_Num_Threads_Local(previous_);
  }
  BlasSingleThread(const BlasSingleThread&) = delete;
  BlasSingleThread& operator=(const BlasSingleThread&) = delete;

 private:
  bool active_;
  int previous_ = 0;
};

template <typename T>
bool blas_available() {
  if constexpr (std::is_same_v<T, float>) return sgemm_ != nullptr;
  return dgemm_ != nullptr;
}

// Row-major C (M x N) = alpha * op(A) * op(B) + beta * C through column-major BLAS (C^T = op(B)^T op(A)^T).
template <typename T>
void blas_gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, T alpha, const T* A,
               int64_t lda, const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  const char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
  const int m = int(N), n = int(M), k = int(K), la = int(ldb), lb = int(lda), lc = int(ldc);
  if constexpr (std::is_same_v<T, float>) {
    sgemm_(&tb, &ta, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
  } else {
    dgemm_(&tb, &ta, &m, &n, &k, &alpha, B, &la, A, &lb, &beta, C, &lc);
  }
}

bool use_blas(int64_t work) { return work >= kBlasMinWork; }

// The panel kernel (and the forward's cell split) pack U once per call, and the hand loops copy it; that costs as
// much as some rows x steps of the products. A short call (fewer than kShortCallRowSteps batch rows x steps, and
// fewer than kShortCallSteps steps: a step at a time, as in decoding) packs nothing: its rows run as one chunk, with
// BLAS on the calling thread (so that its bits do not depend on the number of threads either), or the hand loops
// where U is small enough (kShortCallLoopMaxU elements) for its copy to cost less than a call of BLAS. Forward, 2
// cores, us, panels -> short: B=1 T=1 H=128 18 -> 10, H=256 70 -> 21; B=4 T=4 H=256 205 -> 102; B=16 T=1 H=256
// 161 -> 100; the panels are the faster from B=1 T=16 (H=128 64 against 80) and B=16 T=4 (H=256 287 against 369).
// Calls of as few row-steps whose products are worth two threads (kShortCallMaxWork multiply-adds a step or more)
// pack nothing either: one chunk of rows, each step's product in column blocks (kColumnBlock) shared by the threads,
// each block a BLAS call on its own thread (StepProduct's BlasColumns). Packing U for the threads' row chunks (or for
// the forward's cell split) read and wrote all of U once more and each thread then read all of it, for a single
// step's product; on one thread, a product of a few rows streams all of U through one core. The blocks are the same
// whatever the number of threads, and so are the bits (BLAS's own threads split a product of few rows along K, whose
// sums then depend on the number of threads). The recurrence, 2 threads, T=1, us, before -> after: B=16 H=512
// (the 2000 cell: cell split) 838 -> 244, B=1 H=512 (short) 141 -> 56, B=1 H=256 23 -> 17.
// A layer run in chunks of steps (csrc/layer.cpp) has chunks of at least 1024 row-steps, so that this choice, the
// only one that depends on the number of steps, is the same for each chunk as for the whole.
constexpr int64_t kShortCallRowSteps = 32;
constexpr int64_t kShortCallSteps = 16;
constexpr int64_t kShortCallLoopMaxU = 4096;
constexpr int64_t kShortCallMaxWork = int64_t(1) << 18;  // multiply-adds of a step's product (B * G * R)

// Columns of op(U) per BLAS call in a product split over the threads (few_row_steps, not short_call).
constexpr int64_t kColumnBlock = 256;

// batch x steps: too few row-steps for packed panels (one chunk of rows, no panels, no cell split).
bool few_row_steps(int64_t batch, int64_t steps) {
  return batch * steps < kShortCallRowSteps && steps < kShortCallSteps;
}

// batch x steps of products with U (G x R for the forward, its transpose for the backward), each too small for two
// threads: BLAS (or the hand loops) on the calling thread.
bool short_call(int64_t batch, int64_t steps, int64_t G, int64_t R) {
  return few_row_steps(batch, steps) && batch * G * R < kShortCallMaxWork;
}

// Panels of the panel kernel, packed by panel::pack (which writes every element: not value-initialised, which
// zeroed them first); null: none.
using Panels = std::unique_ptr<float[]>;

#if defined(LSTM_EXT_PANEL_GEMM)
Panels packed_panels(const float* U, bool trans, int64_t K, int64_t N) {
  Panels P = std::make_unique_for_overwrite<float[]>(size_t(panel::packed_size(K, N)));
  panel::pack(U, trans, K, N, P.get());
  return P;
}
#endif

// op(U) packed for the panel kernel (panel_gemm.h), once per call and shared by all row chunks (one copy of a
// wide layer's U stays in the shared cache, where a copy per thread would not): float on an AVX2+FMA build,
// products of at least kBlasMinWork multiply-adds for a chunk of `rows` rows, and `single_thread` (the batch is
// split into per-thread row chunks, or the product is too small for BLAS threads; the panel kernel runs on the
// calling thread, so a single chunk with a large product keeps BLAS, which splits each step's product over the
// threads). Null where the products do not use it. op(U) as in StepProduct.
template <typename T>
Panels panels_for(const T* U, int64_t rows, int64_t N, int64_t K, bool trans_u, bool single_thread) {
#if defined(LSTM_EXT_PANEL_GEMM)
  if constexpr (std::is_same_v<T, float>)
    if (single_thread && use_blas(rows * N * K)) return packed_panels(U, trans_u, K, N);
#endif
  return nullptr;
}

// The per-step product with the recurrent weights, the same U for all steps:
//   out (B x N) = beta * out + in (B x K) * op(U)      (beta 0 or 1)
// with op(U) = U^T for U (N x K) (forward: N = G, K = R) or op(U) = U for U (K x N) (backward: K = G,
// N = R). With `panels` (from panels_for) the panel kernel; otherwise tiny products run a hand loop over op(U)
// laid out (K x N), larger ones BLAS. No choice depends on the number of steps but short_call's, which chunks never
// cross: a layer run in chunks of steps (csrc/layer.cpp, without autograd) computes what one run computes, to the bit.
template <typename T>
class StepProduct {
 public:
  // short_run: a short call (short_call), which takes the hand loops only for a small U. columns: with BLAS, each
  // product in blocks of kColumnBlock columns shared by these threads (a call of few row-steps, not short).
  StepProduct(const T* U, int64_t B, int64_t N, int64_t K, bool trans_u, const float* panels, bool short_run,
              const Parallel* columns = nullptr)
      : U_(U), B_(B), N_(N), K_(K), trans_u_(trans_u) {
    if (panels != nullptr) {
      mode_ = Mode::Panels;
      panels_ = panels;
      return;
    }
    if (columns != nullptr && blas_available<T>()) {
      mode_ = Mode::BlasColumns;
      columns_ = columns;
      return;
    }
    if (!(blas_available<T>() && (use_blas(B * N * K) || (short_run && N * K > kShortCallLoopMaxU)))) {
      mode_ = Mode::Loop;
      Np_ = (N + kLanes - 1) / kLanes * kLanes;  // columns padded with zeros to whole blocks of lanes
      w_.assign(size_t(K * Np_), T(0));
      out_.assign(size_t(kLanes), T(0));
      for (int64_t k = 0; k < K; ++k)
        for (int64_t n = 0; n < N; ++n) w_[size_t(k * Np_ + n)] = trans_u ? U[n * K + k] : U[k * N + n];
    }
  }

  // out (B x N) = addend (B x N) + in (B x K) * op(U); addend is out itself or does not overlap it.
  void operator()(const T* in, const T* addend, T* out) const {
#if defined(LSTM_EXT_PANEL_GEMM)
    if (mode_ == Mode::Panels) {
      if constexpr (std::is_same_v<T, float>) panel::gemm(B_, N_, K_, in, K_, panels_, addend, out, N_);
      return;
    }
#endif
    if (addend != out) std::copy(addend, addend + B_ * N_, out);
    (*this)(in, T(1), out);
  }

  void operator()(const T* in, T beta, T* out) const {
#if defined(LSTM_EXT_PANEL_GEMM)
    if (mode_ == Mode::Panels) {
      if constexpr (std::is_same_v<T, float>)
        panel::gemm(B_, N_, K_, in, K_, panels_, beta != T(0) ? out : nullptr, out, N_);
      return;
    }
#endif
    if (mode_ == Mode::Blas) {
      blas_gemm<T>(false, trans_u_, B_, N_, K_, T(1), in, K_, U_, trans_u_ ? K_ : N_, beta, out, N_);
    } else if (mode_ == Mode::BlasColumns) {
      blas_columns(in, beta, out);
    } else {
      for (int64_t b = 0; b < B_; ++b) loop_row(in + b * K_, beta, out + b * N_);
    }
  }

 private:
  // Loop mode, one batch row: o (N) = beta * o + x (K) * op(U). Each block of kLanes outputs stays in
  // registers for all K, so no output is stored and reloaded per k: with few outputs (the backward's N = R = 8)
  // that store-reload chain was the step's critical path. The block's sum is two chains of FMAs (even and odd k),
  // or four for K >= kFourChainsMinK: the chains are the step's critical path in the backward's dr = da U at the
  // paper's sizes (K = G = 32: 16 FMAs one after another; B=1 H=8 T=100 fwd+bwd 1 us less with four).
  static constexpr int kLanes = Vec<T>::kWidth;  // one vector register (simd_vec.h)
  static constexpr int64_t kFourChainsMinK = 16;

  void loop_row(const T* __restrict__ x, T beta, T* __restrict__ o) const {
    using V = typename Vec<T>::type;
    for (int64_t n0 = 0; n0 < Np_; n0 += kLanes) {
      const bool whole = n0 + kLanes <= N_;  // else the last, part-filled block goes through out_
      V c0 = (whole && beta != T(0)) ? load_vec(o + n0) : V{}, c1{}, c2{}, c3{};
      const T* w = w_.data() + n0;
      int64_t k = 0;
      if (K_ >= kFourChainsMinK)
        for (; k + 3 < K_; k += 4) {
          c0 += x[k] * load_vec(w + k * Np_);
          c1 += x[k + 1] * load_vec(w + (k + 1) * Np_);
          c2 += x[k + 2] * load_vec(w + (k + 2) * Np_);
          c3 += x[k + 3] * load_vec(w + (k + 3) * Np_);
        }
      for (; k + 1 < K_; k += 2) {
        c0 += x[k] * load_vec(w + k * Np_);
        c1 += x[k + 1] * load_vec(w + (k + 1) * Np_);
      }
      if (k < K_) c0 += x[k] * load_vec(w + k * Np_);
      const V sum = K_ >= kFourChainsMinK ? (c0 + c1) + (c2 + c3) : c0 + c1;
      if (whole) {
        store_vec(o + n0, sum);
      } else {
        T* tail = out_.data();
        store_vec(tail, sum);
        for (int64_t n = n0; n < N_; ++n) o[n] = (beta != T(0) ? o[n] : T(0)) + tail[n - n0];
      }
    }
  }

  // BlasColumns: out's columns in blocks of kColumnBlock, a BLAS call each on one thread, the blocks shared by the
  // threads of columns_.
  void blas_columns(const T* in, T beta, T* out) const {
    const int64_t blocks = (N_ + kColumnBlock - 1) / kColumnBlock;
    auto run = [&](int64_t j0, int64_t j1) {
      const BlasSingleThread single(true);
      for (int64_t j = j0; j < j1; ++j) {
        const int64_t n0 = j * kColumnBlock, width = std::min(kColumnBlock, N_ - n0);
        const T* u = trans_u_ ? U_ + n0 * K_ : U_ + n0;  // op(U)'s columns n0 ..: U's rows (U^T) or columns
        blas_gemm<T>(false, trans_u_, B_, width, K_, T(1), in, K_, u, trans_u_ ? K_ : N_, beta, out + n0, N_);
      }
    };
    const int64_t threads = columns_->for_each ? std::max(columns_->threads, 1) : 1;
    if (threads <= 1 || blocks <= 1) {
      run(0, blocks);
    } else {
      columns_->for_each(blocks, (blocks + threads - 1) / threads, run);
    }
  }

  enum class Mode { Loop, Blas, BlasColumns, Panels };
  const T* U_;
  int64_t B_, N_, K_;
  bool trans_u_;
  Mode mode_ = Mode::Blas;
  int64_t Np_ = 0;       // Loop: N rounded up to whole blocks of kLanes
  std::vector<T> w_;     // Loop: op(U) as (K x Np), zero-padded columns
  const float* panels_ = nullptr;  // Panels: op(U) packed by panels_for, shared by the row chunks
  const Parallel* columns_ = nullptr;  // BlasColumns: the threads
  mutable std::vector<T> out_;  // Loop: the products of a part-filled last block (kLanes), scratch (one
                                // StepProduct per thread)
};

bool active(const int64_t* lengths, int64_t t, int64_t b) { return lengths == nullptr || t < lengths[b]; }

// The cell math below is written once, as *_body functions inlined into two compilations of each: the build's
// own (AVX2 where it targets it) and, for float on CPUs with AVX-512, one vectorised 16 lanes wide (the *512
// twins below, chosen by row_kernels_for). The same operations in the same order, so the same bits
// (test_panel_kernel_avx512_matches_avx2_bitwise); 1.9x the speed of the AVX2 loops on the cell math of 128 cells
// alone, and the B=128 H=128 T=100 forward 13 % faster.
#define LSTM_EXT_BODY inline __attribute__((always_inline))

// The cell math of n cells of their own (S = 1), one batch row, one step: the four row groups' net inputs of these
// cells -> activations (in place); s_prev, s, y (n).
template <typename T, Squash Q, bool FG>
LSTM_EXT_BODY void cells_forward_body(int n, T* __restrict__ a_iota, T* __restrict__ a_phi, T* __restrict__ a_z,
                                      T* __restrict__ a_omega, const T* __restrict__ s_prev, T* __restrict__ s,
                                      T* __restrict__ y) {
  for (int j = 0; j < n; ++j) a_iota[j] = sigmoid(a_iota[j]);
  if constexpr (FG)
    for (int j = 0; j < n; ++j) a_phi[j] = sigmoid(a_phi[j]);
  for (int j = 0; j < n; ++j) a_omega[j] = sigmoid(a_omega[j]);
  for (int j = 0; j < n; ++j) a_z[j] = squash_g(Q, a_z[j]);
  for (int j = 0; j < n; ++j) {
    s[j] = cell_state(FG, FG ? a_phi[j] : T(1), s_prev[j], a_iota[j], a_z[j]);
    y[j] = cell_output(Q, a_omega[j], s[j]);
  }
}

// One batch row, one step, laid out for the vectoriser: each phase is a flat loop over a row group,
// with the squash (Q) and the forget gate (FG) known at compile time. Blocks of one cell (S = 1) need
// no per-block reduction; larger blocks go through block_forward / block_backward of cell.h.
//   a (G) net inputs -> activations;  s_prev, s, y (C)
template <typename T, Squash Q, bool FG>
LSTM_EXT_BODY void row_forward_body(const CellDims& d, T* __restrict__ a, const T* __restrict__ s_prev,
                                    T* __restrict__ s, T* __restrict__ y) {
  if (d.block_size != 1) {
    for (int blk = 0; blk < d.n_blocks; ++blk) block_forward(d, blk, a, s_prev, s, y);
    return;
  }
  cells_forward_body<T, Q, FG>(d.n_cells, a + d.iota_row(), a + d.phi_row(), a + d.z_row(), a + d.omega_row(),
                               s_prev, s, y);
}

//   act (G), s_prev, s (C); dy (C) gradient on y_c incl. the recurrent one; dr (R) gradient on r_t;
//   ds (C) in: on s_t, out: on s_{t-1};  da (G) out
template <typename T, Squash Q, bool FG>
LSTM_EXT_BODY void row_backward_body(const CellDims& d, const T* __restrict__ act, const T* __restrict__ s_prev,
                                     const T* __restrict__ s, const T* __restrict__ dy, const T* __restrict__ dr,
                                     T* __restrict__ ds, T* __restrict__ da) {
  if (d.block_size != 1) {
    for (int blk = 0; blk < d.n_blocks; ++blk) block_backward(d, blk, act, s_prev, s, dy, dr, ds, da);
    return;
  }
  const int C = d.n_cells;
  const T* __restrict__ y_iota = act + d.iota_row();
  const T* __restrict__ y_phi = act + d.phi_row();
  const T* __restrict__ g = act + d.z_row();
  const T* __restrict__ y_omega = act + d.omega_row();
  T* __restrict__ da_iota = da + d.iota_row();
  T* __restrict__ da_phi = da + d.phi_row();
  T* __restrict__ da_z = da + d.z_row();
  T* __restrict__ da_omega = da + d.omega_row();
  for (int j = 0; j < C; ++j) {
    const T yf = FG ? y_phi[j] : T(1);
    const CellGrads<T> c = cell_backward(Q, FG, y_iota[j], yf, y_omega[j], g[j], s_prev[j], s[j], dy[j], ds[j]);
    da_iota[j] = gate_grad(c.d_iota, y_iota[j]);
    if constexpr (FG) da_phi[j] = gate_grad(c.d_phi, yf);
    da_omega[j] = gate_grad(c.d_omega, y_omega[j]);
    da_z[j] = c.da_z;
    ds[j] = c.ds_prev;
  }
  if (d.feedback_all) {  // gate activations fed back through r: gate_grad is linear in its first argument
    const int per = d.gates_per_block();
    for (int j = 0; j < C; ++j) {
      da_iota[j] += gate_grad(dr[d.r_gate(0, j)], y_iota[j]);
      if constexpr (FG) da_phi[j] += gate_grad(dr[d.r_gate(1, j)], y_phi[j]);
      da_omega[j] += gate_grad(dr[d.r_gate(per - 1, j)], y_omega[j]);
    }
  }
}

template <typename T, Squash Q, bool FG>
void cells_forward(int n, T* a_iota, T* a_phi, T* a_z, T* a_omega, const T* s_prev, T* s, T* y) {
  cells_forward_body<T, Q, FG>(n, a_iota, a_phi, a_z, a_omega, s_prev, s, y);
}
template <typename T, Squash Q, bool FG>
void row_forward(const CellDims& d, T* a, const T* s_prev, T* s, T* y) {
  row_forward_body<T, Q, FG>(d, a, s_prev, s, y);
}
template <typename T, Squash Q, bool FG>
void row_backward(const CellDims& d, const T* act, const T* s_prev, const T* s, const T* dy, const T* dr, T* ds,
                  T* da) {
  row_backward_body<T, Q, FG>(d, act, s_prev, s, dy, dr, ds, da);
}

#if defined(LSTM_EXT_PANEL_GEMM)
#define LSTM_EXT_TARGET_AVX512_WIDE __attribute__((target("avx512f,prefer-vector-width=512")))
template <Squash Q, bool FG>
LSTM_EXT_TARGET_AVX512_WIDE void cells_forward512(int n, float* a_iota, float* a_phi, float* a_z, float* a_omega,
                                                  const float* s_prev, float* s, float* y) {
  cells_forward_body<float, Q, FG>(n, a_iota, a_phi, a_z, a_omega, s_prev, s, y);
}
template <Squash Q, bool FG>
LSTM_EXT_TARGET_AVX512_WIDE void row_forward512(const CellDims& d, float* a, const float* s_prev, float* s,
                                                float* y) {
  row_forward_body<float, Q, FG>(d, a, s_prev, s, y);
}
template <Squash Q, bool FG>
LSTM_EXT_TARGET_AVX512_WIDE void row_backward512(const CellDims& d, const float* act, const float* s_prev,
                                                 const float* s, const float* dy, const float* dr, float* ds,
                                                 float* da) {
  row_backward_body<float, Q, FG>(d, act, s_prev, s, dy, dr, ds, da);
}
#undef LSTM_EXT_TARGET_AVX512_WIDE
#endif
#undef LSTM_EXT_BODY

template <typename T>
using RowForward = void (*)(const CellDims&, T*, const T*, T*, T*);
template <typename T>
using RowBackward = void (*)(const CellDims&, const T*, const T*, const T*, const T*, const T*, T*, T*);
template <typename T>
using CellsForward = void (*)(int, T*, T*, T*, T*, const T*, T*, T*);

template <typename T>
struct RowKernels {
  RowForward<T> forward;
  RowBackward<T> backward;
  CellsForward<T> cells_forward;  // S = 1 only
};

// Cells per row from which the float kernels take the AVX-512 twins (on a CPU with AVX-512, panel::avx512_enabled):
// below it a row is less than one 16-lane vector per gate, and the wide loops would run their scalar tails.
constexpr int kWideCellMathMinCells = 32;

template <typename T, Squash Q, bool FG>
RowKernels<T> row_kernels_for(const CellDims& d) {
#if defined(LSTM_EXT_PANEL_GEMM)
  if constexpr (std::is_same_v<T, float>)
    if (panel::avx512_enabled() && d.n_cells >= kWideCellMathMinCells)
      return {&row_forward512<Q, FG>, &row_backward512<Q, FG>, &cells_forward512<Q, FG>};
#endif
  return {&row_forward<T, Q, FG>, &row_backward<T, Q, FG>, &cells_forward<T, Q, FG>};
}

template <typename T, bool FG>
RowKernels<T> row_kernels_fg(const CellDims& d) {
  switch (d.squash) {
    case Squash::Tanh: return row_kernels_for<T, Squash::Tanh, FG>(d);
    case Squash::Paper: return row_kernels_for<T, Squash::Paper, FG>(d);
    default: return row_kernels_for<T, Squash::SigmoidIdentity, FG>(d);
  }
}

// The row kernels specialised for d's squash and cell.
template <typename T>
RowKernels<T> row_kernels(const CellDims& d) {
  return d.forget_gate ? row_kernels_fg<T, true>(d) : row_kernels_fg<T, false>(d);
}

// Batch rows are independent: a chunk of rows runs all T steps on its own, so threads never meet
// inside the time loop (but for the forward of wide layers, forward_cell_split). A chunk needs enough
// work per step to be worth a thread: 2^17 multiply-adds (2 cores, T = 100; against 2^20 before:
// LSTM1997 B=32 H=128 forward 7.3 -> 4.7 ms, backward 9.1 -> 6.9 ms; B=64 H=32 forward 3.1 -> 1.7 ms;
// 2^15 made B=32 H=16 slower).
constexpr int64_t kMinWorkPerChunk = int64_t(1) << 17;

int64_t chunk_rows(int64_t B, int64_t work_per_row, const Parallel& par) {
  const int64_t threads = par.for_each ? std::max(par.threads, 1) : 1;
  const int64_t by_work = std::max<int64_t>(1, (B * work_per_row) / kMinWorkPerChunk);
  const int64_t chunks = std::min({threads, by_work, std::max<int64_t>(B, 1)});
  return (B + chunks - 1) / std::max<int64_t>(chunks, 1);
}

void for_each_chunk(int64_t B, int64_t rows, const Parallel& par, const std::function<void(int64_t, int64_t)>& body) {
  if (B <= rows || !par.for_each) {
    body(0, B);
  } else {
    par.for_each(B, rows, body);
  }
}

// Rows [b0, b1) of the forward, all T steps. columns: the threads of a product in column blocks (StepProduct), or
// null.
template <typename T>
void forward_rows(const ForwardArgs<T>& p, int64_t b0, int64_t b1, bool blas_single, const float* panels,
                  const Parallel* columns) {
  const CellDims& d = p.d;
  const int64_t B = p.batch, M = b1 - b0, G = d.gate_rows, R = d.rec_size, C = d.n_cells;
  const BlasSingleThread blas_threads(blas_single);
  const bool short_run = short_call(B, p.steps, G, R);
  const StepProduct<T> recurrent_input(p.U, M, G, R, /*trans_u=*/true, panels, short_run, columns);  // act = A + r U^T
  const RowForward<T> forward_row = row_kernels<T>(d).forward;
  T* r_state = p.r_T + b0 * R;  // r_T and s_T hold the running state
  // Inference (act == nullptr): one step's activations and states, reused by every step.
  const bool keep = p.act != nullptr;
  std::vector<T> act_step(keep ? 0 : size_t(M * G)), s_step(keep ? 0 : size_t(M * C));
  for (int64_t t = 0; t < p.steps; ++t) {
    T* act = keep ? p.act + (t * B + b0) * G : act_step.data();
    T* s = keep ? p.s_all + (t * B + b0) * C : s_step.data();
    T* y = p.y + (t * B + b0) * C;
    recurrent_input(r_state, p.A + (t * B + b0) * G, act);  // act = A_t + r U^T
    for (int64_t i = 0; i < M; ++i) {
      T* act_b = act + i * G;
      T* s_b = s + i * C;
      T* y_b = y + i * C;
      T* s_state = p.s_T + (b0 + i) * C;
      if (!active(p.lengths, t, b0 + i)) {  // past its length a row keeps its state
        std::fill(act_b, act_b + G, T(0));
        std::copy(s_state, s_state + C, s_b);
        std::fill(y_b, y_b + C, T(0));
        continue;
      }
      forward_row(d, act_b, s_state, s_b, y_b);
      std::copy(s_b, s_b + C, s_state);
      gather_feedback(d, act_b, y_b, r_state + i * R);
    }
  }
}

// Rows [b0, b1) of the backward recurrence, all T steps: dA, dr0 and ds0 of these rows. columns: as forward_rows.
template <typename T>
void backward_rows(const BackwardArgs<T>& p, int64_t b0, int64_t b1, bool blas_single, const float* panels,
                   const Parallel* columns) {
  const CellDims& d = p.d;
  const int64_t Tn = p.steps, B = p.batch, M = b1 - b0, G = d.gate_rows, R = d.rec_size, C = d.n_cells;
  const BlasSingleThread blas_threads(blas_single);
  const bool short_run = short_call(B, Tn, G, R);
  const StepProduct<T> recurrent_grad(p.U, M, R, G, /*trans_u=*/false, panels, short_run, columns);  // dr = da U
  const RowBackward<T> backward_row = row_kernels<T>(d).backward;
  // Running gradients on r and s (no gradient on r_T or s_T: zeros); dr_next receives da*U for the step before.
  std::vector<T> dr(size_t(M * R), T(0)), ds(size_t(M * C), T(0));
  if (p.dr_T != nullptr) std::copy(p.dr_T + b0 * R, p.dr_T + b1 * R, dr.begin());
  if (p.ds_T != nullptr) std::copy(p.ds_T + b0 * C, p.ds_T + b1 * C, ds.begin());
  std::vector<T> dr_next(static_cast<size_t>(M * R)), dyc(static_cast<size_t>(C));
  const int64_t dy_t = p.dy_strides ? p.dy_strides[0] : B * C, dy_b = p.dy_strides ? p.dy_strides[1] : C,
                dy_c = p.dy_strides ? p.dy_strides[2] : 1;
  for (int64_t t = Tn - 1; t >= 0; --t) {
    const T* act = p.act + (t * B + b0) * G;
    const T* s = p.s_all + (t * B + b0) * C;
    const T* s_prev = t > 0 ? p.s_all + ((t - 1) * B + b0) * C : p.s0 + b0 * C;
    const T* dy = p.dy == nullptr ? nullptr : p.dy + t * dy_t + b0 * dy_b;
    T* da = p.dA + (t * B + b0) * G;
    for (int64_t i = 0; i < M; ++i) {
      T* da_b = da + i * G;
      if (!active(p.lengths, t, b0 + i)) {
        std::fill(da_b, da_b + G, T(0));
        continue;
      }
      const T* dr_b = dr.data() + i * R;
      if (dy != nullptr && dy_c == 1) {
        for (int64_t j = 0; j < C; ++j) dyc[size_t(j)] = dy[i * dy_b + j] + dr_b[d.r_cells() + j];
      } else if (dy != nullptr) {
        for (int64_t j = 0; j < C; ++j) dyc[size_t(j)] = dy[i * dy_b + j * dy_c] + dr_b[d.r_cells() + j];
      } else {
        for (int64_t j = 0; j < C; ++j) dyc[size_t(j)] = dr_b[d.r_cells() + j];
      }
      backward_row(d, act + i * G, s_prev + i * C, s + i * C, dyc.data(), dr_b, ds.data() + i * C, da_b);
    }
    // Gradient on r_{t-1}: through U unless truncated; rows past their length pass it on unchanged.
    if (d.truncate) {
      std::fill(dr_next.begin(), dr_next.end(), T(0));
    } else {
      recurrent_grad(da, T(0), dr_next.data());
    }
    for (int64_t i = 0; i < M; ++i)
      if (!active(p.lengths, t, b0 + i))
        std::copy(dr.begin() + i * R, dr.begin() + (i + 1) * R, dr_next.begin() + i * R);
    dr.swap(dr_next);
  }
  std::copy(dr.begin(), dr.end(), p.dr0 + b0 * R);
  std::copy(ds.begin(), ds.end(), p.ds0 + b0 * C);
}

// ---- wide layers: the threads split the cells, not the batch ----
// Splitting the batch, each thread runs its rows against all of U every step: once U outgrows the L2 cache (H >= 512
// in float32: 4 MB and more) that streams U from the shared cache once per thread and step. Splitting the cells,
// each thread runs every row against the rows of U of its own cells (their four gate rows), then their cell math,
// so U is read once per step in all; a barrier ends each step, since the next step's product reads every cell's
// output. For the float32 panel kernel, cells of their own (S = 1) fed back as they are ("cells": r_{t-1} is
// y_{t-1}) and no lengths (past a row's length y is 0 but r keeps its last value).
constexpr int64_t kCellSplitMinU = int64_t(1) << 20;  // elements of U: 4 MB of float32

// The threads of a team wait at wait(n), n the team's size, until all n have arrived; reusable step after step.
class SpinBarrier {
 public:
  void wait(int n) {
    const int generation = generation_.load(std::memory_order_acquire);
    if (arrived_.fetch_add(1, std::memory_order_acq_rel) == n - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.store(generation + 1, std::memory_order_release);
      return;
    }
    for (int spins = 0; generation_.load(std::memory_order_acquire) == generation; ++spins)
      if (spins >= 1024) std::this_thread::yield();  // a busy machine: let the late thread run
  }

 private:
  std::atomic<int> arrived_{0}, generation_{0};
};

template <typename T>
bool use_cell_split(const ForwardArgs<T>& p, const Parallel& par) {
#if defined(LSTM_EXT_PANEL_GEMM)
  const CellDims& d = p.d;
  return std::is_same_v<T, float> && par.team && par.threads >= 2 && d.block_size == 1 && !d.feedback_all &&
         p.lengths == nullptr && int64_t(d.gate_rows) * d.rec_size >= kCellSplitMinU &&
         !few_row_steps(p.batch, p.steps);
#else
  return false;
#endif
}

#if defined(LSTM_EXT_PANEL_GEMM)
// Thread `tid` of `n_threads`: cells [first, end), in whole panels of the product (the last thread takes the rest).
std::pair<int64_t, int64_t> cells_of_thread(int64_t C, int tid, int n_threads) {
  auto bound = [&](int k) { return k == n_threads ? C : C * k / n_threads / panel::kWidth * panel::kWidth; };
  return {bound(tid), bound(tid + 1)};
}

// The forward with the cells split over a team of threads (use_cell_split); r_T and s_T hold r0 and s0 on entry.
void forward_cell_split(const ForwardArgs<float>& p, const Parallel& par) {
  const CellDims& d = p.d;
  const int64_t Tn = p.steps, B = p.batch, G = d.gate_rows, C = d.n_cells;  // R == C: r_{t-1} is y_{t-1}
  const CellsForward<float> cells_forward = row_kernels<float>(d).cells_forward;
  const int64_t group_row[4] = {d.iota_row(), d.phi_row(), d.z_row(), d.omega_row()};  // first row in G
  const bool keep = p.act != nullptr;  // inference: one step's activations and states, shared (threads own columns)
  std::vector<float> act_step(keep ? 0 : size_t(B * G)), s_step(keep ? 0 : size_t(B * C));
  SpinBarrier barrier;
  par.team(par.threads, [&](int tid, int n_threads) {
    const BlasSingleThread blas_threads(true);
    const auto [c0, c1] = cells_of_thread(C, tid, n_threads);
    const int64_t n = c1 - c0;
    // op(U) of this thread's cells, per row group: U's rows group + c0 .. group + c1, packed.
    Panels panels[4];
    for (int g = 0; g < 4; ++g)
      if (n > 0 && (g != 1 || d.forget_gate))
        panels[g] = packed_panels(p.U + (group_row[g] + c0) * C, /*trans=*/true, C, n);
    for (int64_t t = 0; t < Tn; ++t) {
      const float* r = t == 0 ? p.r0 : p.y + (t - 1) * B * C;
      const float* A = p.A + t * B * G;
      float* act = keep ? p.act + t * B * G : act_step.data();
      float* s = keep ? p.s_all + t * B * C : s_step.data();
      float* y = p.y + t * B * C;
      if (n > 0) {
        for (int g = 0; g < 4; ++g)  // act = A_t + r U^T, this thread's columns
          if (panels[g] != nullptr)
            panel::gemm(B, n, C, r, C, panels[g].get(), A + group_row[g] + c0, act + group_row[g] + c0, G);
        for (int64_t i = 0; i < B; ++i) {
          float* a = act + i * G;
          float* s_state = p.s_T + i * C + c0;
          cells_forward(int(n), a + group_row[0] + c0, a + group_row[1] + c0, a + group_row[2] + c0,
                        a + group_row[3] + c0, s_state, s + i * C + c0, y + i * C + c0);
          std::copy(s + i * C + c0, s + i * C + c1, s_state);
        }
      }
      barrier.wait(n_threads);  // step t's y complete: step t + 1 reads all of it
    }
  });
  if (Tn > 0) std::copy(p.y + (Tn - 1) * B * C, p.y + Tn * B * C, p.r_T);
}
#endif

// ---- dU of small layers: a sum of outer products in registers ----
// dU (G x R) = sum over n < rows of da_n^T r_n, da_n = dA's row n (G), r_n = r_row(n) (R), each sum over n in order
// (the same bits as adding da_n[g] r_n[k] to dU[g][k] row after row, as this did before). A tile of 8 rows of dU by
// one vector of columns (simd_vec.h) stays in registers for all n and is stored once: updating dU in memory row
// after row stored and reloaded all of dU each n (B=1 H=8 T=100: 3 of the backward's 9 us).

// Rows [g0, g0 + 8) of dU, columns [k0, k0 + kw).
template <typename T, typename RowFn>
void outer_products_tile8(int64_t rows, int64_t G, int64_t R, int64_t g0, int64_t k0, int kw, const T* dA,
                          RowFn r_row, T* dU) {
  using V = typename Vec<T>::type;
  V a0{}, a1{}, a2{}, a3{}, a4{}, a5{}, a6{}, a7{};
  for (int64_t n = 0; n < rows; ++n) {
    const V rv = load_vec(r_row(n) + k0, kw);
    const T* da = dA + n * G + g0;
    a0 += da[0] * rv;
    a1 += da[1] * rv;
    a2 += da[2] * rv;
    a3 += da[3] * rv;
    a4 += da[4] * rv;
    a5 += da[5] * rv;
    a6 += da[6] * rv;
    a7 += da[7] * rv;
  }
  const V acc[8] = {a0, a1, a2, a3, a4, a5, a6, a7};
  for (int i = 0; i < 8; ++i) store_vec(dU + (g0 + i) * R + k0, acc[i], kw);
}

// Row g of dU, columns [k0, k0 + kw).
template <typename T, typename RowFn>
void outer_products_row(int64_t rows, int64_t G, int64_t R, int64_t g, int64_t k0, int kw, const T* dA, RowFn r_row,
                        T* dU) {
  typename Vec<T>::type a{};
  for (int64_t n = 0; n < rows; ++n) a += dA[n * G + g] * load_vec(r_row(n) + k0, kw);
  store_vec(dU + g * R + k0, a, kw);
}

template <typename T, typename RowFn>
void sum_of_outer_products(int64_t rows, int64_t G, int64_t R, const T* dA, RowFn r_row, T* dU) {
  constexpr int W = Vec<T>::kWidth;
  for (int64_t k0 = 0; k0 < R; k0 += W) {
    const int kw = int(std::min<int64_t>(W, R - k0));
    int64_t g = 0;
    for (; g + 8 <= G; g += 8) outer_products_tile8(rows, G, R, g, k0, kw, dA, r_row, dU);
    for (; g < G; ++g) outer_products_row(rows, G, R, g, k0, kw, dA, r_row, dU);
  }
}

}  // namespace

bool have_blas() { return blas_available<float>() && blas_available<double>(); }

const char* panel_kernel() {
#if defined(LSTM_EXT_PANEL_GEMM)
  return panel::avx512_enabled() ? "avx512" : "avx2";
#else
  return "blas";
#endif
}

template <typename T>
void recurrence_forward(const ForwardArgs<T>& p, const Parallel& par) {
  const int64_t B = p.batch, G = p.d.gate_rows, R = p.d.rec_size;
  std::copy(p.r0, p.r0 + B * R, p.r_T);
  std::copy(p.s0, p.s0 + B * p.d.n_cells, p.s_T);
#if defined(LSTM_EXT_PANEL_GEMM)
  if constexpr (std::is_same_v<T, float>) {
    if (use_cell_split(p, par)) return forward_cell_split(p, par);
  }
#endif
  const bool short_run = short_call(B, p.steps, G, R);  // one chunk, BLAS on this thread, no panels
  const bool few = few_row_steps(B, p.steps);             // one chunk, no panels; unless short, column blocks
  const int64_t rows = few ? B : chunk_rows(B, G * R, par);
  // (column blocks: each block's thread runs BLAS on itself; the calling thread's BLAS setting is left alone, as
  // MKL's applies to the OpenMP team that the blocks' parallel region forks from this thread)
  const bool blas_single =
      short_run || (!few && (rows < B || B * G * R < kBlasParallelMinWork || par.threads <= 1));
  const Panels panels = few ? nullptr : panels_for(p.U, rows, G, R, /*trans_u=*/true, blas_single);
  const Parallel* columns = few && !short_run ? &par : nullptr;
  for_each_chunk(B, rows, par,
                 [&](int64_t b0, int64_t b1) { forward_rows(p, b0, b1, blas_single, panels.get(), columns); });
}

template <typename T>
void recurrence_backward(const BackwardArgs<T>& p, const Parallel& par) {
  const CellDims& d = p.d;
  const int64_t Tn = p.steps, B = p.batch, G = d.gate_rows, R = d.rec_size, C = d.n_cells;
  // Row chunks on torch's threads, as in the forward, each with single-threaded BLAS: on torch's OpenMP
  // pool that measured faster than one chunk with BLAS threading each step's product dr = da U
  // (2 cores; B=32 H=128: 8.6 against 9.4 ms, B=128 H=256: 119 against 162 ms).
  const bool short_run = short_call(B, Tn, G, R);  // one chunk, BLAS on this thread, no panels
  const bool few = few_row_steps(B, Tn);            // one chunk, no panels; unless short, column blocks
  const int64_t chunk = few ? B : chunk_rows(B, G * R, par);
  const bool blas_single =
      short_run || (!few && (chunk < B || B * G * R < kBlasParallelMinWork || par.threads <= 1));
  // Truncated: no product dr = da U at all.
  const Panels panels = d.truncate || few ? nullptr : panels_for(p.U, chunk, R, G, /*trans_u=*/false, blas_single);
  const Parallel* columns = few && !short_run ? &par : nullptr;
  for_each_chunk(B, chunk, par,
                 [&](int64_t b0, int64_t b1) { backward_rows(p, b0, b1, blas_single, panels.get(), columns); });

  // dU = sum_t da_t^T r_{t-1}. With feedback "cells" r_{t-1} is y_{t-1} (r0 at t = 0; a row past its length has
  // dA = 0), so the rows of r_{t-1} over all steps are r0's then y's first T-1 steps: two products, no copy. With
  // feedback "all" r_{t-1} also holds gate activations and is rebuilt from what the forward kept.
  std::vector<T> r_prev;
  const T* r_rest = p.y;  // rows B .. T*B-1 of r_{t-1}: steps 1 .. T-1
  if (d.feedback_all && Tn > 1) {
    r_prev.resize(size_t((Tn - 1) * B * R));
    for (int64_t t = 1; t < Tn; ++t)
      for (int64_t b = 0; b < B; ++b)
        gather_feedback(d, p.act + ((t - 1) * B + b) * G, p.y + ((t - 1) * B + b) * C,
                        r_prev.data() + ((t - 1) * B + b) * R);
    r_rest = r_prev.data();
  }
  const int64_t rows = Tn * B;
  if (rows == 0) {
    std::fill(p.dU, p.dU + G * R, T(0));
  } else if (blas_available<T>() && rows * G * R >= kBlasParallelMinWork) {
    blas_gemm<T>(true, false, G, R, B, T(1), p.dA, G, p.r0, R, T(0), p.dU, R);
    if (rows > B) blas_gemm<T>(true, false, G, R, rows - B, T(1), p.dA + B * G, G, r_rest, R, T(1), p.dU, R);
  } else {
    sum_of_outer_products(rows, G, R, p.dA, [&](int64_t n) { return n < B ? p.r0 + n * R : r_rest + (n - B) * R; },
                          p.dU);
  }
}

template void recurrence_forward<float>(const ForwardArgs<float>&, const Parallel&);
template void recurrence_forward<double>(const ForwardArgs<double>&, const Parallel&);
template void recurrence_backward<float>(const BackwardArgs<float>&, const Parallel&);
template void recurrence_backward<double>(const BackwardArgs<double>&, const Parallel&);

}  // namespace lstm_ext::cpu
