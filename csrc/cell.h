// The cell math of lstm_ext: activations, the forward step and the backward step of one memory-cell
// block. ONE source for the CPU and the CUDA kernels; torch-free, so nvcc compiles it alone.
//
// Layout of one batch row (see lstm_ext/config.py): n_b blocks of S cells, C = n_b*S cells.
//   gate rows (G):  2000 cell [iota (n_b), phi (n_b), z (C), omega (n_b)]
//                   1997 cell [iota (n_b),           z (C), omega (n_b)]
//   recurrent source r (R):  "cells": y_c (C);  "all": [y_iota, (y_phi), y_omega, y_c]
// A block's gates multiply each of its S cells:
//   s_t = y_phi * s_{t-1} + y_iota * g(a_z)      (1997 cell: y_phi == 1, the constant error carousel)
//   y_c = y_omega * h(s_t)
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define LSTM_HD __host__ __device__ __forceinline__
#else
#define LSTM_HD inline
#endif

namespace lstm_ext {

using std::exp;  // float overloads on the host; CUDA provides the device ones
using std::tanh;

enum class Squash : int {
  Tanh = 0,             // g = h = tanh
  Paper = 1,            // g(x) = 2 tanh(x/2) = 4 sigmoid(x) - 2,  h(x) = tanh(x/2) = 2 sigmoid(x) - 1
  SigmoidIdentity = 2,  // g = sigmoid, h = identity (the 1997 paper's Exp 2a/2b)
};

// Sizes and flags of one recurrence. Plain data: copied by value into CUDA kernels.
struct CellDims {
  int n_blocks;      // n_b
  int block_size;    // S
  int n_cells;       // C = n_b * S
  int gate_rows;     // G = C + (2 | 3) * n_b
  int rec_size;      // R = C ("cells") or G ("all": every gate activation and cell output)
  bool forget_gate;  // 2000 cell
  bool feedback_all;
  bool truncate;     // the 1997 learning rule: no gradient through r_{t-1}
  Squash squash;

  LSTM_HD int gates_per_block() const { return forget_gate ? 3 : 2; }
  // Offsets of the row groups inside G.
  LSTM_HD int iota_row() const { return 0; }
  LSTM_HD int phi_row() const { return n_blocks; }  // forget gate only
  LSTM_HD int z_row() const { return forget_gate ? 2 * n_blocks : n_blocks; }
  LSTM_HD int omega_row() const { return z_row() + n_cells; }
  // Offsets inside r for feedback "all": gate activations in gate-row order, then y_c.
  LSTM_HD int r_gate(int group, int blk) const { return group * n_blocks + blk; }  // group 0 iota, 1 phi|omega, 2 omega
  LSTM_HD int r_cells() const { return feedback_all ? gates_per_block() * n_blocks : 0; }
};

inline CellDims make_cell_dims(int n_cells, int block_size, bool forget_gate, bool feedback_all,
                               bool truncate, Squash squash) {
  CellDims d{};
  d.block_size = block_size;
  d.n_cells = n_cells;
  d.n_blocks = n_cells / block_size;
  d.forget_gate = forget_gate;
  d.feedback_all = feedback_all;
  d.truncate = truncate;
  d.squash = squash;
  d.gate_rows = n_cells + d.gates_per_block() * d.n_blocks;
  d.rec_size = feedback_all ? d.gate_rows : n_cells;
  return d;
}

// ---- activations ---------------------------------------------------------------------------------

template <typename T>
LSTM_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp(-x));
}

// Cell-input squash g and its derivative, written in terms of g's value.
template <typename T>
LSTM_HD T squash_g(Squash q, T x) {
  if (q == Squash::Tanh) return tanh(x);
  if (q == Squash::Paper) return T(2) * tanh(T(0.5) * x);
  return sigmoid(x);
}
template <typename T>
LSTM_HD T squash_g_grad(Squash q, T g) {
  if (q == Squash::Tanh) return T(1) - g * g;
  if (q == Squash::Paper) return T(1) - T(0.25) * g * g;
  return g * (T(1) - g);
}

// Cell-output squash h and its derivative, written in terms of h's value.
template <typename T>
LSTM_HD T squash_h(Squash q, T s) {
  if (q == Squash::Tanh) return tanh(s);
  if (q == Squash::Paper) return tanh(T(0.5) * s);
  return s;
}
template <typename T>
LSTM_HD T squash_h_grad(Squash q, T h) {
  if (q == Squash::Tanh) return T(1) - h * h;
  if (q == Squash::Paper) return T(0.5) * (T(1) - h * h);
  return T(1);
}

// ---- one block, one step -------------------------------------------------------------------------

