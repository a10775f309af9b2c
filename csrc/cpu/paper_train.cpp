// On-line training of the paper networks (see paper_train.h for the network and the learning rule).
//
// The nets are tiny (2-8 cells), and a step is a chain of dependent operations, so the kernel is laid
// out for short latency rather than for throughput:
//  - the hidden rows are kept per cell: row group g (input gate, cell input, output gate, forget gate)
//    holds one lane per cell, a block's gate row repeated for each of its S cells. One step is then a
//    handful of whole-register operations (no gathers); the copies of a gate row get the same change.
//  - weights are kept transposed (source-major): each source column updates a run of lanes.
//  - one-hot inputs touch one input column per step: net inputs, sensitivities and weight changes
//    visit only the active columns, so a step of Exp 2c costs the same for 50 and 1000 symbols.
//  - every squash is a scaled tanh, f(a) = mul * tanh(pre * a) + add; for float a rational tanh.
//  - the lane arithmetic is written with vector types (GCC/Clang vector extensions): the compiler's
//    auto-vectoriser leaves these short fixed loops scalar.
//  - the paper's own shapes (float, no forget gate, truncated rule or evaluation; Shape below) have a step
//    with every loop unrolled that carries the recurrent sources r_{t-1} from step to step in registers,
//    each broadcast from its lane: the previous step's gates and cell outputs reach the next step's net
//    inputs without a round trip through memory, and reach the source vector only at the steps whose
//    outputs or error read it. It does the same operations in the same order as the general step, so both
//    give the same bits (tests/test_paper.py compares them, with LSTM_EXT_PAPER_GENERAL_STEP=1 for the
//    general step).
#include "paper_train.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>
#include <vector>

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wpsabi"  // 64-byte double vectors in inline helpers only
#endif

