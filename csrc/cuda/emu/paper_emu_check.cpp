// Runs the CUDA training kernel of the paper nets (paper_train_kernel.cuh) under the CPU emulation (emulate.h)
// against the CPU trainer (cpu/paper_train.cpp), over the nets' variants: forget gate, output gate, the three
// squashes, blocks of 1 or 2 cells, dense or one-hot inputs (with steps without input), several outputs, linear
// or logistic outputs, masked weights, evaluation or training with per-step or per-sequence changes, targets at
// every step or at the end, variable lengths (0 included), with and without all outputs; the state in shared
// memory or in the global workspace; the planned thread count and an odd one that leaves every loop a remainder.
//
//   g++ -std=c++20 -O1 -pthread -I csrc csrc/cuda/emu/paper_emu_check.cpp csrc/cpu/paper_train.cpp -o paper_emu
//   ./paper_emu [ci|full]
// Exit status 0 when every case matches.
#include "emulate.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../../cpu/paper_train.h"
#include "../paper_train_kernel.cuh"

using namespace lstm_ext;

namespace {

int failures = 0, cases = 0;

struct Case {
  PaperNetDims d;
  bool one_hot, learn, each, every_step_target, y_all, in_smem;
  int threads;  // 0: the planned count
};

template <typename T>
void run_case(const Case& cs, std::mt19937& rng, double tol) {
  const PaperNetDims& d = cs.d;
  const int H = d.hidden_rows(), K = d.cols(), O = d.outputs, Ko = d.out_cols(), I = d.inputs;
  const int64_t n = 4, Tm = 7;
  std::uniform_real_distribution<double> uni(-1.0, 1.0);
  std::vector<T> Wh(size_t(H) * K), Mh(Wh.size()), Wo(size_t(O) * Ko), Mo(Wo.size());
  for (size_t j = 0; j < Wh.size(); ++j) {
    Mh[j] = T(uni(rng) > -0.8 ? 1 : 0);  // about one weight in ten does not exist
    Wh[j] = T(0.8 * uni(rng)) * Mh[j];
  }
  for (size_t j = 0; j < Wo.size(); ++j) {
    Mo[j] = T(uni(rng) > -0.8 ? 1 : 0);
    Wo[j] = T(0.8 * uni(rng)) * Mo[j];
  }
  std::vector<T> x(cs.one_hot ? 0 : size_t(n * Tm * I));
  for (auto& v : x) v = T(uni(rng));
  std::vector<int64_t> xi(cs.one_hot ? size_t(n * Tm) : 0);
  for (auto& v : xi) v = int64_t(rng() % (I + 1)) - 1;  // -1: a step without input
  const int64_t lens[] = {Tm, 3, 0, Tm - 1};
  std::vector<int64_t> lengths(lens, lens + n);
  std::vector<T> targets(size_t(n * Tm * O)), mask(size_t(n * Tm), T(0));
  for (auto& v : targets) v = T(0.5 + 0.5 * uni(rng));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < lengths[i]; ++t)
      if (cs.every_step_target || t == lengths[i] - 1) mask[i * Tm + t] = T(t % 3 == 1 ? 0.5 : 1.0);
  const T lr = T(0.7);

  auto args_for = [&](std::vector<T>& wh, std::vector<T>& wo, std::vector<T>& out) {
    PaperTrainArgs<T> p{};
    p.d = d;
    p.Wh = wh.data();
    p.Mh = Mh.data();
    p.Wo = wo.data();
    p.Mo = Mo.data();
    p.n = n;
    p.steps = Tm;
    p.x = cs.one_hot ? nullptr : x.data();
    p.x_index = cs.one_hot ? xi.data() : nullptr;
    p.lengths = lengths.data();
    p.targets = targets.data();
    p.target_mask = mask.data();
    p.lr = lr;
    p.learn = cs.learn;
    p.update_each_step = cs.each;
    T* o = out.data();
    p.loss = o;
    p.err_max = o + n;
    p.err_last = o + 2 * n;
    p.y_last = o + 3 * n;
    p.y_all = cs.y_all ? o + 3 * n + n * O : nullptr;
    return p;
  };
  const size_t n_out = size_t(3 * n + n * O + n * Tm * O);
  std::vector<T> wh_c = Wh, wo_c = Wo, out_c(n_out, T(0));
  cpu::paper_train<T>(args_for(wh_c, wo_c, out_c));

