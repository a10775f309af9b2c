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
// float on the host uses branch-free approximations, so that the CPU loops vectorise: exp a polynomial (<= 1 ulp;
// the sigmoid <= 2.5 ulp), tanh a rational function (<= 5.4 ulp, |error| <= 3.1e-7; three times the speed of
// 1 - 2 / (e^2x + 1), which made tanh 40 % of the B=1 H=8 forward step). scripts/fit_activations.py fits both;
// tests/test_ops.py::test_float32_activation_error holds the kernel's tanh and sigmoid to these bounds. double,
// and the GPU, use the C library's.

#if !defined(__CUDA_ARCH__)
// e^x = 2^n e^r with n = round(x / ln 2), r = x - n ln 2 (ln 2 in two parts), e^r a degree-6 polynomial. x is
// clamped to [-87.3, 88] so that 2^n is a normal float; 2^n comes from the bits of the rounding sum itself.
inline float exp_poly(float x) {
  x = x > 88.0f ? 88.0f : x;
  x = x < -87.3365f ? -87.3365f : x;
  constexpr float kRound = 12582912.0f + 127.0f;  // 1.5 * 2^23 + the exponent bias
  const float t = x * 1.44269504088896341f + kRound;  // its low mantissa bits hold n + 127
  const float n = t - kRound;
  float r = x - n * 0.693359375f;
  r = r + n * 2.12194440e-4f;
  float p = 1.381445094e-03f;
  p = p * r + 8.368776180e-03f;
  p = p * r + 4.166839272e-02f;
  p = p * r + 1.666651964e-01f;
  p = p * r + 4.999999404e-01f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int bits;
  __builtin_memcpy(&bits, &t, sizeof(bits));
  bits <<= 23;  // (n + 127) << 23: 2^n
  float scale;
  __builtin_memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh(x) = x P(x^2) / Q(x^2), |x| clamped to 9 (beyond it tanh rounds to +-1), the result to [-1, 1]: the
// coefficients come from scripts/fit_activations.py; the bound was measured over every float in [0, 12].
// csrc/cpu/paper_train.cpp keeps its own, older rational tanh on registers of lanes (tanh8, [13/6], of the same
// accuracy): the README's reproduction runs were made with it, and with this one their trajectories would differ.
inline float tanh_rational(float x) {
  x = x < -9.0f ? -9.0f : (x > 9.0f ? 9.0f : x);
  const float z = x * x;
  float p = 1.335496069e-08f;
  p = p * z + 2.060930092e-05f;
  p = p * z + 3.495601472e-03f;
  p = p * z + 1.338103712e-01f;
  p = p * z + 1.0f;
  float q = 7.776681628e-07f;
  q = q * z + 3.285656567e-04f;
  q = q * z + 2.587703243e-02f;
  q = q * z + 4.671435356e-01f;
  q = q * z + 1.0f;
  const float t = x * p / q;
  return t < -1.0f ? -1.0f : (t > 1.0f ? 1.0f : t);
}
#endif

template <typename T>
LSTM_HD T exp_(T x) {
#if !defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) return exp_poly(x);
#endif
  return exp(x);
}

template <typename T>
LSTM_HD T tanh_(T x) {
#if !defined(__CUDA_ARCH__)
  if constexpr (sizeof(T) == 4) return tanh_rational(x);
#endif
  return tanh(x);
}

template <typename T>
LSTM_HD T sigmoid(T x) {
  return T(1) / (T(1) + exp_(-x));
}

// Cell-input squash g and its derivative, written in terms of g's value.
template <typename T>
LSTM_HD T squash_g(Squash q, T x) {
  if (q == Squash::Tanh) return tanh_(x);
  if (q == Squash::Paper) return T(2) * tanh_(T(0.5) * x);
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
  if (q == Squash::Tanh) return tanh_(s);
  if (q == Squash::Paper) return tanh_(T(0.5) * s);
  return s;
}
template <typename T>
LSTM_HD T squash_h_grad(Squash q, T h) {
  if (q == Squash::Tanh) return T(1) - h * h;
  if (q == Squash::Paper) return T(0.5) * (T(1) - h * h);
  return T(1);
}

// ---- one cell, one step --------------------------------------------------------------------------

// The cell state s_t from the block's gates and the cell's squashed input g.
template <typename T>
LSTM_HD T cell_state(bool forget_gate, T y_phi, T s_prev, T y_iota, T g) {
  return forget_gate ? y_phi * s_prev + y_iota * g : s_prev + y_iota * g;
}

// The cell output y_c.
template <typename T>
LSTM_HD T cell_output(Squash q, T y_omega, T s) {
  return y_omega * squash_h(q, s);
}

// Gradients of one cell's step: on its block's gate activations (its share; a block sums over its
// cells), on its net input a_z, and on s_{t-1}.
template <typename T>
struct CellGrads {
  T d_iota, d_phi, d_omega;  // on y_iota, y_phi, y_omega
  T da_z;                    // on the net input a_z
  T ds_prev;                 // on s_{t-1}
};

// dy: gradient on y_c of step t; ds: gradient on s_t from step t+1.
template <typename T>
LSTM_HD CellGrads<T> cell_backward(Squash q, bool forget_gate, T y_iota, T y_phi, T y_omega, T g, T s_prev, T s,
                                   T dy, T ds) {
  const T h = squash_h(q, s);
  const T ds_t = ds + dy * y_omega * squash_h_grad(q, h);
  return {ds_t * g, ds_t * s_prev, dy * h, ds_t * y_iota * squash_g_grad(q, g), forget_gate ? ds_t * y_phi : ds_t};
}

// Gradient on a sigmoid gate's net input from the gradient on its activation y.
template <typename T>
LSTM_HD T gate_grad(T d_act, T y) {
  return d_act * y * (T(1) - y);
}

// ---- one block, one step --------------------------------------------------------------------------

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
    s[j] = cell_state(d.forget_gate, y_phi, s_prev[j], y_iota, g);
    y[j] = cell_output(d.squash, y_omega, s[j]);
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
    const CellGrads<T> c = cell_backward(d.squash, d.forget_gate, y_iota, y_phi, y_omega, act[d.z_row() + j],
                                         s_prev[j], s[j], dy[j], ds[j]);
    d_iota += c.d_iota;
    d_phi += c.d_phi;
    d_omega += c.d_omega;
    da[d.z_row() + j] = c.da_z;
    ds[j] = c.ds_prev;
  }
  da[d.iota_row() + blk] = gate_grad(d_iota, y_iota);
  da[d.omega_row() + blk] = gate_grad(d_omega, y_omega);
  if (d.forget_gate) da[d.phi_row() + blk] = gate_grad(d_phi, y_phi);
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