namespace lstm_ext::cpu {

namespace {

// 64-byte aligned storage: every lane vector starts a cache line (no split loads).
template <typename T>
struct Aligned {
  using value_type = T;
  Aligned() = default;
  template <typename U>
  Aligned(const Aligned<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(64, (n * sizeof(T) + 63) / 64 * 64);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  template <typename U>
  bool operator==(const Aligned<U>&) const {
    return true;
  }
};
template <typename T>
using Vec = std::vector<T, Aligned<T>>;

constexpr int kLanes = 8;  // cells are padded to whole AVX registers of float

inline int padded(int n) { return (n + kLanes - 1) / kLanes * kLanes; }

// Whole-register lane arithmetic on n = a multiple of 8 lanes (GCC/Clang vector extensions: the
// auto-vectoriser leaves these short fixed loops scalar).
typedef float V8f __attribute__((vector_size(32)));
typedef double V8d __attribute__((vector_size(64)));
template <typename T>
struct V8Of;
template <>
struct V8Of<float> {
  using type = V8f;
};
template <>
struct V8Of<double> {
  using type = V8d;
};
template <typename T>
using V8 = typename V8Of<T>::type;
template <typename T>
inline V8<T> load8(const T* p) {
  V8<T> v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <typename T>
inline void store8(T* p, V8<T> v) {
  std::memcpy(p, &v, sizeof v);
}
// y += a * x
template <typename T>
inline void axpy(T* y, const T* x, T a, int n) {
  for (int l = 0; l < n; l += 8) store8(y + l, load8(y + l) + a * load8(x + l));
}
// y *= x
template <typename T>
inline void scale_by(T* y, const T* x, int n) {
  for (int l = 0; l < n; l += 8) store8(y + l, load8(y + l) * load8(x + l));
}

// tanh on a register of lanes: for float a [13/6] rational approximation (|error| < 4e-7 on the clamped
// range; beyond it tanh is 1 to float precision), which has a short dependency chain; double uses the
// C library's. (cell.h's tanh_rational, the recurrence's, is another fit of the same accuracy; this one stays
// for the README's reproduction runs, which were made with it.)
inline V8f tanh8(V8f x) {
  const float c = 7.90531110763549805f;
  x = x < -c ? -c : (x > c ? c : x);
  const V8f x2 = x * x;
  V8f p = -2.76076847742355e-16f * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  V8f q = 1.19825839466702e-06f * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p * x / q;
}
inline V8d tanh8(V8d x) {
  for (int l = 0; l < 8; ++l) x[l] = std::tanh(x[l]);
  return x;
}

// An optimisation barrier: the compiler no longer knows v's value, so it neither shares products computed
// from it with others nor fuses a product into v's later sums (both change the rounding).
inline void opaque(V8f& v) {
#if defined(__AVX__)
  __asm__("" : "+x"(v));
#else
  __asm__("" : "+m"(v));
#endif
}

// Every lane of the result is lane l of v (one vpermps on AVX2).
inline V8f broadcast_lane(V8f v, int l) {
#if defined(__GNUC__) && !defined(__clang__)
  typedef int V8i __attribute__((vector_size(32)));
  return __builtin_shuffle(v, V8i{l, l, l, l, l, l, l, l});
#else
  return V8f{} + v[l];
#endif
}

// A net shape compiled with its loops unrolled: NG row groups (2: input gate and cell input; 3: and an
// output gate; no forget gate), NB blocks of S cells, NIN input columns visited per step (the dense
// inputs, or the one-hot slot). R: the recurrent sources [y_iota (NB), (y_omega (NB)), y_c (NB S)].
template <int NG_, int NB_, int S_, int NIN_>
struct Shape {
  static constexpr int NG = NG_, NB = NB_, S = S_, NIN = NIN_, C = NB_ * S_, R = NB_ * (NG_ - 1) + NB_ * S_;
};
struct AnyShape {};  // the general step: shapes, dtypes and rules known at run time

// The recurrent state a Shape's step carries in registers: this step's input gates (padded lanes 0),
// output gates, cell outputs and cell states.
struct StepRegs {
  V8f iota, omega, yc, s;
};

// A squash as a scaled tanh: f(a) = mul * tanh(pre * a) + add, with f' = pre * mul * (1 - u^2),
// u = (f - add) / mul. sigmoid(a) = 0.5 tanh(a / 2) + 0.5; the paper's g = 2 tanh(a / 2), h = tanh(a / 2).
struct Squasher {
  double pre, mul, add;
};
constexpr Squasher kSigmoid{0.5, 0.5, 0.5};
inline Squasher squash_g_of(Squash q) {
  if (q == Squash::Paper) return {0.5, 2.0, 0.0};
  if (q == Squash::Tanh) return {1.0, 1.0, 0.0};
  return kSigmoid;
}
inline Squasher squash_h_of(Squash q) {
  if (q == Squash::Paper) return {0.5, 1.0, 0.0};
  return {1.0, 1.0, 0.0};  // tanh (the identity h is handled apart)
}

// CP > 0: the padded cell count known at compile time (the lane loops unroll); 0: at run time.
// Sh: a Shape (T = float, CP = 8) for the unrolled step with register-carried sources, or AnyShape.
template <typename T, int CP, class Sh = AnyShape>
class PaperTrainer {
  static constexpr bool kShaped = !std::is_same_v<Sh, AnyShape>;

 public:
  explicit PaperTrainer(const PaperTrainArgs<T>& p)
      : p_(p),
        d_(p.d),
        I_(d_.inputs),
        C_(d_.n_cells()),
        S_(d_.block_size),
        nb_(d_.n_blocks),
        K_(d_.cols()),
        O_(d_.outputs),
        Ko_(d_.out_cols()),
        Cp_(CP > 0 ? CP : padded(C_)),
        Op_(padded(O_)),
        gO_(d_.output_gate ? 2 : -1),
        gF_(d_.forget_gate ? (d_.output_gate ? 3 : 2) : -1),
        ng_(2 + int(d_.output_gate) + int(d_.forget_gate)),
        Hp_(ng_ * Cp_),
        h_identity_(d_.squash == Squash::SigmoidIdentity) {
    WhT_.assign(size_t(K_ + 1) * Hp_, T(0));
    MhT_.assign(size_t(K_ + 1) * Hp_, T(0));
    dWhT_.assign(size_t(K_ + 1) * Hp_, T(0));
    WoT_.assign(size_t(Ko_) * Op_, T(0));
    MoT_.assign(size_t(Ko_) * Op_, T(0));
    dWoT_.assign(size_t(Ko_) * Op_, T(0));
    Sz_.assign(size_t(K_ + 1) * Cp_, T(0));
    Si_.assign(size_t(K_ + 1) * Cp_, T(0));
    Sf_.assign(d_.forget_gate ? size_t(K_ + 1) * Cp_ : 0, T(0));
    src_.assign(K_ + 1, T(0));
    active_.assign(K_ + 1, 0);
    for (auto* v : {&act_, &pre_, &mul_, &add_}) v->assign(Hp_, T(0));
    for (auto* v : {&real_, &s_, &s_new_, &h_, &yc_, &kz_, &ki_, &kf_, &ds_, &dyc_, &dom_, &tmp_}) v->assign(Cp_, T(0));
    yo_.assign(Op_, T(0));
    e_.assign(Op_, T(0));
    if (p.learn && !p.truncate) {  // the tape of one sequence, for back-propagation through time
      const size_t steps = size_t(std::max<int64_t>(p.steps, 1));
      tape_r_.assign(steps * d_.rec_size(), T(0));
      tape_act_.assign(steps * Hp_, T(0));
      tape_s_prev_.assign(steps * Cp_, T(0));
      tape_h_.assign(steps * Cp_, T(0));
      tape_e_.assign(steps * Op_, T(0));
      tape_has_e_.assign(steps, 0);
      dr_.assign(d_.rec_size(), T(0));
      dr_prev_.assign(d_.rec_size(), T(0));
      ds_carry_.assign(Cp_, T(0));
      da_.assign(Hp_, T(0));
      count_.assign(Hp_, T(0));
      for (int g = 0; g < ng_; ++g)  // a gate row counts once per block in the recurrent back-projection
        for (int c = 0; c < C_; ++c) count_[g * Cp_ + c] = (g == 1 || c % S_ == 0) ? T(1) : T(0);
    }
    for (int c = 0; c < C_; ++c) real_[c] = T(1);

    // internal row (group, lane c) <-> public row of Wh
    row_of_.assign(Hp_, -1);
    for (int c = 0; c < C_; ++c) {
      const int b = c / S_;
      row_of_[0 * Cp_ + c] = b;  // input gates are the first n_b rows
      row_of_[1 * Cp_ + c] = d_.z_row() + c;
      if (gO_ >= 0) row_of_[gO_ * Cp_ + c] = d_.omega_row() + b;
      if (gF_ >= 0) row_of_[gF_ * Cp_ + c] = d_.phi_row() + b;
    }
    for (int r = 0; r < Hp_; ++r) {
      if (row_of_[r] < 0) continue;
      for (int k = 0; k < K_; ++k) {
        WhT_[size_t(k) * Hp_ + r] = p.Wh[size_t(row_of_[r]) * K_ + k];
        MhT_[size_t(k) * Hp_ + r] = p.Mh[size_t(row_of_[r]) * K_ + k];
      }
    }
    for (int o = 0; o < O_; ++o)
      for (int k = 0; k < Ko_; ++k) {
        WoT_[size_t(k) * Op_ + o] = p.Wo[size_t(o) * Ko_ + k];
        MoT_[size_t(k) * Op_ + o] = p.Mo[size_t(o) * Ko_ + k];
      }
    // the squash of each row group
    g_ = squash_g_of(d_.squash);
    hq_ = squash_h_of(d_.squash);
    for (int g = 0; g < ng_; ++g) {
      const Squasher f = g == 1 ? g_ : kSigmoid;
      for (int c = 0; c < Cp_; ++c) {
        pre_[g * Cp_ + c] = T(f.pre);
        mul_[g * Cp_ + c] = T(f.mul);
        add_[g * Cp_ + c] = T(f.add);
      }
    }
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
    for (int r = 0; r < Hp_; ++r) {
      const int c = r % Cp_;
      if (row_of_[r] < 0 || (r / Cp_ != 1 && c % S_ != 0)) continue;  // a gate row: from its block's first cell
      for (int k = 0; k < K_; ++k) p_.Wh[size_t(row_of_[r]) * K_ + k] = WhT_[size_t(k) * Hp_ + r];
    }
    for (int o = 0; o < O_; ++o)
      for (int k = 0; k < Ko_; ++k) p_.Wo[size_t(o) * Ko_ + k] = WoT_[size_t(k) * Op_ + o];
  }

 private:
  int Cp() const {
    if constexpr (CP > 0) return CP;
    return Cp_;
  }

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
    const bool full = learn && !p_.truncate;
    StepRegs regs{};  // a Shape's r_{-1} = 0 and s_{-1} = 0
    for (int64_t t = 0; t < len; ++t) {
      const T w = p_.target_mask[i * p_.steps + t];
      const bool need_out = w != T(0) || p_.y_all != nullptr || t == len - 1;
      int n_active = n_fixed_;
      if constexpr (kShaped) {
        shaped_step(regs, i, t, learn, need_out);
      } else {
        n_active = load_inputs(i, t);
        forward_hidden(n_active);
        if (full)
          record_step(t);
        else if (learn)
          carry_sensitivities(n_active);
      }
      if (need_out) forward_output(n_active);
      if (w != T(0)) {
        const T* tgt = p_.targets + (i * p_.steps + t) * O_;
        T err_step = 0;
        for (int k = 0; k < O_; ++k) {
          const T diff = tgt[k] - yo_[k];
          loss += T(0.5) * w * diff * diff;
          err_step = std::max(err_step, std::abs(diff));
          e_[k] = d_.linear_output ? w * diff : w * diff * yo_[k] * (T(1) - yo_[k]);
        }
        err_max = std::max(err_max, err_step);
        err_last = err_step;
        if (full) {
          std::copy(e_.begin(), e_.end(), tape_e_.begin() + t * Op_);
          tape_has_e_[t] = 1;
          any_error = true;
        } else if (learn) {
          backprop_error(n_active);
          any_error = true;
        }
      }
      if (p_.y_all != nullptr) std::copy(yo_.begin(), yo_.begin() + O_, p_.y_all + (i * p_.steps + t) * O_);
      if (t == len - 1) std::copy(yo_.begin(), yo_.begin() + O_, p_.y_last + i * O_);
      if constexpr (!kShaped) store_recurrent_source();  // a Shape's step carries r_t and s_t in registers
    }
    if (p_.y_all != nullptr)
      std::fill(p_.y_all + (i * p_.steps + std::max<int64_t>(len, 0)) * O_, p_.y_all + (i + 1) * p_.steps * O_, T(0));
    if (len <= 0) std::fill(p_.y_last + i * O_, p_.y_last + (i + 1) * O_, T(0));
    if (full && any_error) backward_through_time(i, len);
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
      if (m >= 0) src_[m] = T(1);
      active_[0] = m >= 0 ? int(m) : K_;  // no input this step: the zero column
      return n_fixed_;
    }
    std::copy(p_.x + (i * p_.steps + t) * I_, p_.x + (i * p_.steps + t + 1) * I_, src_.begin());
    return n_fixed_;
  }

