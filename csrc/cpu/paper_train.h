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
using lstm_ext::PaperTrainArgs;


template <typename T>
void paper_train(const PaperTrainArgs<T>& p);

}  // namespace lstm_ext::cpu
