// Runs the CUDA recurrence kernels under the CPU emulation (emulate.h) against the CPU kernels, over every cell
// configuration, with and without lengths, for batch sizes that leave padding rows in a tile, and for device
// limits that force each launch mode: one CTA per tile, groups of CTAs (flag barrier, exchange buffers), the
// reduction split over thread sets, more tiles than groups (a group runs them side by side, forward and backward,
// in one round or several, with tiles whose rows stop at different steps), and U slices in the global workspace. Every
// storage type: float64, float32, float16 and bfloat16 (the 16-bit ones against the float CPU kernel on the same
// rounded inputs, within one unit in the last place), the 16-bit ones also with the tensor-core product in each
// launch mode (within two); every vector access is checked for alignment.
//
//   g++ -std=c++20 -O1 -pthread -I csrc csrc/cuda/emu/emu_check.cpp csrc/cpu/recurrence_cpu.cpp -o emu_check
//   ./emu_check [full|quick|ci]     (ci: a subset that still covers every launch mode, ~50 s on 2 cores)
// Exit status 0 when every case matches and every launch mode was exercised; prints the coverage.
#include "emulate.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <type_traits>

#include "../../cpu/recurrence_cpu.h"
#include "../recurrence_kernels.cuh"

using namespace lstm_ext;
using namespace lstm_ext::cuda;
using namespace lstm_ext::cuda::detail;