  T source(int j) const { return src_[active_[j]]; }

  void forward_hidden(int n_active) {
    const int Cp = this->Cp(), Hp = ng_ * Cp;
    T* a = act_.data();
    const int* cols = active_.data();
    const T* src = src_.data();
    const T* W = WhT_.data();
    for (int r0 = 0; r0 < Hp; r0 += kLanes) {  // net inputs, one register of rows at a time
      V8<T> acc0 = load8(W + size_t(cols[0]) * Hp + r0) * src[cols[0]];
      V8<T> acc1 = {};  // two partial sums: a shorter chain of dependent adds
      int j = 1;
      for (; j + 2 <= n_active; j += 2) {
        acc0 += load8(W + size_t(cols[j]) * Hp + r0) * src[cols[j]];
        acc1 += load8(W + size_t(cols[j + 1]) * Hp + r0) * src[cols[j + 1]];
      }
      if (j < n_active) acc0 += load8(W + size_t(cols[j]) * Hp + r0) * src[cols[j]];
      const V8<T> x = acc0 + acc1;
      store8(a + r0, load8(mul_.data() + r0) * tanh8(load8(pre_.data() + r0) * x) + load8(add_.data() + r0));
    }
    const T hp = T(hq_.pre), hm = T(hq_.mul);
    for (int c = 0; c < Cp; c += kLanes) {
      const V8<T> iota = load8(a + c) * load8(real_.data() + c);  // padded lanes: a closed input gate
      store8(a + c, iota);
      const V8<T> g = load8(a + Cp + c);
      const V8<T> s = load8(s_.data() + c);
      const V8<T> s_new = (gF_ >= 0 ? load8(a + gF_ * Cp + c) * s : s) + iota * g;
      const V8<T> h = h_identity_ ? s_new : hm * tanh8(hp * s_new);
      store8(s_new_.data() + c, s_new);
      store8(h_.data() + c, h);
      store8(yc_.data() + c, gO_ >= 0 ? load8(a + gO_ * Cp + c) * h : h);
    }
  }

