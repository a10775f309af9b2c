// On-line training of the 1997 paper's networks inside the extension: one call trains on a chunk of
// sequences, one sequence after another, with the paper's learning rule. Torch-free (raw pointers,
// row-major, contiguous); csrc/paper_ops.cpp checks the tensors and calls it.
//
// The network (HS97 Sec. 4, App. A.1): I inputs -> one layer of n_b memory-cell blocks of S cells
// (C = n_b * S cells; a block's gates are shared by its cells) -> O output units, logistic as in the paper
// or linear (linear_output: an option the paper does not have).
//   hidden rows (H) of Wh:   [iota (n_b), phi (n_b, forget gate only), z (C), omega (n_b, output gate only)]
//   source columns (K) of Wh: [x_t (I), r_{t-1} (R), bias (1)],
//                             r = [y_iota, (y_phi), (y_omega), y_c]  (gate activations in row order, then cells)
//   output columns (Ko) of Wo: [y_c (C), x_t (I), bias (1)]       (the output at step t sees y_c of step t)
// Which connections exist (connectivity "F", "B", bias codes, shortcuts) is a 0/1 mask of the same
// shape as each weight matrix: a masked weight is never changed.
//
// The learning rule is the paper's truncated RTRL (App. A.1): sensitivities ds_c/dw are carried forward
// for the weights into cells, input gates (and forget gates); output gates get one-step backprop; no
// error flows back in time except through the cell states. Error: 1/2 sum of squared errors at the
// steps a target mask marks; plain gradient descent w += lr * (-dE/dw). Weights change after every
// step that carries error (update_each_step) or once at the end of every sequence. With error only at
// the sequence end the two are the same; with per-sequence updates this is exactly back-propagation
// through time with the recurrent inputs r_{t-1} treated as constants (CellConfig(truncate=True)).
// truncate = false computes the full gradient instead (HS97 Sec. 6): back-propagation through time over
// each sequence, through every recurrent connection, one weight change per sequence.
#pragma once

#include <cstdint>

#include "../paper_net.h"

namespace lstm_ext::cpu {

using lstm_ext::PaperNetDims;


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

template <typename T>
void paper_train(const PaperTrainArgs<T>& p);

}  // namespace lstm_ext::cpu
