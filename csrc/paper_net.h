// The shape of a 1997 paper network (HS97 Sec. 4, App. A.1), shared by the CPU trainer (cpu/paper_train.h,
// which describes the network and the learning rule) and the CUDA one (cuda/paper_train_cuda.cuh).
// Torch-free; plain data, copied by value into CUDA kernels.
//
//   hidden rows (H) of Wh:    [iota (n_b), phi (n_b, forget gate only), z (C), omega (n_b, output gate only)]
//   source columns (K) of Wh: [x_t (I), r_{t-1} (R), bias (1)],  r = [y_iota, (y_phi), (y_omega), y_c]
//   output columns (Ko) of Wo: [y_c (C), x_t (I), bias (1)]
#pragma once

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

}  // namespace lstm_ext