  // load_inputs, forward_hidden and carry_sensitivities of a Shape in one unrolled step: the recurrent sources
  // come from the registers of the previous step (st), and st becomes this step's. The same operations in the
  // same order as the general step (the net input's two partial sums over the active columns, one each for odd
  // and even positions), so the same bits. need_src: the outputs or the error of this step read the sources
  // (x_t, r_{t-1}) from src_, so they are stored there too.
  __attribute__((always_inline)) inline void shaped_step(StepRegs& st, int64_t i, int64_t t, bool learn, bool need_src) {
    constexpr int NG = Sh::NG, NB = Sh::NB, S = Sh::S, NIN = Sh::NIN, R = Sh::R, Hp = NG * kLanes;
    constexpr int NJ = NIN + R + 1;  // active columns: inputs (or the one-hot slot), r_{t-1}, bias
    static_assert(std::is_same_v<T, float> && CP == kLanes && (NG == 2 || NG == 3) && NB * S <= kLanes);
    // column j of WhT_ / the sensitivities: the inputs' (dense: 0..NIN-1; one-hot: this step's), then those of
    // r_{t-1} and the bias, which follow the I_ input columns
    size_t k_in[NIN];
    V8f v[NJ];  // the source of column j, in every lane
    if (p_.x_index != nullptr) {
      load_inputs(i, t);
      k_in[0] = size_t(active_[0]);
      const T x = src_[active_[0]];
      v[0] = V8f{x, x, x, x, x, x, x, x};
    } else {
      const T* xt = p_.x + (i * p_.steps + t) * NIN;  // a dense Shape has NIN = I inputs
#pragma GCC unroll 16
      for (int j = 0; j < NIN; ++j) {
        const T x = xt[j];
        k_in[j] = size_t(j);
        v[j] = V8f{x, x, x, x, x, x, x, x};
        if (need_src) src_[j] = x;
      }
    }
#pragma GCC unroll 32
    for (int r = 0; r < R; ++r) {
      if (r < NB)
        v[NIN + r] = broadcast_lane(st.iota, r * S);
      else if (NG == 3 && r < 2 * NB)
        v[NIN + r] = broadcast_lane(st.omega, (r - NB) * S);
      else
        v[NIN + r] = broadcast_lane(st.yc, r - (NG - 1) * NB);
      if (need_src) src_[I_ + r] = v[NIN + r][0];
    }
    v[NJ - 1] = V8f{1, 1, 1, 1, 1, 1, 1, 1};
    const size_t k_rec = size_t(I_);
    auto col = [&](int j) { return j < NIN ? k_in[j] : k_rec + size_t(j - NIN); };
    const T* W = WhT_.data();
    auto w = [&](int j, int g) { return load8(W + col(j) * Hp + g * kLanes); };  // column j, row group g

    V8f acc0[NG], acc1[NG];
#pragma GCC unroll 4
    for (int g = 0; g < NG; ++g) {
      acc0[g] = w(0, g) * v[0];
      acc1[g] = V8f{};
      opaque(acc0[g]);  // the first product is rounded, as in the general step's loop (not fused into a sum)
      opaque(acc1[g]);
    }
#pragma GCC unroll 64
    for (int j = 1; j < NJ; ++j)
#pragma GCC unroll 4
      for (int g = 0; g < NG; ++g) {
        if (j % 2 == 1)
          acc0[g] += w(j, g) * v[j];
        else
          acc1[g] += w(j, g) * v[j];
      }
    V8f a[NG];
#pragma GCC unroll 4
    for (int g = 0; g < NG; ++g) {
      const int r0 = g * kLanes;
      a[g] = load8(mul_.data() + r0) * tanh8(load8(pre_.data() + r0) * (acc0[g] + acc1[g])) + load8(add_.data() + r0);
    }
    const V8f iota = a[0] * load8(real_.data());  // padded lanes: a closed input gate
    const V8f gz = a[1];
    const V8f s_new = st.s + iota * gz;
    const V8f h = h_identity_ ? s_new : T(hq_.mul) * tanh8(T(hq_.pre) * s_new);
    const V8f yc = NG == 3 ? a[2] * h : h;
    store8(act_.data(), iota);
#pragma GCC unroll 4
    for (int g = 1; g < NG; ++g) store8(act_.data() + g * kLanes, a[g]);
    store8(h_.data(), h);
    store8(yc_.data(), yc);

    if (learn) {  // carry_sensitivities
      const T gpm = T(g_.pre * g_.mul), ga = T(g_.add), inv_gm = T(1.0 / g_.mul);
      // opaque copies: else the compiler shares products with the forward above (gz * iota with s_new),
      // which then lose their fused multiply-adds (other bits than the general step's)
      V8f io = iota, gv = gz;
      opaque(io);
      opaque(gv);
      const V8f u = (gv - ga) * inv_gm;
      const V8f kz = io * gpm * (T(1) - u * u);
      const V8f ki = gv * io * (T(1) - io);
      T* Sz = Sz_.data();
      T* Si = Si_.data();
#pragma GCC unroll 64
      for (int j = 0; j < NJ; ++j) {
        T* sz = Sz + col(j) * kLanes;
        T* si = Si + col(j) * kLanes;
        store8(sz, load8(sz) + v[j] * kz);
        store8(si, load8(si) + v[j] * ki);
      }
    }
    st.iota = iota;
    if (NG == 3) st.omega = a[2];
    st.yc = yc;
    st.s = s_new;
  }