  std::vector<T> wh_g = Wh, wo_g = Wo, out_g(n_out, T(std::nan("")));  // NaN: an output nobody writes shows up
  const PaperTrainArgs<T> g = args_for(wh_g, wo_g, out_g);  // the same arguments, the kernel's copies
  cuda::PaperTrainPlan plan = cuda::plan_paper_train<T>(d, cs.learn, cs.each, cs.in_smem ? 1 << 20 : 0);
  if (cs.threads > 0) plan.threads = cs.threads;
  std::vector<T> ws(plan.workspace_bytes / sizeof(T) + 1, T(std::nan("")));
  const cuda::detail::PaperKernelParams<T> params{g, plan.in_smem ? nullptr : ws.data()};
  emu_launch(&cuda::detail::paper_train_kernel<T>, 1, plan.threads, plan.in_smem ? plan.state_bytes : 0, params);

  char buf[300];
  std::snprintf(buf, sizeof buf,
                "%s I=%d nb=%d S=%d O=%d fg=%d og=%d sq=%d lin=%d onehot=%d learn=%d each=%d every=%d yall=%d "
                "smem=%d threads=%d",
                sizeof(T) == 8 ? "f64" : "f32", I, d.n_blocks, d.block_size, O, d.forget_gate, d.output_gate,
                int(d.squash), d.linear_output, cs.one_hot, cs.learn, cs.each, cs.every_step_target, cs.y_all,
                plan.in_smem, plan.threads);
  const size_t n_cmp = cs.y_all ? n_out : size_t(3 * n + n * O);
  const bool ok = emu_close("Wh", buf, wh_g.data(), wh_c.data(), wh_c.size(), tol) &&
                  emu_close("Wo", buf, wo_g.data(), wo_c.data(), wo_c.size(), tol) &&
                  emu_close("outputs", buf, out_g.data(), out_c.data(), n_cmp, tol);
  ++cases;
  if (!ok) ++failures;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "ci";
  std::mt19937 rng(1997);
  const Squash squashes[] = {Squash::Paper, Squash::Tanh, Squash::SigmoidIdentity};
  int variant = 0;
  for (int fg = 0; fg < 2; ++fg)
    for (int og = 0; og < 2; ++og)
      for (int sq = 0; sq < 3; ++sq)
        for (int S = 1; S <= 2; ++S)
          for (int one_hot = 0; one_hot < 2; ++one_hot)
            for (int learn_mode = 0; learn_mode < 3; ++learn_mode) {  // evaluation, per sequence, per step
              ++variant;
              if (mode == "ci" && variant % 3 != 0 && !(fg == 0 && og == 1 && sq == 0)) continue;
              PaperNetDims d{};
              d.inputs = one_hot ? 5 : 2;
              d.n_blocks = 1 + variant % 3;
              d.block_size = S;
              d.outputs = 1 + variant % 3;
              d.forget_gate = fg;
              d.output_gate = og;
              d.squash = squashes[sq];
              d.linear_output = variant % 4 == 1;
              Case cs{d, bool(one_hot), learn_mode > 0, learn_mode == 2, variant % 2 == 0, variant % 5 != 0,
                      variant % 7 != 3, variant % 6 == 5 ? 7 : 0};
              run_case<double>(cs, rng, 1e-9);
              run_case<float>(cs, rng, 2e-3);
            }
  std::printf("%d cases, %d failures\n", cases, failures);
  return failures == 0 ? 0 : 1;
}
