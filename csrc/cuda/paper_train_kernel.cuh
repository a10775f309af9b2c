// The kernel of paper_train_cuda.cuh (see there for the design). Included by paper_train.cu (nvcc) and by the CPU
// emulation (emu/paper_emu_check.cpp, g++ with LSTM_EXT_CUDA_EMULATE), which runs the same code with one host
// thread per CUDA thread against the CPU trainer.
#pragma once

#if !defined(LSTM_EXT_CUDA_EMULATE)
#include <cuda_runtime.h>
#ifndef LSTM_DEV
#define LSTM_DEV __device__ __forceinline__
#define LSTM_KERNEL __global__
#define LSTM_LAUNCH_BOUNDS(n) __launch_bounds__(n, 1)
#endif
#endif

#include "paper_train_cuda.cuh"

namespace lstm_ext::cuda {

namespace detail {

#if defined(LSTM_EXT_CUDA_EMULATE)
inline unsigned char* paper_smem() { return lstm_dynamic_smem(); }
#else
__device__ __forceinline__ unsigned char* paper_smem() {
  extern __shared__ __align__(16) unsigned char lstm_ext_paper_smem[];
  return lstm_ext_paper_smem;
}
#endif

template <typename T>
struct PaperKernelParams {
  PaperTrainArgs<T> a;
  T* workspace;  // the state in global memory (plan.in_smem false), else nullptr
};

template <typename T>
LSTM_DEV T max_(T a, T b) {
  return a < b ? b : a;
}
template <typename T>
LSTM_DEV T abs_(T a) {
  return a < T(0) ? -a : a;
}

template <typename T>
LSTM_KERNEL void LSTM_LAUNCH_BOUNDS(kPaperMaxThreads) paper_train_kernel(const PaperKernelParams<T> p) {
  const PaperTrainArgs<T>& a = p.a;
  const PaperNetDims d = a.d;
  const PaperLayout L = PaperLayout::of(d, a.learn, a.update_each_step);
  T* st = p.workspace != nullptr ? p.workspace : reinterpret_cast<T*>(paper_smem());
  T *WT = st + L.WT, *dWT = st + L.dWT, *WoT = st + L.WoT, *dWoT = st + L.dWoT;
  T *Sz = st + L.Sz, *Si = st + L.Si, *Sf = st + L.Sf, *src = st + L.src, *act = st + L.act;
  T *s = st + L.s, *s_new = st + L.s_new, *h = st + L.h, *yc = st + L.yc;
  T *kz = st + L.kz, *ki = st + L.ki, *kf = st + L.kf, *ds = st + L.ds, *dom = st + L.dom;
  T *yo = st + L.yo, *df = st + L.df, *e = st + L.e;

  const int tid = int(threadIdx.x), nt = int(blockDim.x);
  const int I = d.inputs, C = d.n_cells(), S = d.block_size, nb = d.n_blocks, H = d.hidden_rows(), K = d.cols(),
            O = d.outputs, Ko = d.out_cols(), R = d.rec_size(), n_gates = d.n_gates();
  const int zr = d.z_row(), orow = d.omega_row(), frow = d.phi_row();
  const bool fg = d.forget_gate, og = d.output_gate, h_id = d.squash == Squash::SigmoidIdentity;
  const bool learn = a.learn, each = a.update_each_step;
  const int64_t Tm = a.steps;

  for (int j = tid; j < H * K; j += nt) WT[(j % K) * H + j / K] = a.Wh[j];
  for (int j = tid; j < O * Ko; j += nt) WoT[(j % Ko) * O + j / Ko] = a.Wo[j];

  for (int64_t i = 0; i < a.n; ++i) {
    const int64_t len = a.lengths[i];
    const int64_t* xi = a.x_index != nullptr ? a.x_index + i * Tm : nullptr;
    // a new sequence: zero state, r_{-1} = 0, the bias column 1; zero sensitivities and summed changes
    for (int k = tid; k < K; k += nt) src[k] = k == K - 1 ? T(1) : T(0);
    for (int c = tid; c < C; c += nt) s[c] = T(0);
    if (learn) {
      for (int j = tid; j < K * C; j += nt) {
        Sz[j] = T(0);
        Si[j] = T(0);
        if (fg) Sf[j] = T(0);
      }
      if (!each) {
        for (int j = tid; j < K * H; j += nt) dWT[j] = T(0);
        for (int j = tid; j < Ko * O; j += nt) dWoT[j] = T(0);
      }
    }
    __syncthreads();
    if (len > 0) {  // step 0's inputs
      if (xi == nullptr) {
        for (int m = tid; m < I; m += nt) src[m] = a.x[(i * Tm) * I + m];
      } else if (tid == 0 && xi[0] >= 0) {
        src[xi[0]] = T(1);
      }
    }
    __syncthreads();
    T loss = 0, err_max = 0, err_last = 0;  // thread 0's
    bool any_error = false;
    for (int64_t t = 0; t < len; ++t) {
      // this step's active source columns: the inputs (all, or the one-hot column if any), r_{t-1}, the bias
      const int64_t hot = xi != nullptr ? xi[t] : -1;
      const int n_in = xi != nullptr ? (hot >= 0 ? 1 : 0) : I;
      const int n_act = n_in + R + 1;
      auto col = [&](int j) { return j < n_in ? (xi != nullptr ? int(hot) : j) : I + (j - n_in); };

      // 1. net inputs and activations of the hidden rows
      for (int r = tid; r < H; r += nt) {
        T acc = 0;
        for (int j = 0; j < n_act; ++j) {
          const int k = col(j);
          acc += WT[k * H + r] * src[k];
        }
        act[r] = r >= zr && r < zr + C ? squash_g(d.squash, acc) : sigmoid(acc);
      }
      __syncthreads();
      // 2. the cells: state, output, and the factors of the sensitivities
      for (int c = tid; c < C; c += nt) {
        const int b = c / S;
        const T io = act[b], g = act[zr + c], sp = s[c];
        const T ph = fg ? act[frow + b] : T(1);
        const T sn = fg ? ph * sp + io * g : sp + io * g;
        const T hv = h_id ? sn : squash_h(d.squash, sn);
        s_new[c] = sn;
        h[c] = hv;
        yc[c] = og ? act[orow + b] * hv : hv;
        if (learn) {
          kz[c] = io * squash_g_grad(d.squash, g);
          ki[c] = g * io * (T(1) - io);
          if (fg) kf[c] = sp * ph * (T(1) - ph);
        }
      }
      __syncthreads();
      // 3. sensitivities: S(t) = y_phi S(t-1) + k(t) src(t) (1997 cell: y_phi = 1, only active columns change)
      const T w = a.target_mask[i * Tm + t];
      const bool need_out = w != T(0) || a.y_all != nullptr || t == len - 1;
      if (learn) {
        if (fg) {
          for (int j = tid; j < K * C; j += nt) {
            const int k = j / C, c = j % C;
            const T ph = act[frow + c / S], v = src[k];
            Sz[j] = ph * Sz[j] + kz[c] * v;
            Si[j] = ph * Si[j] + ki[c] * v;
            Sf[j] = ph * Sf[j] + kf[c] * v;
          }
        } else {
          for (int j = tid; j < n_act * C; j += nt) {
            const int k = col(j / C), c = j % C;
            const T v = src[k];
            Sz[k * C + c] += kz[c] * v;
            Si[k * C + c] += ki[c] * v;
          }
        }
      }
      //    the output units (they see this step's cell outputs, the inputs through shortcuts, a bias)
      if (need_out) {
        for (int o = tid; o < O; o += nt) {
          T acc = WoT[(Ko - 1) * O + o];
          for (int c = 0; c < C; ++c) acc += WoT[c * O + o] * yc[c];
          for (int j = 0; j < n_in; ++j) {
            const int k = col(j);
            acc += WoT[(C + k) * O + o] * src[k];
          }
          yo[o] = d.linear_output ? acc : sigmoid(acc);
        }
      }
      __syncthreads();
      if (w != T(0)) {
        // 4. the output deltas
        const T* tgt = a.targets + (i * Tm + t) * O;
        for (int o = tid; o < O; o += nt) {
          const T diff = tgt[o] - yo[o];
          df[o] = diff;
          e[o] = d.linear_output ? w * diff : w * diff * yo[o] * (T(1) - yo[o]);
        }
        any_error = true;
        __syncthreads();
        if (tid == 0) {
          T err_step = 0;
          for (int o = 0; o < O; ++o) {
            loss += T(0.5) * w * df[o] * df[o];
            err_step = max_(err_step, abs_(df[o]));
          }
          err_max = max_(err_max, err_step);
          err_last = err_step;
        }
        if (learn) {
          const T scale = each ? a.lr : T(1);
          // 5. error on the cell states (the CEC carries it back through the sensitivities) and on the output
          //    gates (one step back); with the output weights of before this step's change
          for (int c = tid; c < C; c += nt) {
            T dyc = 0;
            for (int o = 0; o < O; ++o) dyc += WoT[c * O + o] * e[o];
            T v = dyc * scale;
            if (!h_id) v *= squash_h_grad(d.squash, h[c]);
            if (og) v *= act[orow + c / S];
            ds[c] = v;
          }
          if (og) {
            for (int b = tid; b < nb; b += nt) {
              T acc = 0;
              for (int c = b * S; c < (b + 1) * S; ++c) {
                T dyc = 0;
                for (int o = 0; o < O; ++o) dyc += WoT[c * O + o] * e[o];
                acc += dyc * h[c];
              }
              const T om = act[orow + b];
              dom[b] = acc * om * (T(1) - om) * scale;
            }
          }
          __syncthreads();
          // 6. weight changes (masked): into the weights now (per-step updates) or summed for the sequence's end
          T* dW = each ? WT : dWT;
          T* dWo = each ? WoT : dWoT;
          for (int j = tid; j < Ko * O; j += nt) {
            const int k = j / O, o = j % O;
            const T v = k < C ? yc[k] : (k < C + I ? src[k - C] : T(1));
            dWo[j] += a.Mo[o * Ko + k] * e[o] * (scale * v);
          }
          for (int j = tid; j < K * H; j += nt) {
            const int k = j / H, r = j % H;
            T g = 0;
            if (r < nb) {  // input gate of block r: its cells' sensitivities
              for (int c = r * S; c < (r + 1) * S; ++c) g += ds[c] * Si[k * C + c];
            } else if (fg && r < frow + nb) {  // forget gate
              for (int c = (r - frow) * S; c < (r - frow + 1) * S; ++c) g += ds[c] * Sf[k * C + c];
            } else if (r < zr + C) {  // cell input
              g = ds[r - zr] * Sz[k * C + r - zr];
            } else {  // output gate: onto this step's sources
              g = dom[r - orow] * src[k];
            }
            dW[j] += a.Mh[r * K + k] * g;
          }
        }
        __syncthreads();
      }
      // 7. outputs out; r_t into the recurrent columns, s_t becomes the state; the next step's inputs
      for (int o = tid; o < O; o += nt) {
        if (a.y_all != nullptr) a.y_all[(i * Tm + t) * O + o] = yo[o];
        if (t == len - 1) a.y_last[i * O + o] = yo[o];
      }
      for (int j = tid; j < R; j += nt) {
        T v;
        if (j < n_gates) {  // r's gates in row order: iota, (phi), (omega)
          const int grp = j / nb, b = j % nb;
          v = grp == 0 ? act[b] : (fg && grp == 1 ? act[frow + b] : act[orow + b]);
        } else {
          v = yc[j - n_gates];
        }
        src[I + j] = v;
      }
      for (int c = tid; c < C; c += nt) s[c] = s_new[c];
      if (t + 1 < len) {
        if (xi == nullptr) {
          for (int m = tid; m < I; m += nt) src[m] = a.x[((i * Tm) + t + 1) * I + m];
        } else if (tid == 0) {
          if (hot >= 0) src[hot] = T(0);
          if (xi[t + 1] >= 0) src[xi[t + 1]] = T(1);
        }
      }
      __syncthreads();
    }
    // after the sequence: outputs past its length are 0; the summed weight changes; the statistics
    const int64_t done = len > 0 ? len : 0;
    if (a.y_all != nullptr)
      for (int64_t j = tid; j < (Tm - done) * O; j += nt) a.y_all[(i * Tm + done) * O + j] = T(0);
    if (len <= 0)
      for (int o = tid; o < O; o += nt) a.y_last[i * O + o] = T(0);
    if (learn && !each && any_error) {
      for (int j = tid; j < K * H; j += nt) WT[j] += a.lr * dWT[j];
      for (int j = tid; j < Ko * O; j += nt) WoT[j] += a.lr * dWoT[j];
    }
    if (tid == 0) {
      a.loss[i] = loss;
      a.err_max[i] = err_max;
      a.err_last[i] = err_last;
    }
    __syncthreads();
  }
  if (learn) {
    for (int j = tid; j < H * K; j += nt) a.Wh[j] = WT[(j % K) * H + j / K];
    for (int j = tid; j < O * Ko; j += nt) a.Wo[j] = WoT[(j % Ko) * O + j / Ko];
  }
}

}  // namespace detail

}  // namespace lstm_ext::cuda