  // RTRL sensitivities of s_c(t) on the weights into cell c and into its block's input (and forget) gate:
  //   S(t) = y_phi(t) * S(t-1) + k(t) * src(t)   (the 1997 cell: y_phi = 1, the CEC)
  void carry_sensitivities(int n_active) {
    const int Cp = this->Cp();
    const T* __restrict iota = act_.data();
    const T* __restrict g = act_.data() + Cp;
    const T* __restrict s = s_.data();
    T* __restrict kz = kz_.data();
    T* __restrict ki = ki_.data();
    T* __restrict kf = kf_.data();
    const T gpm = T(g_.pre * g_.mul), ga = T(g_.add), inv_gm = T(1.0 / g_.mul);
    for (int c = 0; c < Cp; c += kLanes) {
      const V8<T> io = load8(iota + c), gv = load8(g + c);
      const V8<T> u = (gv - ga) * inv_gm;
      store8(kz + c, io * gpm * (T(1) - u * u));
      store8(ki + c, gv * io * (T(1) - io));
    }
    if (gF_ >= 0) {
      const T* phi = act_.data() + gF_ * Cp;
      for (int c = 0; c < Cp; c += kLanes) {
        const V8<T> f = load8(phi + c);
        store8(kf + c, load8(s + c) * f * (T(1) - f));
      }
      for (int k = 0; k < K_; ++k) {
        scale_by(&Sz_[size_t(k) * Cp], phi, Cp);
        scale_by(&Si_[size_t(k) * Cp], phi, Cp);
        scale_by(&Sf_[size_t(k) * Cp], phi, Cp);
      }
    }
    T* Sz = Sz_.data();
    T* Si = Si_.data();
    T* Sf = Sf_.data();
    for (int j = 0; j < n_active; ++j) {
      const T v = source(j);
      const size_t k = size_t(active_[j]) * Cp;
      axpy(Sz + k, kz, v, Cp);
      axpy(Si + k, ki, v, Cp);
      if (gF_ >= 0) axpy(Sf + k, kf, v, Cp);
    }
  }

  void forward_output(int n_active) {
    const int Op = Op_;
    T* yo = yo_.data();
    const T* Wo = WoT_.data();
    for (int k = 0; k < Op; k += kLanes) {
      V8<T> acc = load8(Wo + size_t(Ko_ - 1) * Op + k);  // bias
      for (int c = 0; c < C_; ++c) acc += load8(Wo + size_t(c) * Op + k) * yc_[c];
      for (int j = 0; j < n_active && active_[j] < I_; ++j)
        acc += load8(Wo + size_t(C_ + active_[j]) * Op + k) * source(j);
      store8(yo + k, d_.linear_output ? acc : T(0.5) * tanh8(T(0.5) * acc) + T(0.5));
    }
  }

  // v (Cp lanes), in place: each lane the sum over its block's lanes (a block's gate row gets its
  // cells' sum). Padded lanes hold 0 and stay 0.
  void block_sum(T* v) const {
    for (int b = 0; b < nb_; ++b) {
      T acc = 0;
      for (int c = b * S_; c < (b + 1) * S_; ++c) acc += v[c];
      for (int c = b * S_; c < (b + 1) * S_; ++c) v[c] = acc;
    }
  }