// Forward of block `blk` for one batch row.
//   a      (G)  in: net inputs; out: activations (sigmoid gates, g(a_z)) -- what the backward needs
//   s_prev (C)  cell state of step t-1
//   s      (C)  out: cell state of step t
//   y      (C)  out: cell outputs y_c of step t
template <typename T>
LSTM_HD void block_forward(const CellDims& d, int blk, T* a, const T* s_prev, T* s, T* y) {
  const T y_iota = sigmoid(a[d.iota_row() + blk]);
  const T y_omega = sigmoid(a[d.omega_row() + blk]);
  a[d.iota_row() + blk] = y_iota;
  a[d.omega_row() + blk] = y_omega;
  T y_phi = T(1);
  if (d.forget_gate) {
    y_phi = sigmoid(a[d.phi_row() + blk]);
    a[d.phi_row() + blk] = y_phi;
  }
  for (int k = 0; k < d.block_size; ++k) {
    const int j = blk * d.block_size + k;
    const T g = squash_g(d.squash, a[d.z_row() + j]);
    a[d.z_row() + j] = g;
    const T s_j = d.forget_gate ? y_phi * s_prev[j] + y_iota * g : s_prev[j] + y_iota * g;
    s[j] = s_j;
    y[j] = y_omega * squash_h(d.squash, s_j);
  }
}

// Gradient of the activations of block `blk` that feed back through r ("all" feedback), or 0.
template <typename T>
LSTM_HD void block_feedback_grads(const CellDims& d, int blk, const T* dr, T& d_iota, T& d_phi, T& d_omega) {
  d_iota = d_phi = d_omega = T(0);
  if (!d.feedback_all || dr == nullptr) return;
  d_iota = dr[d.r_gate(0, blk)];
  if (d.forget_gate) {
    d_phi = dr[d.r_gate(1, blk)];
    d_omega = dr[d.r_gate(2, blk)];
  } else {
    d_omega = dr[d.r_gate(1, blk)];
  }
}

// Backward of block `blk` for one batch row.
//   act    (G)  activations of step t (block_forward's output in a)
//   s_prev (C)  cell state of step t-1;  s (C) cell state of step t
//   dy     (C)  gradient on y_c of step t (from the outputs and, unless truncated, from r)
//   dr     (R)  gradient on r_t, read for the gate activations with "all" feedback; may be nullptr
//   ds     (C)  in: gradient on s_t from step t+1; out: gradient on s_{t-1}
//   da     (G)  out: gradient on the net inputs of step t
template <typename T>
LSTM_HD void block_backward(const CellDims& d, int blk, const T* act, const T* s_prev, const T* s,
                            const T* dy, const T* dr, T* ds, T* da) {
  const T y_iota = act[d.iota_row() + blk];
  const T y_omega = act[d.omega_row() + blk];
  const T y_phi = d.forget_gate ? act[d.phi_row() + blk] : T(1);
  T d_iota, d_phi, d_omega;
  block_feedback_grads(d, blk, dr, d_iota, d_phi, d_omega);
  for (int k = 0; k < d.block_size; ++k) {
    const int j = blk * d.block_size + k;
    const T h = squash_h(d.squash, s[j]);
    d_omega += dy[j] * h;
    const T ds_j = ds[j] + dy[j] * y_omega * squash_h_grad(d.squash, h);
    const T g = act[d.z_row() + j];
    d_iota += ds_j * g;
    d_phi += ds_j * s_prev[j];
    da[d.z_row() + j] = ds_j * y_iota * squash_g_grad(d.squash, g);
    ds[j] = d.forget_gate ? ds_j * y_phi : ds_j;
  }
  da[d.iota_row() + blk] = d_iota * y_iota * (T(1) - y_iota);
  da[d.omega_row() + blk] = d_omega * y_omega * (T(1) - y_omega);
  if (d.forget_gate) da[d.phi_row() + blk] = d_phi * y_phi * (T(1) - y_phi);
}

// The recurrent source r_t of one batch row from the step's activations and cell outputs.
//   act (G), y (C) -> r (R)
template <typename T>
LSTM_HD void gather_feedback(const CellDims& d, const T* act, const T* y, T* r) {
  if (d.feedback_all) {
    const int nb = d.n_blocks;
    for (int b = 0; b < nb; ++b) {
      r[d.r_gate(0, b)] = act[d.iota_row() + b];
      if (d.forget_gate) {
        r[d.r_gate(1, b)] = act[d.phi_row() + b];
        r[d.r_gate(2, b)] = act[d.omega_row() + b];
      } else {
        r[d.r_gate(1, b)] = act[d.omega_row() + b];
      }
    }
  }
  for (int j = 0; j < d.n_cells; ++j) r[d.r_cells() + j] = y[j];
}

}  // namespace lstm_ext
