// On-line training of the paper networks (see paper_train.h for the network and the learning rule).
//
// The nets are tiny (2-16 hidden rows), so everything is a short loop over one step's vectors; weights
// are kept transposed (source-major) so that each source column updates a contiguous run of rows.
// One-hot inputs touch one input column per step: net inputs, sensitivities and weight changes visit
// only the active columns, so a step of Exp 2c costs the same for 50 and 1000 distractor symbols.
#include "paper_train.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace lstm_ext::cpu {

namespace {

constexpr int kLanes = 8;  // rows and cells are padded to whole AVX registers of float
inline int padded(int n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Every squash of the paper nets is a scaled logistic: f(a) = mul * sigmoid(pre * a) + add
// (gates: sigmoid; paper g = 4 sigmoid - 2 = 2 tanh(x/2), h = 2 sigmoid - 1; tanh(x) = 2 sigmoid(2x) - 1),
// except the identity h of Exps 2a/2b. Its derivative in terms of its value v:
//   f' = pre * (v - add) * (mul - (v - add)) / mul.
struct Logistic {
  float pre, mul, add;
};
inline Logistic squash_g_logistic(Squash q) {
  if (q == Squash::Paper) return {1.f, 4.f, -2.f};
  if (q == Squash::Tanh) return {2.f, 2.f, -1.f};
  return {1.f, 1.f, 0.f};
}
inline Logistic squash_h_logistic(Squash q) {
  if (q == Squash::Paper) return {1.f, 2.f, -1.f};
  return {2.f, 2.f, -1.f};  // tanh (the identity h is handled apart)
}

template <typename T>
class PaperTrainer {
 public:
  explicit PaperTrainer(const PaperTrainArgs<T>& p)
      : p_(p),
        d_(p.d),
        I_(d_.inputs),
        C_(d_.n_cells()),
        S_(d_.block_size),
        nb_(d_.n_blocks),
        H_(d_.hidden_rows()),
        K_(d_.cols()),
        O_(d_.outputs),
        Ko_(d_.out_cols()),
        Hp_(padded(H_)),
        Cp_(padded(C_)),
        Op_(padded(O_)),
        h_identity_(d_.squash == Squash::SigmoidIdentity),
        WhT_(size_t(K_ + 1) * Hp_, T(0)),
        MhT_(size_t(K_ + 1) * Hp_, T(0)),
        dWhT_(size_t(K_ + 1) * Hp_, T(0)),
        WoT_(size_t(Ko_) * Op_, T(0)),
        MoT_(size_t(Ko_) * Op_, T(0)),
        dWoT_(size_t(Ko_) * Op_, T(0)),
        Sz_(size_t(K_ + 1) * Cp_, T(0)),
        Si_(size_t(K_ + 1) * Cp_, T(0)),
        Sf_(d_.forget_gate ? size_t(K_ + 1) * Cp_ : 0, T(0)),
        src_(K_ + 1, T(0)),
        active_(K_),
        pre_(Hp_, T(0)),
        mul_(Hp_, T(0)),
        add_(Hp_, T(0)),
        act_(Hp_, T(0)),
        cell_block_(Cp_, 0),
        iota_c_(Cp_, T(0)),
        phi_c_(Cp_, T(1)),
        omega_c_(Cp_, T(1)),
        s_(Cp_, T(0)),
        s_new_(Cp_, T(0)),
        h_(Cp_, T(0)),
        yc_(Cp_, T(0)),
        kz_(Cp_, T(0)),
        ki_(Cp_, T(0)),
        kf_(Cp_, T(0)),
        ds_(Cp_, T(0)),
        dyc_(Cp_, T(0)),
        dom_(nb_, T(0)),
        yo_(Op_, T(0)),
        e_(Op_, T(0)) {
    for (int r = 0; r < H_; ++r)
      for (int k = 0; k < K_; ++k) {
        WhT_[size_t(k) * Hp_ + r] = p.Wh[size_t(r) * K_ + k];
        MhT_[size_t(k) * Hp_ + r] = p.Mh[size_t(r) * K_ + k];
      }
    for (int o = 0; o < O_; ++o)
      for (int k = 0; k < Ko_; ++k) {
        WoT_[size_t(k) * Op_ + o] = p.Wo[size_t(o) * Ko_ + k];
        MoT_[size_t(k) * Op_ + o] = p.Mo[size_t(o) * Ko_ + k];
      }
    // activation of each hidden row: gates sigmoid, cell inputs g
    const Logistic g = squash_g_logistic(d_.squash);
    for (int r = 0; r < Hp_; ++r) {
      const bool z = r >= d_.z_row() && r < d_.z_row() + C_;
      pre_[r] = z ? g.pre : 1;
      mul_[r] = z ? g.mul : 1;
      add_[r] = z ? g.add : 0;
    }
    g_ = g;
    hq_ = squash_h_logistic(d_.squash);
    for (int c = 0; c < Cp_; ++c) cell_block_[c] = c < C_ ? c / S_ : 0;
    // source columns visited every step: inputs (all of them, or the one-hot column), r_{t-1}, bias
    n_fixed_ = 0;
    if (p.x_index == nullptr)
      for (int m = 0; m < I_; ++m) active_[n_fixed_++] = m;
    else
      ++n_fixed_;  // slot 0: this step's one-hot column
    for (int k = I_; k < K_; ++k) active_[n_fixed_++] = k;
  }

  void run() {
    for (int64_t i = 0; i < p_.n; ++i) sequence(i);
    if (!p_.learn) return;
    for (int r = 0; r < H_; ++r)
      for (int k = 0; k < K_; ++k) p_.Wh[size_t(r) * K_ + k] = WhT_[size_t(k) * Hp_ + r];
    for (int o = 0; o < O_; ++o)
      for (int k = 0; k < Ko_; ++k) p_.Wo[size_t(o) * Ko_ + k] = WoT_[size_t(k) * Op_ + o];
  }

 private:
  void sequence(int64_t i) {
    const int64_t len = p_.lengths[i];
    const bool learn = p_.learn;
    std::fill(s_.begin(), s_.end(), T(0));
    std::fill(src_.begin(), src_.end(), T(0));  // r_{-1} = 0, the bias column, the zero column
    src_[K_ - 1] = T(1);
    if (learn) {
      std::fill(Sz_.begin(), Sz_.end(), T(0));
      std::fill(Si_.begin(), Si_.end(), T(0));
      std::fill(Sf_.begin(), Sf_.end(), T(0));
      if (!p_.update_each_step) {
        std::fill(dWhT_.begin(), dWhT_.end(), T(0));
        std::fill(dWoT_.begin(), dWoT_.end(), T(0));
      }
    }
    T loss = 0, err_max = 0, err_last = 0;
    bool any_error = false;
    for (int64_t t = 0; t < len; ++t) {
      const int n_active = load_inputs(i, t);
      forward_hidden(n_active);
      if (learn) carry_sensitivities(n_active);
      const T w = p_.target_mask[i * p_.steps + t];
      const bool need_out = w != T(0) || p_.y_all != nullptr || t == len - 1;
      if (need_out) forward_output(n_active);
      if (w != T(0)) {
        const T* tgt = p_.targets + (i * p_.steps + t) * O_;
        T err_step = 0;
        for (int k = 0; k < O_; ++k) {
          const T diff = tgt[k] - yo_[k];
          loss += T(0.5) * w * diff * diff;
          err_step = std::max(err_step, std::abs(diff));
          e_[k] = w * diff * yo_[k] * (T(1) - yo_[k]);
        }
        err_max = std::max(err_max, err_step);
        err_last = err_step;
        if (learn) {
          backprop_error(n_active);
          any_error = true;
        }
      }
      if (p_.y_all != nullptr) std::copy(yo_.begin(), yo_.begin() + O_, p_.y_all + (i * p_.steps + t) * O_);
      if (t == len - 1) std::copy(yo_.begin(), yo_.begin() + O_, p_.y_last + i * O_);
      store_recurrent_source();
    }
    if (p_.y_all != nullptr)
      std::fill(p_.y_all + (i * p_.steps + std::max<int64_t>(len, 0)) * O_, p_.y_all + (i + 1) * p_.steps * O_, T(0));
    if (len <= 0) std::fill(p_.y_last + i * O_, p_.y_last + (i + 1) * O_, T(0));
    if (learn && !p_.update_each_step && any_error) {
      const T lr = p_.lr;
      T* __restrict w = WhT_.data();
      const T* __restrict dw = dWhT_.data();
      for (size_t j = 0; j < WhT_.size(); ++j) w[j] += lr * dw[j];
      T* __restrict wo = WoT_.data();
      const T* __restrict dwo = dWoT_.data();
      for (size_t j = 0; j < WoT_.size(); ++j) wo[j] += lr * dwo[j];
    }
    p_.loss[i] = loss;
    p_.err_max[i] = err_max;
    p_.err_last[i] = err_last;
  }

  // x_t into src_[0, I); returns how many entries of active_ (source columns that can be non-zero) count.
  int load_inputs(int64_t i, int64_t t) {
    if (p_.x_index != nullptr) {
      const int64_t* xi = p_.x_index + i * p_.steps;
      if (t > 0 && xi[t - 1] >= 0) src_[xi[t - 1]] = T(0);  // clear the previous step's one-hot column
      const int64_t m = xi[t];
      if (m >= 0) {
        src_[m] = T(1);
        active_[0] = int(m);
        return n_fixed_;
      }
      active_[0] = K_;  // no input this step: the zero column
      return n_fixed_;
    }
    std::copy(p_.x + (i * p_.steps + t) * I_, p_.x + (i * p_.steps + t + 1) * I_, src_.begin());
    return n_fixed_;
  }

  T source(int j) const { return src_[active_[j]]; }

  void forward_hidden(int n_active) {
    const int Hp = Hp_;
    T* __restrict a = act_.data();
    const int* __restrict cols = active_.data();
    const T* __restrict src = src_.data();
    const T* __restrict W = WhT_.data();
    for (int r0 = 0; r0 < Hp; r0 += kLanes) {  // net inputs, one register of rows at a time
      T acc[kLanes] = {};
      for (int j = 0; j < n_active; ++j) {
        const T v = src[cols[j]];
        const T* __restrict w = W + size_t(cols[j]) * Hp + r0;
        for (int l = 0; l < kLanes; ++l) acc[l] += w[l] * v;
      }
      for (int l = 0; l < kLanes; ++l) a[r0 + l] = acc[l];
    }
    const T* __restrict pre = pre_.data();
    const T* __restrict mul = mul_.data();
    const T* __restrict add = add_.data();
    for (int r = 0; r < Hp; ++r) a[r] = mul[r] / (T(1) + exp_(-pre[r] * a[r])) + add[r];

    const int zr = d_.z_row(), fr = d_.phi_row(), orow = d_.omega_row(), Cp = Cp_;
    const int* __restrict blk = cell_block_.data();
    T* __restrict iota_c = iota_c_.data();
    T* __restrict phi_c = phi_c_.data();
    T* __restrict omega_c = omega_c_.data();
    for (int c = 0; c < Cp; ++c) iota_c[c] = a[blk[c]];
    if (d_.forget_gate)
      for (int c = 0; c < Cp; ++c) phi_c[c] = a[fr + blk[c]];
    if (d_.output_gate)
      for (int c = 0; c < Cp; ++c) omega_c[c] = a[orow + blk[c]];
    const T* __restrict g = a + zr;  // C entries (past them: other rows; only lanes < C are used)
    const T* __restrict s = s_.data();
    T* __restrict s_new = s_new_.data();
    T* __restrict h = h_.data();
    T* __restrict yc = yc_.data();
    for (int c = 0; c < C_; ++c) s_new[c] = phi_c[c] * s[c] + iota_c[c] * g[c];
    if (h_identity_) {
      for (int c = 0; c < C_; ++c) h[c] = s_new[c];
    } else {
      const T hp = hq_.pre, hm = hq_.mul, ha = hq_.add;
      for (int c = 0; c < Cp; ++c) h[c] = hm / (T(1) + exp_(-hp * s_new[c])) + ha;
    }
    for (int c = 0; c < Cp; ++c) yc[c] = c < C_ ? omega_c[c] * h[c] : T(0);
  }

  // RTRL sensitivities of s_c(t) on the weights into cell c and into its block's input (and forget) gate:
  //   S(t) = y_phi(t) * S(t-1) + k(t) * src(t)   (the 1997 cell: y_phi = 1, the CEC)
  void carry_sensitivities(int n_active) {
    const int Cp = Cp_;
    const T* __restrict g = act_.data() + d_.z_row();
    const T* __restrict iota_c = iota_c_.data();
    const T* __restrict phi_c = phi_c_.data();
    const T* __restrict s = s_.data();
    T* __restrict kz = kz_.data();
    T* __restrict ki = ki_.data();
    T* __restrict kf = kf_.data();
    const T gp = g_.pre, gm = g_.mul, ga = g_.add;
    for (int c = 0; c < C_; ++c) {
      const T u = g[c] - ga;
      kz[c] = iota_c[c] * gp * u * (gm - u) / gm;
      ki[c] = g[c] * iota_c[c] * (T(1) - iota_c[c]);
      kf[c] = s[c] * phi_c[c] * (T(1) - phi_c[c]);
    }
    if (d_.forget_gate) {
      for (int k = 0; k < K_; ++k) {
        T* __restrict sz = &Sz_[size_t(k) * Cp];
        T* __restrict si = &Si_[size_t(k) * Cp];
        T* __restrict sf = &Sf_[size_t(k) * Cp];
        for (int c = 0; c < Cp; ++c) {
          sz[c] *= phi_c[c];
          si[c] *= phi_c[c];
          sf[c] *= phi_c[c];
        }
      }
    }
    for (int j = 0; j < n_active; ++j) {
      const T v = source(j);
      const size_t k = size_t(active_[j]);
      T* __restrict sz = &Sz_[k * Cp];
      T* __restrict si = &Si_[k * Cp];
      for (int c = 0; c < Cp; ++c) {
        sz[c] += kz[c] * v;
        si[c] += ki[c] * v;
      }
      if (d_.forget_gate) {
        T* __restrict sf = &Sf_[k * Cp];
        for (int c = 0; c < Cp; ++c) sf[c] += kf[c] * v;
      }
    }
  }

  void forward_output(int n_active) {
    const int Op = Op_;
    T* __restrict yo = yo_.data();
    std::fill(yo, yo + Op, T(0));
    auto add_column = [&](int col, T v) {
      const T* __restrict w = &WoT_[size_t(col) * Op];
      for (int k = 0; k < Op; ++k) yo[k] += w[k] * v;
    };
    for (int c = 0; c < C_; ++c) add_column(c, yc_[c]);
    for (int j = 0; j < n_active && active_[j] < I_; ++j) add_column(C_ + active_[j], source(j));
    add_column(Ko_ - 1, T(1));
    for (int k = 0; k < Op; ++k) yo[k] = T(1) / (T(1) + exp_(-yo[k]));
  }

  // The error e_ (output deltas) of this step: weight changes of the output units, the output gates
  // (one step back) and, through the sensitivities, the cells and input/forget gates.
  void backprop_error(int n_active) {
    const bool now = p_.update_each_step;
    const T scale = now ? p_.lr : T(1);
    T* dWo = now ? WoT_.data() : dWoT_.data();
    T* dWh = now ? WhT_.data() : dWhT_.data();
    const int Op = Op_, Hp = Hp_, Cp = Cp_;
    const T* __restrict e = e_.data();
    // error on the cell outputs (with the output weights of before this step's change)
    for (int c = 0; c < C_; ++c) {
      const T* __restrict w = &WoT_[size_t(c) * Op];
      T acc = 0;
      for (int k = 0; k < Op; ++k) acc += w[k] * e[k];
      dyc_[c] = acc;
    }
    auto output_column = [&](int col, T v) {
      T* __restrict dw = dWo + size_t(col) * Op;
      const T* __restrict m = &MoT_[size_t(col) * Op];
      const T sv = scale * v;
      for (int k = 0; k < Op; ++k) dw[k] += m[k] * sv * e[k];
    };
    for (int c = 0; c < C_; ++c) output_column(c, yc_[c]);
    for (int j = 0; j < n_active && active_[j] < I_; ++j) output_column(C_ + active_[j], source(j));
    output_column(Ko_ - 1, T(1));

    std::fill(dom_.begin(), dom_.end(), T(0));
    for (int c = 0; c < C_; ++c) {
      const T hv = h_[c];
      const T hgrad = h_identity_ ? T(1) : hq_.pre * (hv - hq_.add) * (hq_.mul - (hv - hq_.add)) / hq_.mul;
      ds_[c] = dyc_[c] * omega_c_[c] * hgrad * scale;
      dom_[cell_block_[c]] += dyc_[c] * hv;
    }
    // cells, input gates, forget gates: through the sensitivities (every source column)
    const int zr = d_.z_row(), fr = d_.phi_row();
    const T* __restrict ds = ds_.data();
    for (int k = 0; k < K_; ++k) {
      T* __restrict dw = dWh + size_t(k) * Hp;
      const T* __restrict m = &MhT_[size_t(k) * Hp];
      const T* __restrict sz = &Sz_[size_t(k) * Cp];
      const T* __restrict si = &Si_[size_t(k) * Cp];
      for (int c = 0; c < C_; ++c) dw[zr + c] += m[zr + c] * ds[c] * sz[c];
      for (int b = 0; b < nb_; ++b) {
        T acc = 0;
        for (int c = b * S_; c < (b + 1) * S_; ++c) acc += ds[c] * si[c];
        dw[b] += m[b] * acc;
      }
      if (d_.forget_gate) {
        const T* __restrict sf = &Sf_[size_t(k) * Cp];
        for (int b = 0; b < nb_; ++b) {
          T acc = 0;
          for (int c = b * S_; c < (b + 1) * S_; ++c) acc += ds[c] * sf[c];
          dw[fr + b] += m[fr + b] * acc;
        }
      }
    }
    // output gates: one step back, onto this step's sources
    if (d_.output_gate) {
      const int orow = d_.omega_row();
      for (int b = 0; b < nb_; ++b) {
        const T yo = act_[orow + b];
        dom_[b] *= yo * (T(1) - yo) * scale;
      }
      for (int j = 0; j < n_active; ++j) {
        const T v = source(j);
        T* __restrict dw = dWh + size_t(active_[j]) * Hp;
        const T* __restrict m = &MhT_[size_t(active_[j]) * Hp];
        for (int b = 0; b < nb_; ++b) dw[orow + b] += m[orow + b] * dom_[b] * v;
      }
    }
  }

  // r_t = [y_iota, (y_phi), (y_omega), y_c] into the recurrent columns; s_t becomes the state.
  void store_recurrent_source() {
    T* r = &src_[I_];
    const T* a = act_.data();
    int j = 0;
    for (int b = 0; b < nb_; ++b) r[j++] = a[b];
    if (d_.forget_gate)
      for (int b = 0; b < nb_; ++b) r[j++] = a[d_.phi_row() + b];
    if (d_.output_gate)
      for (int b = 0; b < nb_; ++b) r[j++] = a[d_.omega_row() + b];
    for (int c = 0; c < C_; ++c) r[j++] = yc_[c];
    std::swap(s_, s_new_);
  }

  const PaperTrainArgs<T>& p_;
  const PaperNetDims d_;
  const int I_, C_, S_, nb_, H_, K_, O_, Ko_;
  const int Hp_, Cp_, Op_;  // padded to whole vector registers
  const bool h_identity_;
  Logistic g_{}, hq_{};
  int n_fixed_ = 0;
  // Source-major copies; column K is an all-zero column, the one-hot slot of a step without input.
  std::vector<T> WhT_, MhT_, dWhT_;  // (K + 1, Hp)
  std::vector<T> WoT_, MoT_, dWoT_;  // (Ko, Op)
  std::vector<T> Sz_, Si_, Sf_;      // (K + 1, Cp) sensitivities of s_c
  std::vector<T> src_;               // (K + 1) x_t, r_{t-1}, 1, 0
  std::vector<int> active_;          // source columns that can be non-zero this step
  std::vector<T> pre_, mul_, add_;   // (Hp) activation of each hidden row
  std::vector<T> act_;               // (Hp) net inputs, then activations
  std::vector<int> cell_block_;      // (Cp) block of each cell
  std::vector<T> iota_c_, phi_c_, omega_c_, s_, s_new_, h_, yc_, kz_, ki_, kf_, ds_, dyc_;  // (Cp)
  std::vector<T> dom_;                                                                        // (n_b)
  std::vector<T> yo_, e_;                                                                     // (Op)
};

}  // namespace

template <typename T>
void paper_train(const PaperTrainArgs<T>& p) {
  PaperTrainer<T>(p).run();
}

template void paper_train<float>(const PaperTrainArgs<float>&);
template void paper_train<double>(const PaperTrainArgs<double>&);

}  // namespace lstm_ext::cpu