  // The error e_ (output deltas) of this step: weight changes of the output units, the output gates
  // (one step back) and, through the sensitivities, the cells and input/forget gates.
  void backprop_error(int n_active) {
    const bool now = p_.update_each_step;
    const T scale = now ? p_.lr : T(1);
    T* dWo = now ? WoT_.data() : dWoT_.data();
    T* dWh = now ? WhT_.data() : dWhT_.data();
    const int Op = Op_, Cp = this->Cp(), Hp = ng_ * Cp;
    const T* e = e_.data();
    // error on the cell outputs (with the output weights of before this step's change)
    for (int c = 0; c < C_; ++c) {
      V8<T> acc = {};
      for (int k = 0; k < Op; k += kLanes) acc += load8(&WoT_[size_t(c) * Op + k]) * load8(e + k);
      T sum = 0;
      for (int l = 0; l < kLanes; ++l) sum += acc[l];
      dyc_[c] = sum;
    }
    auto output_column = [&](int col, T v) {
      T* dw = dWo + size_t(col) * Op;
      const T* m = &MoT_[size_t(col) * Op];
      const T sv = scale * v;
      for (int k = 0; k < Op; k += kLanes) store8(dw + k, load8(dw + k) + load8(m + k) * load8(e + k) * sv);
    };
    for (int c = 0; c < C_; ++c) output_column(c, yc_[c]);
    for (int j = 0; j < n_active && active_[j] < I_; ++j) output_column(C_ + active_[j], source(j));
    output_column(Ko_ - 1, T(1));

    // error on the cell states (the only path back in time: the CEC, carried by the sensitivities)
    const T* dyc = dyc_.data();
    const T* h = h_.data();
    T* ds = ds_.data();
    const T* omega = gO_ >= 0 ? act_.data() + gO_ * Cp : nullptr;
    const T hpm = T(hq_.pre * hq_.mul), inv_hm = T(1.0 / hq_.mul);
    for (int c = 0; c < Cp; c += kLanes) {
      const V8<T> u = load8(h + c) * inv_hm;
      V8<T> d = load8(dyc + c) * scale;
      if (!h_identity_) d *= hpm * (T(1) - u * u);
      if (omega) d *= load8(omega + c);
      store8(ds + c, d);
    }
    const bool per_block = S_ > 1;
    T* tmp = tmp_.data();
    for (int k = 0; k < K_; ++k) {
      T* dw = dWh + size_t(k) * Hp;
      const T* m = &MhT_[size_t(k) * Hp];
      const T* sz = &Sz_[size_t(k) * Cp];
      const T* si = &Si_[size_t(k) * Cp];
      for (int c = 0; c < Cp; c += kLanes) {  // cell inputs
        store8(dw + Cp + c, load8(dw + Cp + c) + load8(m + Cp + c) * load8(ds + c) * load8(sz + c));
        store8(tmp + c, load8(ds + c) * load8(si + c));
      }
      if (per_block) block_sum(tmp);
      for (int c = 0; c < Cp; c += kLanes)  // input gates
        store8(dw + c, load8(dw + c) + load8(m + c) * load8(tmp + c));
      if (gF_ >= 0) {
        const T* sf = &Sf_[size_t(k) * Cp];
        for (int c = 0; c < Cp; c += kLanes) store8(tmp + c, load8(ds + c) * load8(sf + c));
        if (per_block) block_sum(tmp);
        T* dwf = dw + gF_ * Cp;
        const T* mf = m + gF_ * Cp;
        for (int c = 0; c < Cp; c += kLanes) store8(dwf + c, load8(dwf + c) + load8(mf + c) * load8(tmp + c));
      }
    }
    // output gates: one step back, onto this step's sources
    if (gO_ >= 0) {
      T* dom = dom_.data();
      for (int c = 0; c < Cp; c += kLanes) store8(dom + c, load8(dyc + c) * load8(h + c));
      if (per_block) block_sum(dom);
      for (int c = 0; c < Cp; c += kLanes) {
        const V8<T> o = load8(omega + c);
        store8(dom + c, load8(dom + c) * o * (T(1) - o) * scale);
      }
      for (int j = 0; j < n_active; ++j) {
        const T v = source(j);
        T* dw = dWh + size_t(active_[j]) * Hp + gO_ * Cp;
        const T* m = &MhT_[size_t(active_[j]) * Hp + gO_ * Cp];
        for (int c = 0; c < Cp; c += kLanes) store8(dw + c, load8(dw + c) + load8(m + c) * load8(dom + c) * v);
      }
    }
  }

  // The full gradient: what the backward pass needs of step t (before s_t becomes the state).
  void record_step(int64_t t) {
    const int Cp = this->Cp(), Hp = ng_ * Cp, R = d_.rec_size();
    std::copy(src_.begin() + I_, src_.begin() + I_ + R, tape_r_.begin() + t * R);
    std::copy(act_.begin(), act_.begin() + Hp, tape_act_.begin() + t * Hp);
    std::copy(s_.begin(), s_.begin() + Cp, tape_s_prev_.begin() + t * Cp);
    std::copy(h_.begin(), h_.begin() + Cp, tape_h_.begin() + t * Cp);
    tape_has_e_[t] = 0;
  }

