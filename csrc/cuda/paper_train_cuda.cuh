// On-line training of the 1997 paper's networks on a CUDA device: the truncated rule of csrc/cpu/paper_train.h
// (the network, the learning rule and every argument are described there), torch-free (raw pointers, a params
// struct, a cudaStream_t). csrc/cuda/paper_ops_cuda.cpp checks the tensors and calls it; the kernel is in
// paper_train_kernel.cuh.
//
// One net is one CTA: the kernel trains it on its chunk of sequences one after another, all its state (weights,
// sensitivities, activations) on chip for the whole chunk. The nets are tiny and a step is a chain of dependent
// phases, so a chunk runs on one SM at the latency of that chain; trials run side by side as kernels on separate
// streams (lstm_ext.experiments.runner), one SM each. A step's phases, separated by __syncthreads:
//   1. net inputs of the H hidden rows over this step's active source columns, activations   (thread per row)
//   2. cell states, outputs and the sensitivity factors                                      (thread per cell)
//   3. sensitivities S[k][c] (thread per column and cell); the output units (thread per output)
//   at a step with a target:
//   4. output deltas; 5. error on the cell states and output gates; 6. weight changes (thread per weight)
//   7. r_t into the source vector, s_t becomes the state, the next step's inputs
// What is not here: the full gradient (truncate = false) runs on the CPU only.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../paper_net.h"
#include "runtime.cuh"

namespace lstm_ext::cuda {

using lstm_ext::PaperTrainArgs;  // (paper_net.h) the truncated rule only: `truncate` is not read

constexpr int kPaperMaxThreads = 256;

// Where each array of a net's state starts (in elements of T) in its state buffer: shared memory, or a global
// workspace when it does not fit. Source-major: WT[k * H + r] is Wh[r][k], S[k * C + c] the sensitivity of cell
// c's state on the weight from source column k into the cell (Sz), its input gate (Si) or forget gate (Sf).
struct PaperLayout {
  size_t WT, dWT, WoT, dWoT, Sz, Si, Sf, src, act, s, s_new, h, yc, kz, ki, kf, ds, dom, yo, df, e, total;

  LSTM_HD static PaperLayout of(const PaperNetDims& d, bool learn, bool update_each_step) {
    const size_t H = size_t(d.hidden_rows()), K = size_t(d.cols()), C = size_t(d.n_cells()),
                 O = size_t(d.outputs), Ko = size_t(d.out_cols()), nb = size_t(d.n_blocks);
    const bool sums = learn && !update_each_step;  // per-sequence changes are summed apart
    PaperLayout L{};
    size_t at = 0;
    auto take = [&at](size_t n) {
      const size_t start = at;
      at += (n + 1) / 2 * 2;  // an even number of elements: every array 8-byte aligned for float too
      return start;
    };
    L.WT = take(K * H);
    L.dWT = take(sums ? K * H : 0);
    L.WoT = take(Ko * O);
    L.dWoT = take(sums ? Ko * O : 0);
    L.Sz = take(learn ? K * C : 0);
    L.Si = take(learn ? K * C : 0);
    L.Sf = take(learn && d.forget_gate ? K * C : 0);
    L.src = take(K);
    L.act = take(H);
    L.s = take(C);
    L.s_new = take(C);
    L.h = take(C);
    L.yc = take(C);
    L.kz = take(C);
    L.ki = take(C);
    L.kf = take(C);
    L.ds = take(C);
    L.dom = take(nb);
    L.yo = take(O);
    L.df = take(O);
    L.e = take(O);
    L.total = at;
    return L;
  }
};

// How one chunk runs: threads per CTA, and whether the state fits in shared memory.
struct PaperTrainPlan {
  int threads = 0;
  bool in_smem = true;
  size_t state_bytes = 0;      // the net's state: dynamic shared memory, or the global workspace
  size_t workspace_bytes = 0;  // global workspace the caller provides (0 when in_smem)
};

// Train (or evaluate) on `stream`; `workspace`: plan.workspace_bytes of device memory (nullptr when 0).
// Returns the launch's error (the kernel runs asynchronously).
template <typename T>
cudaError_t paper_train(const PaperTrainArgs<T>& args, const PaperTrainPlan& plan, void* workspace,
                        cudaStream_t stream);

namespace detail {

// Threads per CTA: enough for the largest phase (the weight changes, K x H) up to kPaperMaxThreads.
LSTM_HD int paper_threads(const PaperNetDims& d) {
  int work = d.cols() * d.hidden_rows();
  if (d.out_cols() * d.outputs > work) work = d.out_cols() * d.outputs;
  const int t = (work + 31) / 32 * 32;
  return t < 32 ? 32 : (t > kPaperMaxThreads ? kPaperMaxThreads : t);
}

}  // namespace detail

// max_smem: the device's opt-in maximum of dynamic shared memory per block (bytes).
template <typename T>
PaperTrainPlan plan_paper_train(const PaperNetDims& d, bool learn, bool update_each_step, int max_smem) {
  PaperTrainPlan plan;
  plan.threads = detail::paper_threads(d);
  plan.state_bytes = PaperLayout::of(d, learn, update_each_step).total * sizeof(T);
  plan.in_smem = plan.state_bytes <= size_t(max_smem);
  plan.workspace_bytes = plan.in_smem ? 0 : plan.state_bytes;
  return plan;
}

}  // namespace lstm_ext::cuda
