// The shape of a 1997 paper network (HS97 Sec. 4, App. A.1) and the arguments of its training, shared by the CPU trainer (cpu/paper_train.h,
// which describes the network and the learning rule) and the CUDA one (cuda/paper_train_cuda.cuh).
// Torch-free; plain data, copied by value into CUDA kernels.
//
//   hidden rows (H) of Wh:    [iota (n_b), phi (n_b, forget gate only), z (C), omega (n_b, output gate only)]
//   source columns (K) of Wh: [x_t (I), r_{t-1} (R), bias (1)],  r = [y_iota, (y_phi), (y_omega), y_c]
//   output columns (Ko) of Wo: [y_c (C), x_t (I), bias (1)]
#pragma once

#include <cstdint>

#include "cell.h"

namespace lstm_ext {

struct PaperNetDims {
  int inputs;     // I
  int n_blocks;   // n_b
  int block_size; // S
  int outputs;    // O
  bool forget_gate;
  bool output_gate;
  Squash squash;
  bool linear_output;  // output units y = net (not the paper's logistic y = sigma(net))

  LSTM_HD int n_cells() const { return n_blocks * block_size; }                                   // C
  LSTM_HD int n_gates() const { return n_blocks * (1 + int(forget_gate) + int(output_gate)); }
  LSTM_HD int hidden_rows() const { return n_gates() + n_cells(); }                               // H
  LSTM_HD int rec_size() const { return n_gates() + n_cells(); }                                  // R
  LSTM_HD int cols() const { return inputs + rec_size() + 1; }                                    // K
  LSTM_HD int out_cols() const { return n_cells() + inputs + 1; }                                 // Ko
  LSTM_HD int phi_row() const { return n_blocks; }
  LSTM_HD int z_row() const { return forget_gate ? 2 * n_blocks : n_blocks; }
  LSTM_HD int omega_row() const { return z_row() + n_cells(); }
};

// One call of a trainer: the net, its chunk of sequences and the outputs (row-major, contiguous; host memory for
// the CPU trainer, device memory for the CUDA one, which has the truncated rule only).
template <typename T>
struct PaperTrainArgs {
  PaperNetDims d;
  T* Wh;                     // (H, K)   in/out: hidden weights
  const T* Mh;               // (H, K)   1 where a weight exists
  T* Wo;                     // (O, Ko)  in/out: output weights
  const T* Mo;               // (O, Ko)
  int64_t n;                 // sequences in the chunk, trained in order
  int64_t steps;             // T_max
  const T* x;                // (n, T_max, I) real-valued inputs, or nullptr
  const int64_t* x_index;    // (n, T_max) one-hot input index (-1: none), or nullptr
  const int64_t* lengths;    // (n)
  const T* targets;          // (n, T_max, O)
  const T* target_mask;      // (n, T_max) weight of each step's error (0: no target)
  T lr;
  bool learn;                // false: forward only (evaluation); weights untouched
  bool update_each_step;
  bool truncate = true;      // false: the full gradient (back-propagation through time; per-sequence updates)
  T* loss;                   // (n) out: 1/2 sum of weighted squared errors
  T* err_max;                // (n) out: max |target - y| over outputs and target steps
  T* err_last;               // (n) out: max |target - y| over outputs at the last target step
  T* y_last;                 // (n, O) out: outputs at the sequence's last step
  T* y_all;                  // (n, T_max, O) out: outputs at every step (0 past the length), or nullptr
};

}  // namespace lstm_ext