  // Back-propagation through time over one sequence (the full gradient) into dWhT_ / dWoT_, masked.
  void backward_through_time(int64_t i, int64_t len) {
    const int Cp = this->Cp(), Hp = ng_ * Cp, Op = Op_, R = d_.rec_size();
    const int n_gates = d_.n_gates();
    const int r_phi = nb_, r_omega = nb_ * (1 + int(d_.forget_gate));
    std::fill(dr_.begin(), dr_.end(), T(0));
    std::fill(ds_carry_.begin(), ds_carry_.end(), T(0));
    T* dyc = dyc_.data();
    T* tmp = tmp_.data();
    T* da = da_.data();
    for (int64_t t = len - 1; t >= 0; --t) {
      const T* act = &tape_act_[t * Hp];
      const T* iota = act;
      const T* g = act + Cp;
      const T* h = &tape_h_[t * Cp];
      const T* s_prev = &tape_s_prev_[t * Cp];
      const T* r_prev = &tape_r_[t * R];
      const T* e = &tape_e_[t * Op];
      const int64_t col = p_.x_index != nullptr ? p_.x_index[i * p_.steps + t] : -1;
      const T* x = p_.x != nullptr ? p_.x + (i * p_.steps + t) * I_ : nullptr;
      // the cell outputs: from this step's outputs and, through the recurrent weights, from step t+1
      std::fill(dyc, dyc + Cp, T(0));
      for (int c = 0; c < C_; ++c) dyc[c] = dr_[n_gates + c];
      if (tape_has_e_[t]) {
        for (int c = 0; c < C_; ++c) {
          T acc = 0;
          for (int k = 0; k < O_; ++k) acc += WoT_[size_t(c) * Op + k] * e[k];
          dyc[c] += acc;
        }
        for (int c = 0; c < C_; ++c) {
          const T yct = (gO_ >= 0 ? act[gO_ * Cp + c] : T(1)) * h[c];
          axpy(&dWoT_[size_t(c) * Op], e, yct, Op);
        }
        if (x != nullptr)
          for (int m = 0; m < I_; ++m) axpy(&dWoT_[size_t(C_ + m) * Op], e, x[m], Op);
        else if (col >= 0)
          axpy(&dWoT_[size_t(C_ + col) * Op], e, T(1), Op);
        axpy(&dWoT_[size_t(Ko_ - 1) * Op], e, T(1), Op);
      }
      // the cell: output gate, state (with the CEC's carry from t+1), input gate, cell input, forget gate
      const T* omega = gO_ >= 0 ? act + gO_ * Cp : nullptr;
      const T* phi = gF_ >= 0 ? act + gF_ * Cp : nullptr;
      T* da_i = da;
      T* da_z = da + Cp;
      T* da_o = gO_ >= 0 ? da + gO_ * Cp : nullptr;
      T* da_f = gF_ >= 0 ? da + gF_ * Cp : nullptr;
      const T hpm = T(hq_.pre * hq_.mul), inv_hm = T(1.0 / hq_.mul);
      const T gpm = T(g_.pre * g_.mul), ga = T(g_.add), inv_gm = T(1.0 / g_.mul);
      if (da_o != nullptr) {
        for (int c = 0; c < Cp; ++c) tmp[c] = dyc[c] * h[c];
        block_sum(tmp);
        for (int c = 0; c < C_; ++c) tmp[c] += dr_[r_omega + c / S_];
        for (int c = 0; c < Cp; ++c) da_o[c] = tmp[c] * omega[c] * (T(1) - omega[c]);
      }
      for (int c = 0; c < Cp; ++c) {
        const T u = h[c] * inv_hm;
        const T hgrad = h_identity_ ? T(1) : hpm * (T(1) - u * u);
        ds_[c] = dyc[c] * (omega ? omega[c] : T(1)) * hgrad + ds_carry_[c];
      }
      for (int c = 0; c < Cp; ++c) tmp[c] = ds_[c] * g[c];
      block_sum(tmp);
      for (int c = 0; c < C_; ++c) tmp[c] += dr_[c / S_];
      for (int c = 0; c < Cp; ++c) da_i[c] = tmp[c] * iota[c] * (T(1) - iota[c]);
      for (int c = 0; c < Cp; ++c) {
        const T u = (g[c] - ga) * inv_gm;
        da_z[c] = ds_[c] * iota[c] * gpm * (T(1) - u * u);
      }
      if (da_f != nullptr) {
        for (int c = 0; c < Cp; ++c) tmp[c] = ds_[c] * s_prev[c];
        block_sum(tmp);
        for (int c = 0; c < C_; ++c) tmp[c] += dr_[r_phi + c / S_];
        for (int c = 0; c < Cp; ++c) da_f[c] = tmp[c] * phi[c] * (T(1) - phi[c]);
        for (int c = 0; c < Cp; ++c) ds_carry_[c] = ds_[c] * phi[c];
      } else {
        std::copy(ds_.begin(), ds_.end(), ds_carry_.begin());
      }
      // weight gradients onto this step's sources: x_t, r_{t-1}, bias
      if (x != nullptr)
        for (int m = 0; m < I_; ++m) axpy(&dWhT_[size_t(m) * Hp], da, x[m], Hp);
      else if (col >= 0)
        axpy(&dWhT_[size_t(col) * Hp], da, T(1), Hp);
      for (int j = 0; j < R; ++j) axpy(&dWhT_[size_t(I_ + j) * Hp], da, r_prev[j], Hp);
      axpy(&dWhT_[size_t(K_ - 1) * Hp], da, T(1), Hp);
      // the gradient on r_{t-1}, through the recurrent weights (each public row once)
      for (int j = 0; j < R; ++j) {
        const T* w = &WhT_[size_t(I_ + j) * Hp];
        T acc = 0;
        for (int r = 0; r < Hp; ++r) acc += w[r] * da[r] * count_[r];
        dr_prev_[j] = acc;
      }
      std::swap(dr_, dr_prev_);
    }
    // masked weights stay as they are
    for (size_t j = 0; j < dWhT_.size(); ++j) dWhT_[j] *= MhT_[j];
    for (size_t j = 0; j < dWoT_.size(); ++j) dWoT_[j] *= MoT_[j];
  }