namespace {

struct Coverage {
  int group1 = 0, group_n = 0, split = 0, looping = 0, interleaved = 0, global_u = 0, padded = 0, cases = 0;
  int interleaved_bwd = 0;     // (interleaved: forward) backward plans with tiles side by side
  int interleaved_uneven = 0, interleaved_uneven_bwd = 0;  // tiles side by side whose longest rows differ: fwd, bwd
  int rounds = 0, rounds_bwd = 0;  // tiles side by side in several rounds (not all their state fits): fwd, bwd
  int mma = 0, mma_group_n = 0, mma_split = 0, mma_global_u = 0;  // plans with the tensor-core product
  int cluster = 0, cluster_bwd = 0;  // groups as thread-block clusters (cluster_sync, not the flag barrier): fwd, bwd
  int dsmem = 0, cluster_l2 = 0;  // forward clusters exchanging r_t through distributed shared memory, through L2
  int dsmem_tiles = 0, dsmem_rounds = 0;  // the former with tiles side by side (r_s per tile); in several rounds
  int dsmem_bwd = 0, dsmem_bwd_tiles = 0, dsmem_mma = 0;  // backward clusters with da_t through distributed shared
                                                          // memory; with tiles side by side; either, tensor cores
};
Coverage cov;
int failures = 0;

int emu_occupancy(int, int threads, size_t smem, void* ctx) {
  const auto* dev = static_cast<const DeviceInfo*>(ctx);
  const int by_threads = dev->max_threads_per_sm / threads;
  const int by_smem = smem == 0 ? by_threads : int(size_t(dev->max_smem_per_sm) / smem);
  return by_threads < by_smem ? by_threads : by_smem;
}

// The CPU kernels' type for a storage type: itself, or float for the 16-bit types (the CUDA kernels compute in
// float and keep the cell state in float; only what they read and write is 16-bit).
template <typename T>
using RefType = std::conditional_t<sizeof(T) == 2, float, T>;

template <typename T>
T to_storage(double x) {
  return from_acc<T>(typename AccType<T>::type(x));
}

template <typename T>
const char* dtype_name() {
  if constexpr (std::is_same_v<T, double>) return "f64";
  if constexpr (std::is_same_v<T, float>) return "f32";
  if constexpr (std::is_same_v<T, __half>) return "f16";
  return "bf16";
}

// Tolerance: f32/f64 as the CPU and CUDA sums differ in order; the 16-bit types one unit in the last place (the
// kernels round each result once, from float), two with the tensor-core product (which rounds its operand r_{t-1}
// or da_t to the storage type as well).
template <typename T>
double tolerance(bool mma) {
  if constexpr (std::is_same_v<T, double>) return 1e-12;
  if constexpr (std::is_same_v<T, float>) return 2e-5;
  const double ulp = std::is_same_v<T, __half> ? 1.0 / 1024 : 1.0 / 128;  // 2^-10, 2^-7
  return mma ? 2 * ulp : ulp;
}

// Rounds `ref` to the values T holds and returns them as T: the CUDA kernel reads the T copy, the CPU kernel the
// rounded `ref`, so both see the same numbers.
template <typename T>
std::vector<T> to_device(std::vector<RefType<T>>& ref) {
  std::vector<T> dev(ref.size());
  for (size_t i = 0; i < ref.size(); ++i) {
    dev[i] = to_storage<T>(ref[i]);
    ref[i] = RefType<T>(emu_to_double(dev[i]));
  }
  return dev;
}

template <typename T>
struct Buffer {  // "device" memory, pre-filled with NaN so that an element nobody writes shows up
  std::vector<T> v;
  explicit Buffer(size_t n) : v(n + 1, to_storage<T>(std::nan(""))) {}
  T* p() { return v.data(); }
};

template <typename T, typename R>
bool close(const char* what, const std::string& ctx, const std::vector<T>& got, const std::vector<R>& want,
           size_t n, double tol) {
  return emu_close(what, ctx, got.data(), want.data(), n, tol);
}

template <typename T, typename P>
void launch_bt(bool fwd, int bt, const LaunchPlan& plan, const P& params) {
  const int grid = plan.group * plan.n_groups;
  const int cluster = plan.cluster ? plan.group : 0;  // the groups as thread-block clusters
  if constexpr (std::is_same_v<P, FwdKernelParams<T>>) {
    switch (bt) {
      case 1: emu_launch(&forward_kernel<T, 1>, grid, plan.threads, plan.smem_bytes, params, cluster); break;
      case 2: emu_launch(&forward_kernel<T, 2>, grid, plan.threads, plan.smem_bytes, params, cluster); break;
      case 4:
        if constexpr (max_batch_tile(int(sizeof(T))) >= 4)
          emu_launch(&forward_kernel<T, 4>, grid, plan.threads, plan.smem_bytes, params, cluster);
        break;
      default:
        if constexpr (max_batch_tile(int(sizeof(T))) >= 8)
          emu_launch(&forward_kernel<T, 8>, grid, plan.threads, plan.smem_bytes, params, cluster);
    }
  } else {
    switch (bt) {
      case 1: emu_launch(&backward_kernel<T, 1>, grid, plan.threads, plan.smem_bytes, params, cluster); break;
      case 2: emu_launch(&backward_kernel<T, 2>, grid, plan.threads, plan.smem_bytes, params, cluster); break;
      case 4:
        if constexpr (max_batch_tile(int(sizeof(T))) >= 4)
          emu_launch(&backward_kernel<T, 4>, grid, plan.threads, plan.smem_bytes, params, cluster);
        break;
      default:
        if constexpr (max_batch_tile(int(sizeof(T))) >= 8)
          emu_launch(&backward_kernel<T, 8>, grid, plan.threads, plan.smem_bytes, params, cluster);
    }
  }
}

// The workspace as the launcher hands it over: garbage except the zeroed barrier counters.
std::vector<double> make_workspace(bool fwd, const CellDims& d, const LaunchPlan& plan, int ts, int as) {
  std::vector<double> ws(plan.workspace_bytes / sizeof(double) + 2, std::nan(""));
  if (plan.group > 1) {
    const Workspace w = workspace_layout(fwd, d, plan, ts, as);
    std::memset(reinterpret_cast<unsigned char*>(ws.data()) + w.counters, 0, plan.n_groups * sizeof(unsigned));
  }
  return ws;
}

std::string describe(const CellDims& d, int T, int B, int varlen, const LaunchPlan& p, const char* dtype) {
  char buf[400];
  std::snprintf(buf, sizeof buf,
                "%s fg=%d S=%d C=%d fb=%s sq=%d tr=%d T=%d B=%d varlen=%d | bt=%d group=%d n_groups=%d tiles=%d "
                "side by side=%d threads=%d ks=%d u_smem=%d mma=%d cluster=%d dsmem=%d smem=%zu ws=%zu",
                dtype, d.forget_gate, d.block_size, d.n_cells, d.feedback_all ? "all" : "cells", int(d.squash),
                d.truncate, T, B, varlen, p.bt, p.group, p.n_groups, p.n_tiles, p.tiles, p.threads, p.ksplit, p.u_in_smem,
                p.mma, p.cluster, p.dsmem, p.smem_bytes, p.workspace_bytes);
  return buf;
}

template <typename T>
// varlen: 0 every row runs all T steps; 1 lengths mixed within a tile (T, 0, T/2, 1, T-1 by row); 2 lengths by
// runs of 4 rows (T, T/2, 0, 1), so that tiles differ in their longest row and some go idle early or never start.
void run_case(const CellDims& d, int T_, int B, int varlen, const DeviceInfo& dev, std::mt19937& rng) {
  using A = typename AccType<T>::type;
  using R = RefType<T>;
  const int G = d.gate_rows, Rn = d.rec_size, C = d.n_cells;
  const int ts = int(sizeof(T)), as = int(sizeof(A));
  DeviceInfo devc = dev;
  const LaunchPlan pf = plan_launch(true, d, B, dev, ts, as, &emu_occupancy, &devc);
  const LaunchPlan pb = plan_launch(false, d, B, dev, ts, as, &emu_occupancy, &devc);
  if (!pf.ok || !pb.ok) return;  // this device cannot run it: another variant will
  std::normal_distribution<double> nd;
  auto fill = [&](size_t n, double scale) {
    std::vector<R> v(n);
    for (auto& x : v) x = R(scale * nd(rng));
    return v;
  };
  std::vector<R> Ain = fill(size_t(T_) * B * G, 1.0), U = fill(size_t(G) * Rn, 1.0 / std::sqrt(double(Rn)));
  std::vector<R> r0 = fill(size_t(B) * Rn, 0.5), s0 = fill(size_t(B) * C, 1.0);
  const std::vector<T> Ain_d = to_device<T>(Ain), U_d = to_device<T>(U), r0_d = to_device<T>(r0),
                       s0_d = to_device<T>(s0);
  std::vector<int64_t> lengths(size_t(B), T_);
  if (varlen == 1) {
    const int64_t pattern[] = {T_, 0, T_ / 2, 1, T_ > 0 ? T_ - 1 : 0};
    for (int b = 0; b < B; ++b) lengths[size_t(b)] = pattern[b % 5];
  } else if (varlen == 2) {
    const int64_t pattern[] = {T_, T_ / 2, 0, T_ > 0 ? 1 : 0};
    for (int b = 0; b < B; ++b) lengths[size_t(b)] = pattern[(b / 4) % 4];
  }
  const int64_t* len = varlen ? lengths.data() : nullptr;
  const size_t nTBG = size_t(T_) * B * G, nTBC = size_t(T_) * B * C;
  const double tol = tolerance<T>(pf.mma || pb.mma);

  // CPU
  std::vector<R> y(nTBC), rT(size_t(B) * Rn), sT(size_t(B) * C), act(nTBG), s_all(nTBC);
  cpu::recurrence_forward<R>({d, T_, B, Ain.data(), U.data(), r0.data(), s0.data(), len, y.data(), rT.data(),
                              sT.data(), act.data(), s_all.data()});
  // emulated CUDA
  Buffer<T> gy(nTBC), grT(size_t(B) * Rn), gsT(size_t(B) * C), gact(nTBG), gs_all(nTBC);
  std::vector<double> wsf = make_workspace(true, d, pf, ts, as);
  FwdKernelParams<T> fp{{d, T_, B, Ain_d.data(), U_d.data(), r0_d.data(), s0_d.data(), len, gy.p(), grT.p(),
                         gsT.p(), gact.p(), gs_all.p()},
                        plan_args(true, d, pf, wsf.data(), ts, as)};
  launch_bt<T>(true, pf.bt, pf, fp);
  const std::string cf = "fwd " + describe(d, T_, B, varlen, pf, dtype_name<T>());
  bool ok = close("y", cf, gy.v, y, nTBC, tol) && close("r_T", cf, grT.v, rT, size_t(B) * Rn, tol) &&
            close("s_T", cf, gsT.v, sT, size_t(B) * C, tol) && close("act", cf, gact.v, act, nTBG, tol) &&
            close("s_all", cf, gs_all.v, s_all, nTBC, tol);
  // inference: act and s_all not kept (nullptr), the same y and final state
  Buffer<T> iy(nTBC), irT(size_t(B) * Rn), isT(size_t(B) * C);
  std::vector<double> wsi = make_workspace(true, d, pf, ts, as);
  FwdKernelParams<T> ip{{d, T_, B, Ain_d.data(), U_d.data(), r0_d.data(), s0_d.data(), len, iy.p(), irT.p(),
                         isT.p(), nullptr, nullptr},
                        plan_args(true, d, pf, wsi.data(), ts, as)};
  launch_bt<T>(true, pf.bt, pf, ip);
  const std::string ci = "fwd (inference) " + describe(d, T_, B, varlen, pf, dtype_name<T>());
  ok = ok && close("y", ci, iy.v, y, nTBC, tol) && close("r_T", ci, irT.v, rT, size_t(B) * Rn, tol) &&
       close("s_T", ci, isT.v, sT, size_t(B) * C, tol);

  // backward from the CPU forward's saved tensors (rounded to T for both)
  to_device<T>(y);  // the CPU backward reads y too: rounded like act and s_all
  const std::vector<T> act_d = to_device<T>(act), s_all_d = to_device<T>(s_all);
  std::vector<R> dy = fill(nTBC, 1.0), drT = fill(size_t(B) * Rn, 1.0), dsT = fill(size_t(B) * C, 1.0);
  const std::vector<T> dy_d = to_device<T>(dy), drT_d = to_device<T>(drT), dsT_d = to_device<T>(dsT);
  std::vector<R> dA(nTBG), dU(size_t(G) * Rn), dr0(size_t(B) * Rn), ds0(size_t(B) * C);
  cpu::recurrence_backward<R>({d, T_, B, dy.data(), drT.data(), dsT.data(), U.data(), r0.data(), s0.data(), y.data(),
                               act.data(), s_all.data(), len, dA.data(), dU.data(), dr0.data(), ds0.data()});
  Buffer<T> gdA(nTBG), gdr0(size_t(B) * Rn), gds0(size_t(B) * C);
  std::vector<double> wsb = make_workspace(false, d, pb, ts, as);
  BwdKernelParams<T> bp{{d, T_, B, dy_d.data(), drT_d.data(), dsT_d.data(), U_d.data(), s0_d.data(), act_d.data(),
                         s_all_d.data(), len, gdA.p(), gdr0.p(), gds0.p()},
                        plan_args(false, d, pb, wsb.data(), ts, as)};
  launch_bt<T>(false, pb.bt, pb, bp);
  const std::string cb = "bwd " + describe(d, T_, B, varlen, pb, dtype_name<T>());
  ok = ok && close("dA", cb, gdA.v, dA, nTBG, tol) && close("dr0", cb, gdr0.v, dr0, size_t(B) * Rn, tol) &&
       close("ds0", cb, gds0.v, ds0, size_t(B) * C, tol);
  if (!ok) ++failures;
  ++cov.cases;
  for (const LaunchPlan* p : {&pf, &pb}) {
    if (p->group == 1) ++cov.group1; else ++cov.group_n;
    if (p->cluster) ++(p == &pf ? cov.cluster : cov.cluster_bwd);
    if (p == &pf && p->cluster) ++(p->dsmem ? cov.dsmem : cov.cluster_l2);
    if (p == &pf && p->dsmem && p->tiles > 1) ++cov.dsmem_tiles;
    if (p == &pf && p->dsmem && int64_t(p->tiles) * p->n_groups < p->n_tiles) ++cov.dsmem_rounds;
    if (p == &pb && p->dsmem) ++cov.dsmem_bwd;
    if (p == &pb && p->dsmem && p->tiles > 1) ++cov.dsmem_bwd_tiles;
    if (p->dsmem && p->mma) ++cov.dsmem_mma;
    if (p->ksplit > 1) ++cov.split;
    if (p->n_groups < p->n_tiles) ++cov.looping;
    if (p->tiles > 1) {
      ++(p == &pf ? cov.interleaved : cov.interleaved_bwd);
      int64_t lo = T_, hi = 0;  // the tiles' longest rows
      for (int t = 0; t < p->n_tiles; ++t) {
        int64_t m = 0;
        for (int b = t * p->bt; b < B && b < (t + 1) * p->bt; ++b) m = std::max(m, lengths[size_t(b)]);
        lo = std::min(lo, m);
        hi = std::max(hi, m);
      }
      if (lo != hi) ++(p == &pf ? cov.interleaved_uneven : cov.interleaved_uneven_bwd);
      if (int64_t(p->tiles) * p->n_groups < p->n_tiles) ++(p == &pf ? cov.rounds : cov.rounds_bwd);
    }
    if (!p->u_in_smem) ++cov.global_u;
    if (B % p->bt != 0) ++cov.padded;
    if (p->mma) {
      ++cov.mma;
      if (p->group > 1) ++cov.mma_group_n;
      if (p->ksplit > 1) ++cov.mma_split;
      if (!p->u_in_smem) ++cov.mma_global_u;
    }
  }
}

enum class Mode { Full, Quick, Ci };
Mode mode = Mode::Full;

// Device variants that force each launch mode for this problem (with or without the tensor-core product):
// the full device, then ever less shared memory per block (wider groups, then U in global memory), on many SMs
// and on two.
std::vector<DeviceInfo> device_variants(const CellDims& d, int B, int ts, int as, bool mma) {
  std::vector<DeviceInfo> out;
  DeviceInfo big;
  big.sm_count = 16;
  big.max_smem_per_block = 1 << 22;
  big.max_smem_per_sm = 1 << 22;
  big.max_threads_per_sm = 2048;
  big.cooperative = 1;
  big.mma = mma ? 1 : 0;
  out.push_back(big);
  DeviceInfo c = big;
  const LaunchPlan p = plan_launch(true, d, B, big, ts, as, &emu_occupancy, &c);
  const size_t full = p.smem_bytes;
  for (double f : {0.6, 0.35, 0.2, 0.1}) {
    for (int sms : {16, 2}) {
      if (mode == Mode::Ci && !((f == 0.35 && sms == 16) || (f == 0.1 && sms == 2))) continue;
      DeviceInfo v = big;
      v.sm_count = sms;
      v.cluster = sms == 2 ? 16 : 0;  // groups as clusters on the smaller device, the flag barrier on the other
      v.max_smem_per_block = int(double(full) * f);
      v.max_smem_per_sm = v.max_smem_per_block;  // one CTA per SM
      out.push_back(v);
    }
  }
  return out;
}

// 16-bit storage: every variant without and with the tensor-core product.
std::vector<DeviceInfo> devices_for(const CellDims& d, int B, int ts, int as) {
  std::vector<DeviceInfo> out = device_variants(d, B, ts, as, false);
  if (ts == 2) {
    const std::vector<DeviceInfo> mma = device_variants(d, B, ts, as, true);
    out.insert(out.end(), mma.begin(), mma.end());
  }
  return out;
}

template <typename T>
void run_all() {
  const bool quick = mode != Mode::Full;
  using A = typename AccType<T>::type;
  std::mt19937 rng(1234);
  const Squash squashes[] = {Squash::Tanh, Squash::Paper, Squash::SigmoidIdentity};
  for (bool fg : {true, false})
    for (int S : {1, 2, 3})
      for (bool all : {false, true})
        for (Squash q : squashes)
          for (bool tr : {false, true}) {
            const int C = 6;
            const CellDims d = make_cell_dims(C, S, fg, all, tr, q);
            for (auto [T_, B] : {std::pair{5, 5}, std::pair{4, 11}, std::pair{3, 1}}) {
              if (quick && B == 11) continue;
              for (const DeviceInfo& dev : devices_for(d, B, int(sizeof(T)), int(sizeof(A))))
                for (int varlen : {0, 1, 2})
                  if (mode != Mode::Ci || varlen > 0) run_case<T>(d, T_, B, varlen, dev, rng);
            }
          }
  // a larger problem: reduction split over thread sets, several rows per thread; for 16-bit storage also a full
  // tile of 8 rows and a padded one (the tensor-core product)
  for (bool all : {false, true}) {
    const CellDims d = make_cell_dims(40, 1, true, all, false, Squash::Tanh);
    for (int B : {3, 8, 9}) {
      if (sizeof(T) != 2 && B != 3) continue;
      for (const DeviceInfo& dev : devices_for(d, B, int(sizeof(T)), int(sizeof(A))))
        for (int varlen : {1, 2}) run_case<T>(d, 3, B, varlen, dev, rng);
    }
  }
  // 16-bit storage: the tensor-core product with U in global memory (its slice does not fit 64 KB on two SMs, the
  // rest of a tile of 8 rows does)
  if constexpr (sizeof(T) == 2) {
    const CellDims d = make_cell_dims(200, 1, true, false, false, Squash::Tanh);
    DeviceInfo dev = devices_for(d, 8, int(sizeof(T)), int(sizeof(A)))[0];
    dev.sm_count = 2;
    dev.max_smem_per_block = dev.max_smem_per_sm = 64 * 1024;
    dev.mma = 1;
    run_case<T>(d, 2, 8, 1, dev, rng);
  }
  // A device of 2 SMs, one CTA each, whose shared memory shrinks from `from` bytes 16 at a time: the first plan that
  // `want` accepts runs (T = 4, all rows full and lengths by runs of rows).
  auto run_first_plan = [&](bool fwd, const CellDims& d, int B, DeviceInfo dev, size_t from, auto want) {
    for (size_t lim = from; lim > 64; lim -= 16) {
      dev.max_smem_per_block = dev.max_smem_per_sm = int(lim);
      DeviceInfo c = dev;
      const LaunchPlan p = plan_launch(fwd, d, B, dev, int(sizeof(T)), int(sizeof(A)), &emu_occupancy, &c);
      if (p.ok && want(p)) {
        for (int varlen : {0, 2}) run_case<T>(d, 4, B, varlen, dev, rng);
        return;
      }
    }
  };
  auto two_sms = [&](bool fwd, const CellDims& d, int B, int cluster, int mma) {  // and its plan's shared memory
    DeviceInfo dev = devices_for(d, B, int(sizeof(T)), int(sizeof(A)))[0];
    dev.sm_count = 2;
    dev.max_threads_per_sm = kMaxThreads;  // one CTA per SM
    dev.cluster = cluster;
    dev.mma = mma;
    DeviceInfo c = dev;
    return std::pair{dev, size_t(plan_launch(fwd, d, B, dev, int(sizeof(T)), int(sizeof(A)), &emu_occupancy, &c)
                                     .smem_bytes)};
  };
  // 16-bit storage: clusters exchanging through distributed shared memory with the tensor-core product (a group of
  // CTAs: shared memory shrunk until U no longer fits one), forward and backward, one tile and two side by side
  if constexpr (sizeof(T) == 2) {
    for (bool fwd : {true, false})
      for (int B : {8, 16}) {
        const CellDims d = make_cell_dims(40, 1, true, false, false, Squash::Tanh);
        const auto [dev, full] = two_sms(fwd, d, B, 16, 1);
        run_first_plan(fwd, d, B, dev, full, [](const LaunchPlan& p) { return p.group > 1 && p.dsmem && p.mma; });
      }
  }
  // tiles side by side, in one round and in rounds (shared memory for the state of some of a group's tiles, not
  // all), forward and backward, with the flag barrier and as clusters (whose forward keeps every tile's r_{t-1} and
  // r_t, so it needs more room: 40 cells, few tiles): shared memory shrunk from more than the plan needs
  for (bool fwd : {true, false})
    for (int cluster : {0, 16})
      for (auto [C, B] : {std::pair{6, 37}, std::pair{40, 16}, std::pair{40, 24}}) {
        if (cluster == 0 && C != 6) continue;
        const CellDims d = make_cell_dims(C, 1, true, true, false, Squash::Tanh);
        const auto [dev, full] = two_sms(fwd, d, B, cluster, 0);
        for (bool rounds : {false, true}) {
          if (cluster == 0 && !rounds) continue;  // one round with the flag barrier: covered above
          run_first_plan(fwd, d, B, dev, full + 65536, [&](const LaunchPlan& p) {
            return p.group > 1 && p.tiles > 1 && p.cluster == (cluster > 0) &&
                   (int64_t(p.tiles) * p.n_groups < p.n_tiles) == rounds;
          });
        }
      }
  // empty sequences
  const CellDims d = make_cell_dims(4, 2, true, true, false, Squash::Paper);
  DeviceInfo big = devices_for(d, 2, int(sizeof(T)), int(sizeof(A)))[0];
  run_case<T>(d, 0, 2, 0, big, rng);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string arg = argc > 1 ? argv[1] : "full";
  mode = arg == "ci" ? Mode::Ci : arg == "quick" ? Mode::Quick : Mode::Full;
  auto run_type = [](auto tag) {
    using T = decltype(tag);
    const int before = cov.cases;
    run_all<T>();
    std::printf("%s: %d cases\n", dtype_name<T>(), cov.cases - before);
  };
  run_type(double{});
  run_type(float{});
  run_type(__half{});
  run_type(__nv_bfloat16{});
  std::printf("cases %d, failures %d | plans: group=1 %d, group>1 %d, split %d, more tiles than groups %d (side by "
              "side: forward %d, backward %d; tiles of different lengths: forward %d, backward %d; in rounds: "
              "forward %d, backward %d), U in global memory %d, padded tiles %d; tensor cores %d (group>1 %d, split %d, "
              "U in global memory %d); clusters: forward %d (r_t through distributed shared memory %d: tiles side "
              "by side %d, several rounds %d; through L2 %d), backward %d (da_t through distributed shared "
              "memory %d, tiles side by side %d); distributed shared memory with the tensor cores %d\n",
              cov.cases, failures, cov.group1, cov.group_n, cov.split, cov.looping, cov.interleaved,
              cov.interleaved_bwd, cov.interleaved_uneven, cov.interleaved_uneven_bwd, cov.rounds, cov.rounds_bwd,
              cov.global_u, cov.padded, cov.mma, cov.mma_group_n, cov.mma_split, cov.mma_global_u, cov.cluster,
              cov.dsmem, cov.dsmem_tiles, cov.dsmem_rounds, cov.cluster_l2, cov.cluster_bwd, cov.dsmem_bwd,
              cov.dsmem_bwd_tiles, cov.dsmem_mma);
  const bool covered = cov.group1 && cov.group_n && cov.split && cov.looping && cov.interleaved &&
                       cov.interleaved_bwd && cov.interleaved_uneven && cov.interleaved_uneven_bwd && cov.rounds &&
                       cov.rounds_bwd && cov.global_u && cov.padded && cov.mma && cov.mma_group_n && cov.mma_split &&
                       cov.mma_global_u && cov.cluster && cov.dsmem && cov.dsmem_tiles &&
                       cov.dsmem_rounds && cov.cluster_l2 && cov.cluster_bwd && cov.dsmem_bwd &&
                       cov.dsmem_bwd_tiles && cov.dsmem_mma;
  if (!covered) std::printf("not every launch mode was exercised\n");
  return failures == 0 && covered ? 0 : 1;
}