  // r_t = [y_iota, (y_phi), (y_omega), y_c] into the recurrent columns; s_t becomes the state.
  void store_recurrent_source() {
    const int Cp = this->Cp();
    T* r = &src_[I_];
    const T* a = act_.data();
    int j = 0;
    for (int b = 0; b < nb_; ++b) r[j++] = a[b * S_];
    if (gF_ >= 0)
      for (int b = 0; b < nb_; ++b) r[j++] = a[gF_ * Cp + b * S_];
    if (gO_ >= 0)
      for (int b = 0; b < nb_; ++b) r[j++] = a[gO_ * Cp + b * S_];
    for (int c = 0; c < C_; ++c) r[j++] = yc_[c];
    std::swap(s_, s_new_);
  }

  const PaperTrainArgs<T>& p_;
  const PaperNetDims d_;
  const int I_, C_, S_, nb_, K_, O_, Ko_;
  const int Cp_, Op_;       // padded to whole vector registers
  const int gO_, gF_, ng_;  // row groups: 0 input gate, 1 cell input, gO_ output gate, gF_ forget gate
  const int Hp_;            // ng_ * Cp_ internal rows
  const bool h_identity_;
  Squasher g_{}, hq_{};
  int n_fixed_ = 0;
  // Source-major copies; column K is an all-zero column, the one-hot slot of a step without input.
  Vec<T> WhT_, MhT_, dWhT_;  // (K + 1, Hp)
  Vec<T> WoT_, MoT_, dWoT_;  // (Ko, Op)
  Vec<T> Sz_, Si_, Sf_;      // (K + 1, Cp) sensitivities of s_c
  Vec<T> src_;               // (K + 1) x_t, r_{t-1}, 1, 0
  Vec<int> active_;          // source columns that can be non-zero this step
  Vec<int> row_of_;          // (Hp) the public row of Wh of each internal row (-1: padding)
  Vec<T> act_, pre_, mul_, add_;  // (Hp) net inputs, then activations; the squash of each row
  Vec<T> real_, s_, s_new_, h_, yc_, kz_, ki_, kf_, ds_, dyc_, dom_, tmp_;  // (Cp)
  Vec<T> yo_, e_;                                                           // (Op)
  // the full gradient: one sequence's tape and the backward pass's carries
  Vec<T> tape_r_, tape_act_, tape_s_prev_, tape_h_, tape_e_;  // (T, R | Hp | Cp | Cp | Op)
  Vec<char> tape_has_e_;                                      // (T)
  Vec<T> dr_, dr_prev_, ds_carry_, da_, count_;               // (R), (R), (Cp), (Hp), (Hp)
};

}  // namespace

// The shapes of the paper's nets (HS97): Exp 1 (4x1, 3x2), 2a/2b, 2c, 3, 4/5 (dense 2 inputs), 6a, 6b.
template <class... Shapes>
struct ShapeList {
  // Runs p with the unrolled step of the Shape it has, if any: float, no forget gate, the truncated rule or
  // no learning (the full gradient records a tape: the general step).
  static bool run(const PaperTrainArgs<float>& p) {
    const PaperNetDims& d = p.d;
    if (d.forget_gate || (p.learn && !p.truncate) || padded(d.n_cells()) != kLanes) return false;
    const int ng = 2 + int(d.output_gate), nin = p.x_index != nullptr ? 1 : d.inputs;
    return ((ng == Shapes::NG && d.n_blocks == Shapes::NB && d.block_size == Shapes::S && nin == Shapes::NIN
                 ? (PaperTrainer<float, kLanes, Shapes>(p).run(), true)
                 : false) ||
            ...);
  }
};
using PaperShapes = ShapeList<Shape<3, 4, 1, 1>, Shape<3, 3, 2, 1>, Shape<2, 1, 1, 1>, Shape<3, 2, 1, 1>,
                              Shape<3, 3, 1, 1>, Shape<3, 2, 2, 2>, Shape<3, 2, 2, 1>>;

// LSTM_EXT_PAPER_GENERAL_STEP=1: every net trains with the general step (tests compare the two bit for bit).
static bool general_step_only() {
  const char* v = std::getenv("LSTM_EXT_PAPER_GENERAL_STEP");
  return v != nullptr && v[0] == '1';
}

template <typename T>
void paper_train(const PaperTrainArgs<T>& p) {
  if constexpr (std::is_same_v<T, float>) {
    if (!general_step_only() && PaperShapes::run(p)) return;
  }
  // the paper nets have at most 8 cells: their lane count is fixed at compile time
  if (padded(p.d.n_cells()) == kLanes) return PaperTrainer<T, kLanes>(p).run();
  PaperTrainer<T, 0>(p).run();
}

template void paper_train<float>(const PaperTrainArgs<float>&);
template void paper_train<double>(const PaperTrainArgs<double>&);

}  // namespace lstm_ext::cpu
