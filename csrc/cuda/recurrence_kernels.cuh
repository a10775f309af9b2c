// The persistent recurrence kernels and their launch planner. Included by recurrence_fwd.cu and
// recurrence_bwd.cu (nvcc) and by the CPU emulation in csrc/cuda/emu/ (g++, LSTM_EXT_CUDA_EMULATE), which runs
// the same kernel code with one host thread per CUDA thread to check its logic without a GPU.
//
// Work split (see recurrence_cuda.cuh): CTA `rank` of a group owns memory-cell blocks [blk0, blk0 + nbl).
// Its LOCAL gate rows (GL = nbl (gates per block + S)) and LOCAL entries of r (RL) use the layout of cell.h
// for nbl blocks:  gate rows [iota (nbl), (phi (nbl)), z (nbl S), omega (nbl)],  r entries ["all": iota
// (nbl), (phi (nbl)), omega (nbl); then] cells (nbl S).  gate_of / rec_of map them to the global rows.
//
// Forward, one step t, one batch tile of BT rows (smem: r_s [R][BT] the full r_{t-1}; W [R][GL] = U^T slice):
//   1. a[b][lg] = A[t][b][g(lg)] + sum_k r_s[k][b] W[k][lg]      (A[t] was prefetched during step t-1)
//   2. per (row, owned block): activations, cell state, y_c; stores act, y, s_all; new r entries
//   3. group > 1: r entries to the exchange buffer, group barrier, full r_t back into r_s (a thread-block cluster
//      with dsmem: r entries straight into every CTA's r_s, which holds every tile's r_{t-1} and r_t; the barrier)
// Backward, one step t (reverse; smem: da_s [G][BT] the full da_{t+1}, or with the tensor cores only its rounded
// copy in16 [BT][ldk]; W [G][RL] = U column slice):
//   1. unless truncate: group > 1: full da_{t+1} from the exchange buffer into da_s (group 1: da_s holds it);
//      dr[b][lk] = sum_g da_s[g][b] W[g][lk]                     (truncate: dr = 0)
//   2. per (row, owned block): cell backward from act/s/dy (prefetched) and dr (owned), ds; stores dA;
//      group > 1: da_t to the exchange buffer
//   3. group > 1: group barrier                     (after the last step, step 1 once more gives dr0)
// The group barrier is group_sync (a flag in global memory; cooperative launch) or, where the group is a thread-block
// cluster (sm_90), the cluster's hardware barrier; with dsmem its CTAs then write da_t straight into each other's
// da_s (in16), which holds every tile's da_{t+1} and da_t.
// A group runs its batch tiles side by side: steps 1-2 for each tile, then one barrier (the tiles' state in smem).
// Rows past their length are frozen: no store of new state, 0 in act/y/dA; dr and ds pass through.
// The products of steps 1 (forward) and 2 (backward) are step_product (SIMT, float or double accumulators) or,
// for 16-bit storage and BT = 8 on sm_80+, step_product_mma (tensor cores; W then k-major, see w_slice_elems).
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>

#if defined(LSTM_EXT_CUDA_EMULATE)
// emu/emulate.h (included first) provides threadIdx, blockIdx, blockDim, gridDim, __syncthreads,
// LSTM_DEV, LSTM_KERNEL, LSTM_LAUNCH_BOUNDS, lstm_dynamic_smem(), the group-barrier atomics
// and ld_cg / st_cg.
#else
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#define LSTM_DEV __device__ __forceinline__
#define LSTM_KERNEL __global__
#define LSTM_LAUNCH_BOUNDS(n) __launch_bounds__(n, 1)
#define LSTM_ASSERT_ALIGNED(p, align) ((void)0)  // checked by the emulation (a GPU faults on a misaligned vector)
#endif

#include "recurrence_cuda.cuh"

namespace lstm_ext::cuda::detail {

// ---- constants -------------------------------------------------------------------------------------------

constexpr int kMaxThreads = 512;   // threads per CTA (the kernels' __launch_bounds__)
constexpr int kPrefetch = 8;       // 32-bit registers per thread holding the next step's data
constexpr int kMaxSplit = 16;      // split of the reduction dimension over thread sets
constexpr int kMinChunk = 16;      // shortest reduction chunk per thread set
// A group is widened beyond the fewest CTAs that hold U while one CTA's multiply-adds per step exceed this
// (and SMs are free): ~2K cycles of fp32 FMA on one SM, about what a group barrier costs. Untuned.
constexpr int64_t kSplitWork = int64_t(1) << 18;

// Prefetch: thread tid loads, for every row b of the tile, the next step's element of local "virtual rows"
// v = tid + j blockDim.x, j < prefetch_rows (a step's data of one CTA and tile row is V virtual rows).
LSTM_HD constexpr int prefetch_rows(int tsize, int bt) {
  const int elems = tsize == 8 ? kPrefetch / 4 : kPrefetch;  // float64: a correctness path, registers are short
  return elems / bt > 1 ? elems / bt : 1;
}

// Largest batch tile of a storage type (float64, the correctness path, stops at 2: from 4 the forward spills
// registers on sm_90).
LSTM_HD constexpr int max_batch_tile(int tsize) { return tsize == 8 ? 2 : 8; }

// Whether groups of a storage type may run as thread-block clusters: not float64 (the correctness path; with the
// cluster barrier's code beside the flag barrier's its forward spills registers on sm_90).
LSTM_HD constexpr bool cluster_capable(int tsize) { return tsize != 8; }

// ---- storage and accumulation types ------------------------------------------------------------------------

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};

template <typename A>
LSTM_DEV A to_acc(float x) { return A(x); }
template <typename A>
LSTM_DEV A to_acc(double x) { return A(x); }
template <typename T>
LSTM_DEV T from_acc(float x) { return T(x); }
template <typename T>
LSTM_DEV T from_acc(double x) { return T(x); }

template <typename A>
LSTM_DEV A to_acc(__half x) { return A(__half2float(x)); }
template <typename A>
LSTM_DEV A to_acc(__nv_bfloat16 x) { return A(__bfloat162float(x)); }
template <>
LSTM_DEV __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
LSTM_DEV __nv_bfloat16 from_acc<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Storage zero without the conversion constructors of __half / __nv_bfloat16 (torch builds often disable them).
template <typename T>
LSTM_DEV T zero() {
  return from_acc<T>(typename AccType<T>::type(0));
}

// BT consecutive accumulators loaded from shared memory at once (vector loads where aligned).
template <typename A, int N>
struct alignas(sizeof(A) * N >= 16 ? 16 : sizeof(A) * N) Vec {
  A v[N];
};
template <typename A, int N>
LSTM_DEV void load_vec(const A* p, A (&out)[N]) {
  constexpr int per = (sizeof(A) * N >= 16) ? int(16 / sizeof(A)) : N;  // elements per vector load
#pragma unroll
  for (int i = 0; i < N; i += per) {
    LSTM_ASSERT_ALIGNED(p + i, alignof(Vec<A, per>));
    const Vec<A, per> v = *reinterpret_cast<const Vec<A, per>*>(p + i);
#pragma unroll
    for (int j = 0; j < per; ++j) out[i + j] = v.v[j];
  }
}

// ---- the blocks a CTA owns, and its local rows -----------------------------------------------------------

struct Slice {
  int blk0;  // first global block
  int nbl;   // blocks owned
};

LSTM_HD Slice cta_slice(int n_blocks, int group, int rank) {
  const int q = n_blocks / group, rem = n_blocks % group;
  return {rank * q + (rank < rem ? rank : rem), q + (rank < rem ? 1 : 0)};
}

LSTM_HD int local_gate_rows(const CellDims& d, int nbl) { return nbl * (d.gates_per_block() + d.block_size); }
LSTM_HD int local_rec(const CellDims& d, int nbl) {
  return nbl * ((d.feedback_all ? d.gates_per_block() : 0) + d.block_size);
}

// Local gate row lg of the slice -> global gate row.
LSTM_HD int gate_of(const CellDims& d, const Slice& sl, int lg) {
  const int nbl = sl.nbl, S = d.block_size;
  if (lg < nbl) return d.iota_row() + sl.blk0 + lg;
  lg -= nbl;
  if (d.forget_gate) {
    if (lg < nbl) return d.phi_row() + sl.blk0 + lg;
    lg -= nbl;
  }
  if (lg < nbl * S) return d.z_row() + sl.blk0 * S + lg;
  return d.omega_row() + sl.blk0 + (lg - nbl * S);
}

// Local entry lk of r of the slice -> global entry of r.
LSTM_HD int rec_of(const CellDims& d, const Slice& sl, int lk) {
  const int nbl = sl.nbl;
  if (d.feedback_all) {
    const int ng = d.gates_per_block() * nbl;
    if (lk < ng) return (lk / nbl) * d.n_blocks + sl.blk0 + lk % nbl;  // r_gate(group, blk)
    lk -= ng;
  }
  return d.r_cells() + sl.blk0 * d.block_size + lk;
}

// ---- shared memory layouts (host and device) ----------------------------------------------------------------

LSTM_HD size_t align16(size_t x) { return (x + 15) & ~size_t(15); }

// The slice of U a CTA multiplies with (K: the reduction, R forward and G backward; ld: its stride of outputs,
// glp forward and rlp backward). SIMT product: W[k][o], o contiguous. Tensor-core product (mma): W[o][k], k
// contiguous, rows padded to a multiple of 16 and k to a multiple of 16 plus 8 (so that the 8 rows a warp reads
// at once start in different banks), zeros in the padding.
LSTM_HD int mma_ldk(int K) { return (K + 15) / 16 * 16 + 8; }
LSTM_HD int mma_rows(int ld) { return (ld + 15) / 16 * 16; }
LSTM_HD size_t w_slice_elems(bool mma, int K, int ld) {
  return mma ? size_t(mma_rows(ld)) * size_t(mma_ldk(K)) : size_t(K) * size_t(ld);
}

struct FwdSmem {
  size_t r, a, part, s, st, len, maxlen, rown, in16, u, total;
};

// R: size of r;  glp / clp / rlp: strides of local gate rows / cells / r entries;  ks: reduction split;  ts / as:
// sizes of the storage and accumulation types;  nt: tiles run side by side (plan.tiles);  own_r: whether each
// tile keeps the CTA's own entries of r (group > 1, where r_s holds the tile's full r only during its step);
// cluster: the group is a thread-block cluster whose CTAs write r_t into each other's r_s, which then holds every
// tile's r_{t-1} and r_t ([2][nt][R][bt]).
LSTM_HD FwdSmem fwd_smem(int R, int glp, int clp, int rlp, int bt, int ks, int ts, int as, bool u_smem, bool mma,
                         int nt, bool own_r, bool cluster) {
  FwdSmem L{};
  size_t o = 0;
  L.r = o;    o = align16(o + (cluster ? size_t(2) * nt : 1) * size_t(R) * bt * as);
  L.a = o;    o = align16(o + size_t(bt) * glp * as);
  L.part = o; o = align16(o + (ks > 1 ? size_t(ks) * bt * glp * as : 0));
  L.s = o;    o = align16(o + size_t(nt) * bt * clp * as);
  L.st = o;   o = align16(o + size_t(bt) * glp * ts);
  L.len = o;  o = align16(o + size_t(nt) * bt * sizeof(int64_t));
  L.maxlen = o; o = align16(o + size_t(2 * nt + 1) * sizeof(int64_t));
  L.rown = o; o = align16(o + (own_r ? size_t(nt) * bt * rlp * as : 0));
  L.in16 = o; o = align16(o + (mma ? size_t(bt) * mma_ldk(R) * ts : 0));
  L.u = o;    o = align16(o + (u_smem ? w_slice_elems(mma, R, glp) * ts : 0));
  L.total = o;
  return L;
}

struct BwdSmem {
  size_t da, dr, ds, part, act, dy, s, len, maxlen, in16, u, total;
};

// G: gate rows;  rlp / glp / clp: strides of local r entries / gate rows / cells;  nt: tiles run side by side
// (plan.tiles);  cluster: the group is a thread-block cluster whose CTAs write da_t into each other's da_s (or
// in16), which then holds every tile's da_{t+1} and da_t.
LSTM_HD BwdSmem bwd_smem(int G, int rlp, int glp, int clp, int bt, int ks, int ts, int as, bool u_smem,
                         bool mma, int nt, bool cluster) {
  const size_t nda = cluster ? size_t(2) * nt : 1;  // da buffers
  BwdSmem L{};
  size_t o = 0;
  L.da = o;   o = align16(o + (mma ? 0 : nda * G * bt * as));  // mma: da only in in16, rounded
  L.dr = o;   o = align16(o + size_t(nt) * bt * rlp * as);
  L.ds = o;   o = align16(o + size_t(nt) * bt * clp * as);
  L.part = o; o = align16(o + (ks > 1 ? size_t(ks) * bt * rlp * as : 0));
  L.act = o;  o = align16(o + size_t(bt) * glp * ts);
  L.dy = o;   o = align16(o + size_t(bt) * clp * ts);
  L.s = o;    o = align16(o + size_t(nt) * 2 * bt * clp * ts);
  L.len = o;  o = align16(o + size_t(nt) * bt * sizeof(int64_t));
  L.maxlen = o; o = align16(o + size_t(2 * nt + 1) * sizeof(int64_t));
  L.in16 = o; o = align16(o + (mma ? nda * bt * mma_ldk(G) * ts : 0));
  L.u = o;    o = align16(o + (u_smem ? w_slice_elems(mma, G, rlp) * ts : 0));
  L.total = o;
  return L;
}

// ---- kernel parameters ------------------------------------------------------------------------------------

// What both kernels take besides the problem: the plan, and pointers into the workspace.
struct PlanArgs {
  int group;
  int n_groups;
  int n_tiles;
  int ksplit;
  int glp, clp, rlp;  // strides (from the largest slice)
  bool u_in_smem;
  bool mma;            // the per-step product on the tensor cores (W in the mma layout)
  bool cluster;        // a group is a thread-block cluster: its barrier is cluster_sync, not group_sync
  bool dsmem;          // (cluster) the CTAs write r_t / da_t into each other's r_s / da_s (no exchange buffer)
  unsigned* counters;  // (n_groups) group barrier epochs, zero at launch (group > 1)
  void* exch;          // (n_groups, 2, tiles, BT, R | G) accumulators (group > 1)
  void* u_work;        // (grid, w_slice_elems) U slices when !u_in_smem
  int tiles;           // plan.tiles
};

template <typename T>
struct FwdKernelParams {
  ForwardArgs<T> a;
  PlanArgs p;
};

template <typename T>
struct BwdKernelParams {
  BackwardArgs<T> a;
  PlanArgs p;
};

// ---- group barrier ------------------------------------------------------------------------------------------

#if !defined(LSTM_EXT_CUDA_EMULATE)
LSTM_DEV unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// A release fence at GPU scope: cumulative, so it also releases what the other threads of the CTA wrote before
// the __syncthreads that precedes it (lighter than __threadfence, which is a sequentially consistent fence).
LSTM_DEV void fence_acq_rel_gpu() { asm volatile("fence.acq_rel.gpu;" ::: "memory"); }
LSTM_DEV void red_relaxed_add(unsigned* p, unsigned v) {
  asm volatile("red.relaxed.gpu.global.add.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
template <typename A>
LSTM_DEV A ld_cg(const A* p) { return __ldcg(p); }
template <typename A>
LSTM_DEV void st_cg(A* p, A v) { __stcg(p, v); }
LSTM_DEV unsigned char* lstm_dynamic_smem() {
  extern __shared__ __align__(16) unsigned char lstm_ext_dynamic_smem[];
  return lstm_ext_dynamic_smem;
}
// Every thread of every CTA of the thread-block cluster has arrived (sm_90): the hardware barrier, each thread's
// arrival a release and its wait an acquire at cluster scope, so what a CTA wrote before it (to the exchange buffer
// in global memory, or into another CTA's shared memory: st_cluster) is visible to the cluster's CTAs after it. No
// __syncthreads needed around it.
LSTM_DEV void cluster_sync() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("barrier.cluster.arrive.release.aligned;\n\tbarrier.cluster.wait.acquire.aligned;" ::: "memory");
#else
  __trap();  // never planned: DeviceInfo::cluster is 0 where the kernels have no sm_90 code
#endif
}
// *p = v in CTA `rank` of the cluster, p an address in this CTA's shared memory (distributed shared memory; 32-bit
// shared-window addresses, fewer registers than generic pointers).
LSTM_DEV unsigned cluster_addr(const void* p, int rank) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned local = unsigned(__cvta_generic_to_shared(p));
  unsigned remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank));
  return remote;
#else
  __trap();
  return 0;
#endif
}
LSTM_DEV void st_cluster(float* p, int rank, float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("st.shared::cluster.f32 [%0], %1;" ::"r"(cluster_addr(p, rank)), "f"(v) : "memory");
#endif
}
template <typename T16>  // __half, __nv_bfloat16
LSTM_DEV void st_cluster(T16* p, int rank, T16 v) {
  static_assert(sizeof(T16) == 2, "16-bit storage types only");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const unsigned short bits = *reinterpret_cast<const unsigned short*>(&v);
  asm volatile("st.shared::cluster.b16 [%0], %1;" ::"r"(cluster_addr(p, rank)), "h"(bits) : "memory");
#endif
}
#endif

// All CTAs of the group have arrived for the `epoch`-th time (epoch counts from 1). Called by every thread.
// The pattern of CUTLASS's inter-CTA semaphore (cutlass/barrier.h): thread 0 releases the CTA's writes with one
// acq_rel fence and a relaxed add, spins on an acquire load, and the __syncthreads after it passes the acquired
// writes of the other CTAs on to every thread of this one (they read them with ld.cg, past L1). It replaced two
// __threadfence (fence.sc.gpu, a full fence) around the add and the spin, which the pattern does not need.
LSTM_DEV void group_sync(unsigned* counter, int group, unsigned epoch) {
  __syncthreads();  // this CTA's exchange writes are done
  if (threadIdx.x == 0) {
    fence_acq_rel_gpu();
    red_relaxed_add(counter, 1u);
    const unsigned target = epoch * unsigned(group);
    // signed difference: correct across 2^32 wrap-around of the counter (it never runs ahead of target by
    // more than group - 1); back off so hundreds of spinning CTAs do not saturate the counter's L2 slice
    while (int(ld_acquire(counter) - target) < 0) {
#if !defined(LSTM_EXT_CUDA_EMULATE)
      __nanosleep(32);
#endif
    }
  }
  __syncthreads();
}

// The per-step barrier of a group (p.group > 1): the cluster's, or the flag barrier. CLUSTER: cluster_capable.
template <bool CLUSTER>
LSTM_DEV void group_barrier(const PlanArgs& p, unsigned* counter, unsigned epoch) {
  if (CLUSTER && p.cluster)
    cluster_sync();
  else
    group_sync(counter, p.group, epoch);
}

// ---- the per-step product -------------------------------------------------------------------------------------

template <typename A, int BT>
constexpr int kProductUnroll = 8 / (BT * int(sizeof(A) / 4)) < 1 ? 1 : (8 / (BT * int(sizeof(A) / 4)) > 4 ? 4 : 8 / (BT * int(sizeof(A) / 4)));

// Two adjacent weights W[o], W[o + 1] (o even, W 2-element aligned) as accumulators.
template <typename A>
LSTM_DEV void load_pair(const float* w, A& u0, A& u1) {
  LSTM_ASSERT_ALIGNED(w, sizeof(float2));
  const float2 v = *reinterpret_cast<const float2*>(w);
  u0 = A(v.x);
  u1 = A(v.y);
}
template <typename A>
LSTM_DEV void load_pair(const double* w, A& u0, A& u1) {
  LSTM_ASSERT_ALIGNED(w, sizeof(double2));
  const double2 v = *reinterpret_cast<const double2*>(w);
  u0 = A(v.x);
  u1 = A(v.y);
}
template <typename A>
LSTM_DEV void load_pair(const __half* w, A& u0, A& u1) {
  LSTM_ASSERT_ALIGNED(w, sizeof(__half2));
  const float2 v = __half22float2(*reinterpret_cast<const __half2*>(w));
  u0 = A(v.x);
  u1 = A(v.y);
}
template <typename A>
LSTM_DEV void load_pair(const __nv_bfloat16* w, A& u0, A& u1) {
  LSTM_ASSERT_ALIGNED(w, sizeof(__nv_bfloat162));
  const float2 v = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(w));
  u0 = A(v.x);
  u1 = A(v.y);
}

// The end of a product split over ks thread sets: out[b][o] = (init[b][o] +) the ks partial sums part[q][b][o]
// ([ks][BT][ldo]) in order, for the rows b in mask. Called by every thread; ends with a __syncthreads.
template <int BT, typename T, typename A>
LSTM_DEV void add_split_parts(int ks, int nout, const T* init, int ldi, A* out, int ldo, const A* part,
                              unsigned mask) {
  for (int i = int(threadIdx.x); i < BT * nout; i += int(blockDim.x)) {
    const int b = i / nout, o = i - b * nout;
    if (!(mask >> b & 1u)) continue;
    A v = init != nullptr ? to_acc<A>(init[b * ldi + o]) : A(0);
    for (int q = 0; q < ks; ++q) v += part[(q * BT + b) * ldo + o];
    out[b * ldo + o] = v;
  }
  __syncthreads();
}

// out[b][o] (= init[b][o] +) sum_{m < K} in_s[m][b] W[m][o]  for o < nout, b < BT, written where bit b of
// `mask` is set. Each thread computes two adjacent outputs o, o + 1 (ldw even; W[m][nout] exists when nout is
// odd, its result is dropped), so one broadcast of in_s[m] feeds 2 BT multiply-adds. The reduction runs in `ks`
// chunks over thread sets of blockDim.x / ks threads; with ks > 1 each set writes its partial sums to part
// ([ks][BT][ldo]), and after a __syncthreads the chunks are added in order. Ends with a __syncthreads.
template <int BT, bool W_SMEM, typename T, typename A>
LSTM_DEV void step_product(const A* in_s, const T* W, int ldw, int K, int nout, int ks, const T* init, int ldi,
                           A* out, int ldo, A* part, unsigned mask) {
  const int nrt = int(blockDim.x) / ks;
  const int kq = int(threadIdx.x) / nrt, lr = int(threadIdx.x) % nrt;
  if (kq < ks) {
    const int kc = (K + ks - 1) / ks;
    const int k0 = kq * kc, k1 = (k0 + kc < K) ? k0 + kc : K;
    for (int o = 2 * lr; o < nout; o += 2 * nrt) {
      const bool two = o + 1 < nout;
      A acc0[BT], acc1[BT];
#pragma unroll
      for (int b = 0; b < BT; ++b) {
        const bool in = ks == 1 && init != nullptr;
        acc0[b] = in ? to_acc<A>(init[b * ldi + o]) : A(0);
        acc1[b] = in && two ? to_acc<A>(init[b * ldi + o + 1]) : A(0);
      }
      const T* w = W + o;
  // unrolled while it fits the registers: 8 accumulators' worth of loads in flight per step of the unroll
#pragma unroll(W_SMEM ? kProductUnroll<A, BT> : 1)
      for (int m = k0; m < k1; ++m) {
        A u0, u1;
        load_pair(w + size_t(m) * ldw, u0, u1);
        A x[BT];
        load_vec(in_s + size_t(m) * BT, x);
#pragma unroll
        for (int b = 0; b < BT; ++b) {
          acc0[b] += u0 * x[b];
          acc1[b] += u1 * x[b];
        }
      }
      if (ks == 1) {
#pragma unroll
        for (int b = 0; b < BT; ++b) {
          if (mask >> b & 1u) {
            out[b * ldo + o] = acc0[b];
            if (two) out[b * ldo + o + 1] = acc1[b];
          }
        }
      } else {
#pragma unroll
        for (int b = 0; b < BT; ++b) {
          part[(kq * BT + b) * ldo + o] = acc0[b];
          if (two) part[(kq * BT + b) * ldo + o + 1] = acc1[b];
        }
      }
    }
  }
  __syncthreads();
  if (ks > 1) add_split_parts<BT>(ks, nout, init, ldi, out, ldo, part, mask);
}

// ---- the per-step product on the tensor cores (16-bit storage, BT = 8, sm_80+) --------------------------------

// The 16 bits of a storage value, and two floats rounded to the storage type as one 32-bit register (lo first).
#if !defined(LSTM_EXT_CUDA_EMULATE)
LSTM_DEV unsigned bits16(__half x) { return __half_as_ushort(x); }
LSTM_DEV unsigned bits16(__nv_bfloat16 x) { return __bfloat16_as_ushort(x); }
#endif
template <typename T>
LSTM_DEV unsigned pack2(float lo, float hi) {
  return bits16(from_acc<T>(lo)) | (bits16(from_acc<T>(hi)) << 16);
}
template <typename T>
LSTM_DEV unsigned load32(const T* p) {  // two adjacent 16-bit values (p 4-byte aligned)
  LSTM_ASSERT_ALIGNED(p, 4);
  return *reinterpret_cast<const unsigned*>(p);
}

// c (16 x 8, float32) += a (16 x 16) b (16 x 8), a warp's mma.sync.m16n8k16 (row.col) in T = __half or
// __nv_bfloat16. Lane l (g = l / 4, q = l % 4) holds a rows g, g + 8 at columns 2q, 2q + 1 (a[0], a[1]) and
// 2q + 8, 2q + 9 (a[2], a[3]); b rows 2q, 2q + 1 (b[0]) and 2q + 8, 2q + 9 (b[1]) of column g; c rows g (c[0],
// c[1]) and g + 8 (c[2], c[3]) at columns 2q, 2q + 1. The planner picks it only where the kernels run sm_80 code.
#if defined(LSTM_EXT_CUDA_EMULATE)
template <typename T>
LSTM_DEV void mma_16816(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  emu_mma_16816<T>(c, a, b);
}
#else
template <typename T>
LSTM_DEV void mma_16816(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
#define LSTM_EXT_MMA_16816(TYPE)                                                                          \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." TYPE "." TYPE                                     \
               ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};"                     \
               : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])                                          \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))
  if constexpr (std::is_same_v<T, __half>) {
    LSTM_EXT_MMA_16816("f16");
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>, "mma_16816: __half or __nv_bfloat16");
    LSTM_EXT_MMA_16816("bf16");
  }
#undef LSTM_EXT_MMA_16816
#else
  __trap();
#endif
}
#endif

// step_product for a tile of 8 rows on the tensor cores, W in the mma layout (W[o][k], stride mma_ldk(K)):
// out[b][o] (= init[b][o] +) sum_{k < K} in_s[k][b] W[o][k]. First in_s is rounded to T into in16 ([8][ldk], k
// contiguous, 0 past K), so that a lane's B fragment is two 32-bit loads; in_s == nullptr: the caller has filled
// in16 so (and passed a __syncthreads). Each warp then computes up to MT tiles of 16 outputs x 8 rows at once
// (M = outputs, N = rows, K = the reduction in steps of 16), loading the B fragment of a k16 step once for all of
// them. The reduction splits into `ks` chunks of whole k16 steps as in step_product. Ends with a __syncthreads.
constexpr int kMmaTiles = 4;  // MT of the forward; the backward's is 2 (at 4 its tile of 8 rows spilled on sm_90)
template <typename T, int MT>
LSTM_DEV void step_product_mma(const float* in_s, T* in16, const T* W, int K, int nout, int ks, const T* init,
                               int ldi, float* out, int ldo, float* part, unsigned mask) {
  constexpr int BT = 8;
  const int ldk = mma_ldk(K);
  if (in_s != nullptr) {
    for (int i = int(threadIdx.x); i < BT * ldk; i += int(blockDim.x)) {
      const int b = i / ldk, k = i - b * ldk;
      in16[i] = k < K ? from_acc<T>(in_s[size_t(k) * BT + b]) : zero<T>();
    }
    __syncthreads();
  }
  const int nrt = int(blockDim.x) / ks;  // a multiple of 32 (the planner's condition)
  const int kq = int(threadIdx.x) / nrt, lr = int(threadIdx.x) % nrt;
  const int warp = lr / 32, nwarps = nrt / 32, g = (lr % 32) / 4, q = lr % 4;
  const int kc = ((K + ks - 1) / ks + 15) / 16 * 16;
  const int k0 = kq * kc, k1 = k0 + kc < K ? k0 + kc : K;
  const int ntiles = (nout + 15) / 16;
  const T* bg = in16 + size_t(g) * ldk + 2 * q;  // row g of B, columns 2q, 2q + 1 of each k16 step
  // the warp's tiles warp + m nwarps (m < MT), then the next MT nwarps; uniform over the warp
  for (int tile0 = warp; tile0 < ntiles; tile0 += MT * nwarps) {
    float c[MT][4];
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {  // rows g (j < 2) and g + 8 of the tile, columns 2q + (j & 1)
        const int o = 16 * (tile0 + m * nwarps) + g + 8 * (j >> 1), b = 2 * q + (j & 1);
        c[m][j] = ks == 1 && init != nullptr && o < nout ? to_acc<float>(init[b * ldi + o]) : 0.f;
      }
    }
    for (int k = k0; k < k1; k += 16) {
      const unsigned b[2] = {load32(bg + k), load32(bg + k + 8)};
#pragma unroll
      for (int m = 0; m < MT; ++m) {
        const int tile = tile0 + m * nwarps;
        if (tile >= ntiles) break;
        const T* wa = W + size_t(16 * tile + g) * ldk + 2 * q + k;  // rows g and g + 8 (zero-padded past nout)
        const T* wb = wa + size_t(8) * ldk;
        const unsigned a[4] = {load32(wa), load32(wb), load32(wa + 8), load32(wb + 8)};
        mma_16816<T>(c[m], a, b);
      }
    }
#pragma unroll
    for (int m = 0; m < MT; ++m) {
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        const int o = 16 * (tile0 + m * nwarps) + g + 8 * (j >> 1), b = 2 * q + (j & 1);
        if (o >= nout) continue;
        if (ks > 1) {
          part[(kq * BT + b) * ldo + o] = c[m][j];
        } else if (mask >> b & 1u) {
          out[b * ldo + o] = c[m][j];
        }
      }
    }
  }
  __syncthreads();
  if (ks > 1) add_split_parts<BT>(ks, nout, init, ldi, out, ldo, part, mask);
}

// The per-step product of a kernel: on the tensor cores where the plan says so (mma; in16: its rounded operand),
// else with W in shared memory (the compiler then emits shared loads) or in the global workspace. ldw: the SIMT
// layout's stride. MT: output tiles per warp at once of the tensor-core product.
template <int BT, int MT, typename T, typename A>
LSTM_DEV void step_product_any(bool w_in_smem, bool mma, const A* in_s, T* in16, const T* W_smem, const T* W_global,
                               int ldw, int K, int nout, int ks, const T* init, int ldi, A* out, int ldo, A* part,
                               unsigned mask) {
  if constexpr (sizeof(T) == 2 && BT == 8) {
    if (mma) {
      step_product_mma<T, MT>(in_s, in16, w_in_smem ? W_smem : W_global, K, nout, ks, init, ldi, out, ldo, part, mask);
      return;
    }
  }
  if (w_in_smem) {
    step_product<BT, true>(in_s, W_smem, ldw, K, nout, ks, init, ldi, out, ldo, part, mask);
  } else {
    step_product<BT, false>(in_s, W_global, ldw, K, nout, ks, init, ldi, out, ldo, part, mask);
  }
}

template <int BT>
LSTM_DEV unsigned active_mask(const int64_t* len_s, int64_t t) {
  unsigned m = 0;
#pragma unroll
  for (int b = 0; b < BT; ++b) m |= (t < len_s[b] ? 1u : 0u) << b;
  return m;
}

// ---- the batch tiles of a group (both kernels) -----------------------------------------------------------------

// The group's batch tiles: tile grp + j n_groups, j = 0, 1, ... while below n_tiles (group 1: one tile). Both
// kernels run them in rounds of p.tiles side by side.
LSTM_DEV int64_t tile_row0(const PlanArgs& p, int grp, int j, int bt) { return int64_t(grp + j * p.n_groups) * bt; }

// A round of ntv tiles side by side (the group's tiles c0, c0 + 1, ...): their first rows into row0_s [ntv], the
// lengths of their rows clamped to [0, steps] into len_tiles [ntv][BT] (0 past the batch), each tile's longest row
// into maxlen_s [ntv] and the longest of all into maxlen_s[nt]. Called by every thread; ends with a __syncthreads.
template <int BT>
LSTM_DEV void load_round(const PlanArgs& p, const int64_t* lengths, int64_t steps, int64_t batch, int grp, int c0,
                         int ntv, int nt, int64_t* row0_s, int64_t* len_tiles, int64_t* maxlen_s) {
  for (int i = int(threadIdx.x); i < ntv * BT; i += int(blockDim.x)) {
    const int j = i / BT, b = i - j * BT;
    const int64_t row = tile_row0(p, grp, c0 + j, BT) + b;
    if (b == 0) row0_s[j] = row;
    int64_t l = 0;
    if (row < batch) l = lengths == nullptr ? steps : lengths[row];
    len_tiles[i] = l < 0 ? 0 : (l > steps ? steps : l);
  }
  __syncthreads();
  for (int j = int(threadIdx.x); j < ntv; j += int(blockDim.x)) {
    int64_t m = 0;
    for (int b = 0; b < BT; ++b) m = len_tiles[j * BT + b] > m ? len_tiles[j * BT + b] : m;
    maxlen_s[j] = m;
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    int64_t m = 0;
    for (int j = 0; j < ntv; ++j) m = maxlen_s[j] > m ? maxlen_s[j] : m;
    maxlen_s[nt] = m;
  }
  __syncthreads();
}

// ---- forward ---------------------------------------------------------------------------------------------------

template <typename T, int BT>
LSTM_KERNEL void LSTM_LAUNCH_BOUNDS(kMaxThreads) forward_kernel(const FwdKernelParams<T> kp) {
  using A = typename AccType<T>::type;
  const ForwardArgs<T>& a = kp.a;
  const PlanArgs& p = kp.p;
  const CellDims& d = a.d;
  const int tid = int(threadIdx.x), nthr = int(blockDim.x);
  const int rank = int(blockIdx.x) % p.group, grp = int(blockIdx.x) / p.group;
  const Slice sl = cta_slice(d.n_blocks, p.group, rank);
  const int S = d.block_size, nbl = sl.nbl;
  const int GL = local_gate_rows(d, nbl), CL = nbl * S, RL = local_rec(d, nbl);
  const int R = d.rec_size, G = d.gate_rows, C = d.n_cells;
  const int glp = p.glp, clp = p.clp, rlp = p.rlp;
  const int zl = (d.forget_gate ? 2 : 1) * nbl;  // first local z row
  const int rl_cells = d.feedback_all ? d.gates_per_block() * nbl : 0;  // first local cell entry of r
  const int64_t B = a.batch, Tn = a.steps;
  const bool keep = a.act != nullptr;  // act and s_all kept for the backward (both, or neither: inference)
  const bool grouped = p.group > 1;     // r_t goes through the exchange buffer (else r_s holds it across steps)
  // grouped as a thread-block cluster: every CTA writes its entries of r_t straight into the r_s of each CTA of the
  // cluster (distributed shared memory), no exchange buffer (compile-time false where clusters do not apply)
  const bool dsmem = cluster_capable(int(sizeof(T))) && p.dsmem;  // (p.dsmem implies p.cluster)
  const int NT = p.tiles;

  const bool mma = sizeof(T) == 2 && BT == 8 && p.mma;  // compile-time false where the tensor cores do not apply
  const FwdSmem L = fwd_smem(R, glp, clp, rlp, BT, p.ksplit, int(sizeof(T)), int(sizeof(A)), p.u_in_smem, mma, NT,
                             grouped, dsmem);
  unsigned char* sm = lstm_dynamic_smem();
  // [R][BT] r_{t-1} of the tile, full;  dsmem: [2][NT][R][BT], step t reads r_{t-1} of tile j from [(t + 1) & 1][j]
  // and the cluster writes r_t to [t & 1][j]
  A* r_s = reinterpret_cast<A*>(sm + L.r);
  A* a_s = reinterpret_cast<A*>(sm + L.a);     // [BT][glp] net inputs of the owned gate rows
  A* part_s = reinterpret_cast<A*>(sm + L.part);
  A* s_tiles = reinterpret_cast<A*>(sm + L.s);  // [NT][BT][clp] cell states of the owned cells
  T* st_s = reinterpret_cast<T*>(sm + L.st);   // [BT][glp] A[t] of the owned gate rows, for the next live item
  int64_t* len_tiles = reinterpret_cast<int64_t*>(sm + L.len);  // [NT][BT] lengths of the tiles' rows
  // [NT] longest row of each tile, [1] of all of them, [NT] first row of each tile (shared memory, not registers:
  // the kernel is at its limit of 128 registers per thread)
  int64_t* maxlen_s = reinterpret_cast<int64_t*>(sm + L.maxlen);
  int64_t* row0_s = maxlen_s + NT + 1;
  A* rown_tiles = reinterpret_cast<A*>(sm + L.rown);  // [NT][BT][rlp] the owned entries of r (grouped)
  T* in16_s = reinterpret_cast<T*>(sm + L.in16);  // [BT][ldk] r_{t-1} rounded for the tensor cores (mma)
  T* W_smem = reinterpret_cast<T*>(sm + L.u);  // [R][glp] U^T slice, or [rows][ldk] U slice (mma)
  T* W_glob = p.u_in_smem ? nullptr : static_cast<T*>(p.u_work) + blockIdx.x * w_slice_elems(mma, R, glp);
  T* W = p.u_in_smem ? W_smem : W_glob;
  A* exch = grouped ? static_cast<A*>(p.exch) + size_t(grp) * 2 * NT * BT * R : nullptr;  // [2][NT][BT][R]
  unsigned* counter = grouped ? p.counters + grp : nullptr;

  if (mma) {  // U slice: W[lg][k] = U[g(lg)][k] (0 in the padding)
    const int ldk = mma_ldk(R);
    for (int i = tid; i < mma_rows(glp) * ldk; i += nthr) {
      const int lg = i / ldk, k = i - lg * ldk;
      W[i] = lg < GL && k < R ? a.U[size_t(gate_of(d, sl, lg)) * R + k] : zero<T>();
    }
  } else {  // U^T slice: W[k][lg] = U[g(lg)][k] (0 in the padding columns up to glp)
    for (int i = tid; i < glp * R; i += nthr) {
      const int lg = i / R, k = i - lg * R;
      W[size_t(k) * glp + lg] = lg < GL ? a.U[size_t(gate_of(d, sl, lg)) * R + k] : zero<T>();
    }
  }

  // Prefetch: local gate rows v = tid + j nthr, their global gate row (or -1).
  constexpr int PV = prefetch_rows(int(sizeof(T)), BT);
  int pg[PV];
#pragma unroll
  for (int j = 0; j < PV; ++j) {
    const int v = tid + j * nthr;
    pg[j] = v < GL ? gate_of(d, sl, v) : -1;
  }

  // The group's tiles, in rounds of ntv <= NT side by side; tile j of a round is the group's tile c0 + j.
  const int owned = (p.n_tiles - grp + p.n_groups - 1) / p.n_groups;
  unsigned epoch = 0;  // group barriers passed (also selects the exchange buffer)
  for (int c0 = 0; c0 < owned; c0 += NT) {
    const int ntv = owned - c0 < NT ? owned - c0 : NT;
    load_round<BT>(p, a.lengths, Tn, B, grp, c0, ntv, NT, row0_s, len_tiles, maxlen_s);
    auto row0_of = [&](int j) { return row0_s[j]; };
    auto tile_rows = [&](int j) { return int(B - row0_s[j] < BT ? B - row0_s[j] : BT); };
    // The round's cell states and (grouped) the owned entries of r.
    for (int i = tid; i < ntv * BT * CL; i += nthr) {
      const int jb = i / CL, c = i - jb * CL, j = jb / BT, b = jb - j * BT;
      const int64_t row0 = row0_of(j);
      s_tiles[jb * clp + c] = b < tile_rows(j) ? to_acc<A>(a.s0[(row0 + b) * C + sl.blk0 * S + c]) : A(0);
    }
    if (grouped) {
      for (int i = tid; i < ntv * BT * RL; i += nthr) {
        const int jb = i / RL, lk = i - jb * RL, j = jb / BT, b = jb - j * BT;
        const int64_t row0 = row0_of(j);
        rown_tiles[jb * rlp + lk] = b < tile_rows(j) ? to_acc<A>(a.r0[(row0 + b) * R + rec_of(d, sl, lk)]) : A(0);
      }
    }
    if (dsmem) {  // every tile's r0 in buffer 1 (read at step 0), buffer 0 zeroed; then the cluster may write
      for (int i = tid; i < ntv * R * BT; i += nthr) {
        const int j = i / (R * BT), kb = i - j * R * BT, k = kb / BT, b = kb - k * BT;
        r_s[(size_t(NT) + j) * R * BT + kb] = b < tile_rows(j) ? to_acc<A>(a.r0[(row0_of(j) + b) * R + k]) : A(0);
        r_s[size_t(j) * R * BT + kb] = A(0);
      }
      cluster_sync();
    } else if (!grouped && ntv == 1) {  // r_s holds the tile's full r for all steps
      const int64_t row0 = row0_of(0);
      for (int i = tid; i < R * BT; i += nthr) {
        const int k = i / BT, b = i - k * BT;
        r_s[i] = b < tile_rows(0) ? to_acc<A>(a.r0[(row0 + b) * R + k]) : A(0);
      }
    }

    // The group runs the items (t, j) in the order t, then j; an item is live when some row of tile j runs step t.
    // The next live item after (t, j), if any (a tile that stops being live at a step stays so: lengths).
    auto next_live = [&](int64_t t, int j, int64_t& tn, int& jn) {
      for (int jj = j + 1; jj < ntv; ++jj)
        if (t < maxlen_s[jj]) {
          tn = t;
          jn = jj;
          return true;
        }
      for (int jj = 0; jj < ntv; ++jj)
        if (t + 1 < maxlen_s[jj]) {
          tn = t + 1;
          jn = jj;
          return true;
        }
      return false;
    };
    {  // the stage: A[0] of the first live item; padding rows read the tile's last row (never stored)
      int64_t t0 = 0;
      int j0 = 0;
      if (next_live(-1, ntv, t0, j0)) {
        const int64_t row0 = row0_of(j0);
        const int nrows = tile_rows(j0);
        for (int i = tid; i < BT * GL; i += nthr) {
          const int b = i / GL, v = i - b * GL;
          st_s[b * glp + v] = a.A[(row0 + (b < nrows ? b : nrows - 1)) * G + gate_of(d, sl, v)];
        }
      }
    }
    __syncthreads();

    for (int64_t t = 0; t < Tn; ++t) {
      for (int j = 0; j < ntv; ++j) {
        const bool live = t < maxlen_s[j];  // some row of the tile runs step t (uniform over the group)
        int64_t tn = 0;
        int jn = 0;
        const bool prefetch = live && next_live(t, j, tn, jn);  // A of the next live item, during this one
        T pf[PV][BT];
        if (prefetch) {
          const int64_t nrow0 = row0_of(jn);
          const int nn = tile_rows(jn);
          const T* At = a.A + (size_t(tn) * B + nrow0) * G;
#pragma unroll
          for (int q = 0; q < PV; ++q) {
            if (pg[q] >= 0) {
#pragma unroll
              for (int b = 0; b < BT; ++b) pf[q][b] = At[size_t(b < nn ? b : nn - 1) * G + pg[q]];
            }
          }
        }
        if (live) {
          // 0. grouped: r_{t-1} of the tile's running rows, r0 or what the group wrote in the step before (dsmem:
          //    the cluster wrote it into r_s)
          if (grouped && !dsmem) {
            const int64_t row0 = row0_of(j);
            const unsigned mask = active_mask<BT>(len_tiles + j * BT, t);
            const A* r_in = exch + (size_t((epoch - 1) & 1u) * NT + j) * BT * R;
            for (int i = tid; i < BT * R; i += nthr) {
              const int b = i / R, k = i - b * R;
              r_s[k * BT + b] = !(mask >> b & 1u) ? A(0)
                                : t == 0              ? to_acc<A>(a.r0[(row0 + b) * R + k])
                                                      : ld_cg(r_in + i);
            }
            __syncthreads();
          }
          // 1. net inputs of the owned gate rows
          const A* r_in = dsmem ? r_s + (size_t((t + 1) & 1) * NT + j) * R * BT : r_s;
          step_product_any<BT, kMmaTiles>(p.u_in_smem, mma, r_in, in16_s, W_smem, W_glob, glp, R, GL, p.ksplit, st_s,
                                          glp, a_s, glp, part_s, (1u << BT) - 1u);
        }

        // 2. the cells of the owned blocks (what the product did not need is computed only now: registers)
        const int64_t row0 = row0_of(j);
        const int nrows = tile_rows(j);
        const unsigned mask = active_mask<BT>(len_tiles + j * BT, t);
        A* s_s = s_tiles + size_t(j) * BT * clp;
        A* r_own = grouped ? rown_tiles + size_t(j) * BT * rlp : nullptr;
        A* r_out = grouped ? exch + (size_t(epoch & 1u) * NT + j) * BT * R : nullptr;  // this step's r of the tile
        for (int item = tid; item < BT * nbl; item += nthr) {
          const int b = item / nbl, blk = item - b * nbl;
          if (b >= nrows) continue;
          const int64_t row = row0 + b;
          const int gb = sl.blk0 + blk;
          // keep == false (inference): act and s_all are not kept (nullptr), only y and the final state
          T* act_t = keep ? a.act + (size_t(t) * B + row) * G : nullptr;
          T* y_t = a.y + (size_t(t) * B + row) * C;
          T* s_t = keep ? a.s_all + (size_t(t) * B + row) * C : nullptr;
          A* s_b = s_s + b * clp + blk * S;
          if (!(mask >> b & 1u)) {  // frozen: keeps its state
            if (keep) {
              act_t[d.iota_row() + gb] = zero<T>();
              act_t[d.omega_row() + gb] = zero<T>();
              if (d.forget_gate) act_t[d.phi_row() + gb] = zero<T>();
            }
            for (int k = 0; k < S; ++k) {
              y_t[gb * S + k] = zero<T>();
              if (keep) {
                act_t[d.z_row() + gb * S + k] = zero<T>();
                s_t[gb * S + k] = from_acc<T>(s_b[k]);
              }
            }
            continue;
          }
          const A* a_b = a_s + b * glp;
          const A y_iota = sigmoid(a_b[blk]);
          const A y_omega = sigmoid(a_b[zl + CL + blk]);
          const A y_phi = d.forget_gate ? sigmoid(a_b[nbl + blk]) : A(1);
          if (keep) {
            act_t[d.iota_row() + gb] = from_acc<T>(y_iota);
            act_t[d.omega_row() + gb] = from_acc<T>(y_omega);
            if (d.forget_gate) act_t[d.phi_row() + gb] = from_acc<T>(y_phi);
          }
          for (int k = 0; k < S; ++k) {
            const int jg = gb * S + k;
            const A g = squash_g(d.squash, a_b[zl + blk * S + k]);
            const A s = cell_state(d.forget_gate, y_phi, s_b[k], y_iota, g);
            const A yc = cell_output(d.squash, y_omega, s);
            s_b[k] = s;
            y_t[jg] = from_acc<T>(yc);
            if (keep) {
              act_t[d.z_row() + jg] = from_acc<T>(g);
              s_t[jg] = from_acc<T>(s);
            }
            const int kr = d.r_cells() + jg;
            if (grouped) {
              if (!dsmem) st_cg(r_out + size_t(b) * R + kr, yc);
              r_own[b * rlp + rl_cells + blk * S + k] = yc;
            } else {
              r_s[kr * BT + b] = yc;
            }
          }
          if (d.feedback_all) {
            const int n = d.n_blocks;
            const A gates[3] = {y_iota, d.forget_gate ? y_phi : y_omega, y_omega};
            for (int q = 0; q < d.gates_per_block(); ++q) {
              const int kr = q * n + gb;
              if (grouped) {
                if (!dsmem) st_cg(r_out + size_t(b) * R + kr, gates[q]);
                r_own[b * rlp + q * nbl + blk] = gates[q];
              } else {
                r_s[kr * BT + b] = gates[q];
              }
            }
          }
        }

        // A of the next live item into the stage (its readers, step 1, finished before step 2)
        if (prefetch) {
#pragma unroll
          for (int q = 0; q < PV; ++q) {
            if (pg[q] >= 0) {
#pragma unroll
              for (int b = 0; b < BT; ++b) st_s[b * glp + tid + q * nthr] = pf[q][b];
            }
          }
        }
        __syncthreads();  // r_s complete (group 1), stage filled, a_s consumed
        // dsmem: the running rows' new entries of r (this CTA's) into r_t of the tile in every CTA of the cluster
        if constexpr (cluster_capable(int(sizeof(T)))) {  // (A is float)
          if (dsmem && live) {
            const unsigned running = active_mask<BT>(len_tiles + j * BT, t);  // (mask, again: registers)
            for (int i = tid; i < BT * RL; i += nthr) {
              const int b = i / RL, lk = i - b * RL;
              if (!(running >> b & 1u)) continue;
              const A v = r_own[b * rlp + lk];
              A* dst = r_s + (size_t(t & 1) * NT + j) * R * BT + rec_of(d, sl, lk) * BT + b;
              for (int q = 0; q < p.group; ++q) st_cluster(dst, q, v);
            }
          }
        }
      }
      // 3. grouped: every CTA of the group has written its entries of r_t for all the tiles
      if (grouped && t < maxlen_s[NT]) {
        ++epoch;
        group_barrier<cluster_capable(int(sizeof(T)))>(p, counter, epoch);
      }
    }

    // r_T, s_T of the tiles (this CTA's entries)
    for (int j = 0; j < ntv; ++j) {
      const int64_t row0 = row0_of(j);
      const int nrows = tile_rows(j);
      for (int i = tid; i < BT * RL; i += nthr) {
        const int b = i / RL, lk = i - b * RL;
        if (b < nrows) {
          const int k = rec_of(d, sl, lk);
          a.r_T[(row0 + b) * R + k] =
              from_acc<T>(grouped ? rown_tiles[(size_t(j) * BT + b) * rlp + lk] : r_s[k * BT + b]);
        }
      }
      for (int i = tid; i < BT * CL; i += nthr) {
        const int b = i / CL, c = i - b * CL;
        if (b < nrows) a.s_T[(row0 + b) * C + sl.blk0 * S + c] = from_acc<T>(s_tiles[(size_t(j) * BT + b) * clp + c]);
      }
    }
    __syncthreads();  // the round's state read before the next round sets it
  }
}

// ---- backward --------------------------------------------------------------------------------------------------

template <typename T, int BT>
LSTM_KERNEL void LSTM_LAUNCH_BOUNDS(kMaxThreads) backward_kernel(const BwdKernelParams<T> kp) {
  using A = typename AccType<T>::type;
  const BackwardArgs<T>& a = kp.a;
  const PlanArgs& p = kp.p;
  const CellDims& d = a.d;
  const int tid = int(threadIdx.x), nthr = int(blockDim.x);
  const int rank = int(blockIdx.x) % p.group, grp = int(blockIdx.x) / p.group;
  const Slice sl = cta_slice(d.n_blocks, p.group, rank);
  const int S = d.block_size, nbl = sl.nbl, gpb = d.gates_per_block();
  const int GL = local_gate_rows(d, nbl), CL = nbl * S, RL = local_rec(d, nbl);
  const int R = d.rec_size, G = d.gate_rows, C = d.n_cells;
  const int glp = p.glp, clp = p.clp, rlp = p.rlp;
  const int zl = (d.forget_gate ? 2 : 1) * nbl;
  const int rl_cells = d.feedback_all ? gpb * nbl : 0;  // first local cell entry of r
  const int64_t B = a.batch, Tn = a.steps;
  const bool product = !d.truncate;              // the gradient through r_{t-1}
  const bool exchange = p.group > 1 && product;  // da_t goes through the exchange buffer (else da_s holds it)
  // a thread-block cluster: every CTA writes its da_t straight into the da_s (in16_s) of each CTA of the cluster
  // (compile-time false where clusters do not apply; p.dsmem implies p.cluster and the product)
  const bool dsmem = cluster_capable(int(sizeof(T))) && p.dsmem;
  const int NT = p.tiles;

  const bool mma = sizeof(T) == 2 && BT == 8 && p.mma;  // compile-time false where the tensor cores do not apply
  const BwdSmem L =
      bwd_smem(G, rlp, glp, clp, BT, p.ksplit, int(sizeof(T)), int(sizeof(A)), p.u_in_smem, mma, NT, dsmem);
  unsigned char* sm = lstm_dynamic_smem();
  // [G][BT] da_{t+1} of the tile, full (not with mma: in16_s);  dsmem: [2][NT][G][BT], step t reads da_{t+1} of tile
  // j from [(t + 1) & 1][j] and the cluster writes da_t to [t & 1][j] (the same for in16_s, [2][NT][BT][ldk])
  A* da_s = reinterpret_cast<A*>(sm + L.da);
  A* dr_tiles = reinterpret_cast<A*>(sm + L.dr);  // [NT][BT][rlp] gradient on the owned entries of r_t
  A* ds_tiles = reinterpret_cast<A*>(sm + L.ds);  // [NT][BT][clp] gradient on the owned cell states s_t
  A* part_s = reinterpret_cast<A*>(sm + L.part);
  T* act_st = reinterpret_cast<T*>(sm + L.act);   // [BT][glp]    act[t] of the next live item
  T* dy_st = reinterpret_cast<T*>(sm + L.dy);     // [BT][clp]    dy[t] of the next live item
  T* s_tiles = reinterpret_cast<T*>(sm + L.s);    // [NT][2][BT][clp] s_u of tile j in buffer u & 1 (s_{-1} = s0)
  int64_t* len_tiles = reinterpret_cast<int64_t*>(sm + L.len);  // [NT][BT] lengths of the tiles' rows
  // [NT] longest row of each tile, [1] of all of them, [NT] first row of each tile (shared memory: registers are
  // short, as in the forward)
  int64_t* maxlen_s = reinterpret_cast<int64_t*>(sm + L.maxlen);
  int64_t* row0_s = maxlen_s + NT + 1;
  T* in16_s = reinterpret_cast<T*>(sm + L.in16);  // [BT][ldk] da_{t+1} rounded for the tensor cores (mma; dsmem above)
  T* W_smem = reinterpret_cast<T*>(sm + L.u);    // [G][rlp] U column slice, or [rows][ldk] its transpose (mma)
  T* W_glob = p.u_in_smem ? nullptr : static_cast<T*>(p.u_work) + blockIdx.x * w_slice_elems(mma, G, rlp);
  T* W = p.u_in_smem ? W_smem : W_glob;
  A* exch = exchange ? static_cast<A*>(p.exch) + size_t(grp) * 2 * NT * BT * G : nullptr;  // [2][NT][BT][G]
  unsigned* counter = exchange ? p.counters + grp : nullptr;
  auto s_buf = [&](int j, int64_t u) { return s_tiles + size_t(2 * j + int(u & 1)) * BT * clp; };
  // The da buffer of tile j and step u (dsmem; else the one buffer): its offset in da_s or in16_s (mma).
  auto da_buf = [&](int j, int64_t u) {
    return dsmem ? (size_t(int(u & 1)) * NT + j) * BT * (mma ? size_t(mma_ldk(G)) : size_t(G)) : size_t(0);
  };
  // da[b][g] of the tile into the product's operand at offset `buf`: da_s, or (mma) rounded straight into in16_s,
  // which then holds it alone (bwd_smem leaves no room for da_s: a tile of 8 rows fits where it would not)
  auto put_da = [&](size_t buf, int b, int g, A v) {
    if (mma) {
      in16_s[buf + size_t(b) * mma_ldk(G) + g] = from_acc<T>(v);
    } else {
      da_s[buf + size_t(g) * BT + b] = v;
    }
  };

  if (product && mma) {  // W[lk][g] = U[g][k(lk)] (0 in the padding); in16_s: 0 past G, which nothing else writes
    const int ldk = mma_ldk(G);
    for (int i = tid; i < mma_rows(rlp) * ldk; i += nthr) {
      const int lk = i / ldk, g = i - lk * ldk;
      W[i] = lk < RL && g < G ? a.U[size_t(g) * R + rec_of(d, sl, lk)] : zero<T>();
    }
    for (int i = tid; i < (dsmem ? 2 * NT : 1) * BT * ldk; i += nthr) in16_s[i] = zero<T>();
  } else if (product) {  // W[g][lk] = U[g][k(lk)] (0 in the padding columns up to rlp)
    for (int i = tid; i < G * rlp; i += nthr) {
      const int g = i / rlp, lk = i - g * rlp;
      W[size_t(g) * rlp + lk] = lk < RL ? a.U[size_t(g) * R + rec_of(d, sl, lk)] : zero<T>();
    }
  }

  // Prefetch: virtual rows v = tid + j nthr of a step's data: v < GL act, v < GL + CL dy, else s (of the step
  // before); (kind << 28) | offset in a row of the source (gate row or cell), or -1.
  const int V = GL + 2 * CL;
  constexpr int PV = prefetch_rows(int(sizeof(T)), BT);
  int pg[PV];
#pragma unroll
  for (int j = 0; j < PV; ++j) {
    const int v = tid + j * nthr;
    if (v >= V) {
      pg[j] = -1;
    } else if (v < GL) {
      pg[j] = gate_of(d, sl, v);
    } else {
      const int kind = (v - GL) / CL + 1, c = (v - GL) % CL;
      pg[j] = (kind << 28) | (sl.blk0 * S + c);
    }
  }

  // The group's tiles, in rounds of ntv <= NT side by side (as in the forward); tile j of a round is the group's
  // tile c0 + j.
  const int owned = (p.n_tiles - grp + p.n_groups - 1) / p.n_groups;
  unsigned epoch = 0;  // group barriers passed (also selects the exchange buffer)
  for (int c0 = 0; c0 < owned; c0 += NT) {
    const int ntv = owned - c0 < NT ? owned - c0 : NT;
    load_round<BT>(p, a.lengths, Tn, B, grp, c0, ntv, NT, row0_s, len_tiles, maxlen_s);
    auto row0_of = [&](int j) { return row0_s[j]; };
    auto tile_rows = [&](int j) { return int(B - row0_s[j] < BT ? B - row0_s[j] : BT); };
    // dsmem: the cluster's CTAs are done with the round before (the dr0 pass reads the buffers the first step of
    // this round may write)
    if (dsmem) cluster_sync();
    // The round's gradients on r_T and s_T (owned entries).
    for (int i = tid; i < ntv * BT * RL; i += nthr) {
      const int jb = i / RL, lk = i - jb * RL, j = jb / BT, b = jb - j * BT;
      const int64_t row0 = row0_of(j);
      dr_tiles[jb * rlp + lk] = b < tile_rows(j) ? to_acc<A>(a.dr_T[(row0 + b) * R + rec_of(d, sl, lk)]) : A(0);
    }
    for (int i = tid; i < ntv * BT * CL; i += nthr) {
      const int jb = i / CL, c = i - jb * CL, j = jb / BT, b = jb - j * BT;
      const int64_t row0 = row0_of(j);
      ds_tiles[jb * clp + c] = b < tile_rows(j) ? to_acc<A>(a.ds_T[(row0 + b) * C + sl.blk0 * S + c]) : A(0);
    }

    // The group runs the items (t, j) in the order t descending, then j; an item is live when some row of tile j
    // runs step t (a tile is live from its longest row's last step down to step 0). The next live item after
    // (t, j), if any.
    auto next_live = [&](int64_t t, int j, int64_t& tn, int& jn) {
      for (int jj = j + 1; jj < ntv; ++jj)
        if (t < maxlen_s[jj]) {
          tn = t;
          jn = jj;
          return true;
        }
      if (t >= 1)
        for (int jj = 0; jj < ntv; ++jj)
          if (t - 1 < maxlen_s[jj]) {
            tn = t - 1;
            jn = jj;
            return true;
          }
      return false;
    };
    // Padding rows read the tile's last row (never stored).
    // Each tile's s at its first live step (its longest row's last), into its buffer.
    for (int i = tid; i < ntv * BT * CL; i += nthr) {
      const int jb = i / CL, c = i - jb * CL, j = jb / BT, b = jb - j * BT;
      const int64_t t0 = maxlen_s[j] - 1;
      if (t0 >= 0) {
        const int nrows = tile_rows(j);
        const int64_t row = row0_of(j) + (b < nrows ? b : nrows - 1);
        s_buf(j, t0)[b * clp + c] = a.s_all[(size_t(t0) * B + row) * C + sl.blk0 * S + c];
      }
    }
    {  // the stage: act, dy and s_{t-1} of the first live item
      int64_t t0 = 0;
      int j0 = 0;
      if (next_live(maxlen_s[NT], ntv, t0, j0)) {  // the first step of the longest row
        const int64_t row0 = row0_of(j0);
        const int nrows = tile_rows(j0);
        for (int i = tid; i < BT * V; i += nthr) {
          const int b = i / V, v = i - b * V;
          const int64_t row = row0 + (b < nrows ? b : nrows - 1);
          if (v < GL) {
            act_st[b * glp + v] = a.act[(size_t(t0) * B + row) * G + gate_of(d, sl, v)];
          } else {
            const int c = (v - GL) % CL, kind = (v - GL) / CL;
            const int jc = sl.blk0 * S + c;
            if (kind == 0) {
              dy_st[b * clp + c] = a.dy[(size_t(t0) * B + row) * C + jc];
            } else {
              s_buf(j0, t0 - 1)[b * clp + c] =
                  t0 >= 1 ? a.s_all[(size_t(t0 - 1) * B + row) * C + jc] : a.s0[row * C + jc];
            }
          }
        }
      }
    }
    __syncthreads();

    // t = -1: step 1 only, the gradient on r_{-1} = r0 (dr0)
    for (int64_t t = Tn - 1; t >= -1; --t) {
      for (int j = 0; j < ntv; ++j) {
        if (t >= maxlen_s[j]) {  // no row of the tile runs step t (uniform over the group)
          const int64_t row0 = row0_of(j);
          const int nrows = tile_rows(j);
          for (int i = tid; i < BT * GL; i += nthr) {
            const int b = i / GL, v = i - b * GL;
            if (b < nrows) a.dA[(size_t(t) * B + row0 + b) * G + gate_of(d, sl, v)] = zero<T>();
          }
          continue;
        }
        A* dr_s = dr_tiles + size_t(j) * BT * rlp;
        A* ds_s = ds_tiles + size_t(j) * BT * clp;

        // 1. the gradient on the owned entries of r_t, from da_{t+1} of the tile's rows that run step t + 1
        //    (exchange: what the group wrote before the last barrier; else what step 2 left in da_s)
        if (product && t + 1 < maxlen_s[j]) {
          const unsigned mask1 = active_mask<BT>(len_tiles + j * BT, t + 1);
          if (exchange && !dsmem) {
            const A* da_in = exch + (size_t((epoch - 1) & 1u) * NT + j) * BT * G;
            for (int i = tid; i < BT * G; i += nthr) {
              const int b = i / G, g = i - b * G;
              if (mask1 >> b & 1u) put_da(0, b, g, ld_cg(da_in + i));
            }
            __syncthreads();
          }
          const size_t in_buf = da_buf(j, t + 1);  // (dsmem: written by the cluster before the last barrier)
          step_product_any<BT, 2>(p.u_in_smem, mma, mma ? nullptr : da_s + in_buf, in16_s + in_buf, W_smem, W_glob,
                                  rlp, G, RL, p.ksplit, static_cast<const T*>(nullptr), 0, dr_s, rlp, part_s,
                                  mask1);  // syncs
        } else {
          __syncthreads();  // the stage filled by the item before
        }
        if (t < 0) continue;

        int64_t tn = 0;
        int jn = 0;
        // act, dy, s_{tn-1} of the next live item, loaded during step 2 (not across step 1: registers)
        const bool prefetch = next_live(t, j, tn, jn);
        T pf[PV][BT];
        if (prefetch) {
          const int64_t nrow0 = row0_of(jn);
          const int nn = tile_rows(jn);
#pragma unroll
          for (int q = 0; q < PV; ++q) {
            if (pg[q] < 0) continue;
            const int kind = pg[q] >> 28, off = pg[q] & 0xFFFFFFF;
            const T* src = kind == 0   ? a.act + (size_t(tn) * B + nrow0) * G
                           : kind == 1 ? a.dy + (size_t(tn) * B + nrow0) * C
                           : tn >= 1   ? a.s_all + (size_t(tn - 1) * B + nrow0) * C
                                       : a.s0 + nrow0 * C;
            const int ld = kind == 0 ? G : C;
#pragma unroll
            for (int b = 0; b < BT; ++b) pf[q][b] = src[size_t(b < nn ? b : nn - 1) * ld + off];
          }
        }
        const int s_next = (2 * jn + int((tn - 1) & 1)) * BT * clp;  // where s_{tn-1} goes in s_tiles

        // 2. the cells of the owned blocks at step t
        const int64_t row0 = row0_of(j);
        const int nrows = tile_rows(j);
        const unsigned mask = active_mask<BT>(len_tiles + j * BT, t);
        A* da_out = exchange ? exch + (size_t(epoch & 1u) * NT + j) * BT * G : nullptr;
        const size_t out_buf = da_buf(j, t);  // where put_da writes da_t (dsmem: this CTA's copy)
        const bool to_exch = exchange && !dsmem;
        for (int item = tid; item < BT * nbl; item += nthr) {
          const int b = item / nbl, blk = item - b * nbl;
          if (b >= nrows) continue;
          const int64_t row = row0 + b;
          const int gb = sl.blk0 + blk;
          T* dA_t = a.dA + (size_t(t) * B + row) * G;
          if (!(mask >> b & 1u)) {
            dA_t[d.iota_row() + gb] = zero<T>();
            dA_t[d.omega_row() + gb] = zero<T>();
            if (d.forget_gate) dA_t[d.phi_row() + gb] = zero<T>();
            for (int k = 0; k < S; ++k) dA_t[d.z_row() + gb * S + k] = zero<T>();
            continue;
          }
          const T* act_b = act_st + b * glp;
          const A y_iota = to_acc<A>(act_b[blk]);
          const A y_omega = to_acc<A>(act_b[zl + CL + blk]);
          const A y_phi = d.forget_gate ? to_acc<A>(act_b[nbl + blk]) : A(1);
          A* dr_b = dr_s + b * rlp;
          A d_iota = A(0), d_phi = A(0), d_omega = A(0);
          if (d.feedback_all) {  // gate activations fed back through r
            d_iota = dr_b[blk];
            if (d.forget_gate) {
              d_phi = dr_b[nbl + blk];
              d_omega = dr_b[2 * nbl + blk];
            } else {
              d_omega = dr_b[nbl + blk];
            }
            if (!product) {
              dr_b[blk] = A(0);
              dr_b[nbl + blk] = A(0);
              if (d.forget_gate) dr_b[2 * nbl + blk] = A(0);
            }
          }
          const T* s_b = s_buf(j, t) + b * clp + blk * S;
          const T* sp_b = s_buf(j, t - 1) + b * clp + blk * S;
          const T* dy_b = dy_st + b * clp + blk * S;
          A* ds_b = ds_s + b * clp + blk * S;
          A* drc_b = dr_b + rl_cells + blk * S;
          for (int k = 0; k < S; ++k) {
            const int jg = gb * S + k;
            const A dyc = to_acc<A>(dy_b[k]) + drc_b[k];
            if (!product) drc_b[k] = A(0);
            const CellGrads<A> c = cell_backward(d.squash, d.forget_gate, y_iota, y_phi, y_omega,
                                                 to_acc<A>(act_b[zl + blk * S + k]), to_acc<A>(sp_b[k]),
                                                 to_acc<A>(s_b[k]), dyc, ds_b[k]);
            d_iota += c.d_iota;
            d_phi += c.d_phi;
            d_omega += c.d_omega;
            ds_b[k] = c.ds_prev;
            const int g = d.z_row() + jg;
            dA_t[g] = from_acc<T>(c.da_z);
            if (product) {
              if (to_exch) st_cg(da_out + size_t(b) * G + g, c.da_z); else put_da(out_buf, b, g, c.da_z);
            }
          }
          const A da_i = gate_grad(d_iota, y_iota), da_o = gate_grad(d_omega, y_omega);
          const int gi = d.iota_row() + gb, go = d.omega_row() + gb;
          dA_t[gi] = from_acc<T>(da_i);
          dA_t[go] = from_acc<T>(da_o);
          A da_f = A(0);
          const int gf = d.phi_row() + gb;
          if (d.forget_gate) {
            da_f = gate_grad(d_phi, y_phi);
            dA_t[gf] = from_acc<T>(da_f);
          }
          if (product) {
            if (to_exch) {
              A* o = da_out + size_t(b) * G;
              st_cg(o + gi, da_i);
              st_cg(o + go, da_o);
              if (d.forget_gate) st_cg(o + gf, da_f);
            } else {
              put_da(out_buf, b, gi, da_i);
              put_da(out_buf, b, go, da_o);
              if (d.forget_gate) put_da(out_buf, b, gf, da_f);
            }
          }
        }
        __syncthreads();  // the stage consumed; da_s complete (no exchange)
        // dsmem: the running rows' da_t of the owned gate rows (this CTA's copy) into the other CTAs of the cluster
        if constexpr (cluster_capable(int(sizeof(T)))) {
          if (dsmem) {
            const unsigned running = active_mask<BT>(len_tiles + j * BT, t);
            for (int i = tid; i < BT * GL; i += nthr) {
              const int b = i / GL, lg = i - b * GL;
              if (!(running >> b & 1u)) continue;
              const int g = gate_of(d, sl, lg);
              if (mma) {
                T* src = in16_s + out_buf + size_t(b) * mma_ldk(G) + g;
                for (int q = 0; q < p.group; ++q)
                  if (q != rank) st_cluster(src, q, *src);
              } else {
                A* src = da_s + out_buf + size_t(g) * BT + b;
                for (int q = 0; q < p.group; ++q)
                  if (q != rank) st_cluster(src, q, *src);
              }
            }
          }
        }

        // the next live item's data into the stage (made visible by the __syncthreads that opens it)
        if (prefetch) {
#pragma unroll
          for (int q = 0; q < PV; ++q) {
            if (pg[q] < 0) continue;
            const int kind = pg[q] >> 28, v = tid + q * nthr;
            T* dst = kind == 0 ? act_st + v : kind == 1 ? dy_st + (v - GL) : s_tiles + s_next + (v - GL - CL);
            const int ld = kind == 0 ? glp : clp;
#pragma unroll
            for (int b = 0; b < BT; ++b) dst[b * ld] = pf[q][b];
          }
        }
      }
      // 3. exchange: every CTA of the group has written its da_t of all the tiles
      if (exchange && t >= 0 && t < maxlen_s[NT]) {
        ++epoch;
        group_barrier<cluster_capable(int(sizeof(T)))>(p, counter, epoch);
      }
    }

    // dr0, ds0 of the tiles (this CTA's entries)
    for (int j = 0; j < ntv; ++j) {
      const A* dr_s = dr_tiles + size_t(j) * BT * rlp;
      const int64_t row0 = row0_of(j);
      const int nrows = tile_rows(j);
      for (int i = tid; i < BT * RL; i += nthr) {
        const int b = i / RL, lk = i - b * RL;
        if (b < nrows) a.dr0[(row0 + b) * R + rec_of(d, sl, lk)] = from_acc<T>(dr_s[b * rlp + lk]);
      }
      for (int i = tid; i < BT * CL; i += nthr) {
        const int b = i / CL, c = i - b * CL;
        if (b < nrows) a.ds0[(row0 + b) * C + sl.blk0 * S + c] = from_acc<T>(ds_tiles[(size_t(j) * BT + b) * clp + c]);
      }
    }
    __syncthreads();  // the round's state read before the next round sets it
  }
}

// ---- the planner (host) ------------------------------------------------------------------------------------------

// Blocks per SM the kernel with batch tile `bt` reaches with `threads` threads and `smem` bytes of dynamic shared
// memory (cudaOccupancyMaxActiveBlocksPerMultiprocessor on the GPU).
using OccupancyFn = int (*)(int bt, int threads, size_t smem, void* ctx);

inline int pow2_at_least(int64_t x) {
  int p = 1;
  while (p < x) p *= 2;
  return p;
}

// Strides of the local rows for the largest slice of a plan.
struct Strides {
  int glp, clp, rlp;
};
inline Strides plan_strides(const CellDims& d, const LaunchPlan& plan) {
  const int nbl = plan.max_blocks;
  const int GL = local_gate_rows(d, nbl), CL = nbl * d.block_size, RL = local_rec(d, nbl);
  // gate rows and r entries: even (the product reads weights in pairs)
  return {GL > 0 ? (GL + 1) / 2 * 2 : 2, CL > 0 ? CL : 1, RL > 0 ? (RL + 1) / 2 * 2 : 2};
}

// Byte offsets of the parts of the workspace.
struct Workspace {
  size_t counters, exch, u_work, total;
};
inline Workspace workspace_layout(bool forward, const CellDims& d, const LaunchPlan& plan, int tsize, int asize) {
  const bool product = forward || !d.truncate;
  const Strides st = plan_strides(d, plan);
  Workspace w{};
  size_t o = 0;
  w.counters = o;
  if (plan.group > 1) o = (o + size_t(plan.n_groups) * sizeof(unsigned) + 255) / 256 * 256;
  w.exch = o;
  if (plan.group > 1 && product)
    o = (o + size_t(plan.n_groups) * 2 * plan.tiles * plan.bt * (forward ? d.rec_size : d.gate_rows) * asize + 255) /
            256 * 256;
  w.u_work = o;
  if (!plan.u_in_smem)
    o += size_t(plan.group) * plan.n_groups *
         w_slice_elems(plan.mma, forward ? d.rec_size : d.gate_rows, forward ? st.glp : st.rlp) * tsize;
  w.total = o;
  return w;
}

inline PlanArgs plan_args(bool forward, const CellDims& d, const LaunchPlan& plan, void* workspace, int tsize,
                          int asize) {
  const Strides st = plan_strides(d, plan);
  const Workspace w = workspace_layout(forward, d, plan, tsize, asize);
  unsigned char* ws = static_cast<unsigned char*>(workspace);
  PlanArgs p{};
  p.group = plan.group;
  p.n_groups = plan.n_groups;
  p.n_tiles = plan.n_tiles;
  p.tiles = plan.tiles;
  p.ksplit = plan.ksplit;
  p.glp = st.glp;
  p.clp = st.clp;
  p.rlp = st.rlp;
  p.u_in_smem = plan.u_in_smem;
  p.mma = plan.mma;
  p.cluster = plan.cluster;
  p.dsmem = plan.dsmem;
  p.counters = plan.group > 1 ? reinterpret_cast<unsigned*>(ws + w.counters) : nullptr;
  p.exch = w.u_work > w.exch ? static_cast<void*>(ws + w.exch) : nullptr;
  p.u_work = plan.u_in_smem ? nullptr : static_cast<void*>(ws + w.u_work);
  return p;
}

// forward = true: the forward kernel; else the backward.
inline LaunchPlan plan_launch(bool forward, const CellDims& d, int64_t batch, const DeviceInfo& dev, int tsize,
                              int asize, OccupancyFn occ, void* occ_ctx) {
  if (batch <= 0 || d.n_blocks <= 0) {  // nothing runs on the device (the caller handles it)
    LaunchPlan none{};
    none.ok = true;
    return none;
  }
  const int nb = d.n_blocks, S = d.block_size, R = d.rec_size, G = d.gate_rows;
  const bool product = forward || !d.truncate;
  const int bt_max = max_batch_tile(tsize);
  const int bt_pref = batch >= bt_max ? bt_max : pow2_at_least(batch);

  auto try_plan = [&](int bt, int group, bool u_smem, LaunchPlan& out) -> bool {
    LaunchPlan plan{};
    plan.max_blocks = (nb + group - 1) / group;  // the largest slice
    const int nbl = plan.max_blocks;
    const int GL = local_gate_rows(d, nbl), CL = nbl * S, RL = local_rec(d, nbl);
    const int K = forward ? R : G, nout = forward ? GL : RL;
    const int stage = forward ? GL : GL + 2 * CL;
    // reduction split: as many thread sets as fit, keeping chunks of >= kMinChunk
    int ks = 1;
    if (product)
      while (ks < kMaxSplit && (nout + 1) / 2 * ks * 2 <= kMaxThreads && K / (ks * 2) >= kMinChunk) ks *= 2;
    const int pairs = (nout + 1) / 2;  // each thread of a set computes two outputs
    int nrt = pairs < 32 ? 32 : (pairs + 31) / 32 * 32;
    if (nrt * ks > kMaxThreads) nrt = kMaxThreads / ks;
    int threads = nrt * ks;
    const int items = bt * nbl;
    const int pv = prefetch_rows(tsize, bt);
    while (threads < kMaxThreads && (threads < items || stage > threads * pv))
      threads += ks * 32 <= kMaxThreads - threads ? ks * 32 : kMaxThreads - threads;
    threads -= threads % ks;
    if (stage > threads * pv) return false;
    plan.bt = bt;
    plan.group = group;
    plan.threads = threads;
    plan.ksplit = ks;
    plan.u_in_smem = u_smem || !product;
    // tensor cores: 16-bit storage, a full tile of 8 rows, whole warps in every thread set
    plan.mma = dev.mma && tsize == 2 && bt == 8 && product && threads % (32 * ks) == 0;
    const Strides st = plan_strides(d, plan);
    plan.n_tiles = int((batch + bt - 1) / bt);
    auto smem_for = [&](int nt) {
      return forward ? fwd_smem(R, st.glp, st.clp, st.rlp, bt, ks, tsize, asize, plan.u_in_smem, plan.mma, nt,
                                group > 1, plan.dsmem).total
                     : bwd_smem(G, st.rlp, st.glp, st.clp, bt, ks, tsize, asize, plan.u_in_smem && product,
                                plan.mma, nt, plan.dsmem).total;
    };
    size_t smem = smem_for(1);
    if (smem > size_t(dev.max_smem_per_block)) return false;
    const int per_sm = occ(bt, threads, smem, occ_ctx);
    if (per_sm < 1) return false;
    const int64_t capacity = int64_t(per_sm) * dev.sm_count;  // co-resident CTAs
    if (group == 1) {
      plan.n_groups = plan.n_tiles;  // no inter-CTA synchronisation: any grid size
    } else {
      if (!dev.cooperative || capacity < group) return false;
      plan.n_groups = int(capacity / group < plan.n_tiles ? capacity / group : plan.n_tiles);
      // A group runs its tiles side by side, as many as their state (shared memory) allows without lowering the
      // CTAs per SM: all of them, or half, a quarter, ... (rounds one after another). Not the backward without the
      // product (no barrier; its da_s would be shared by the tiles).
      if (product) {
        for (int nt = (plan.n_tiles + plan.n_groups - 1) / plan.n_groups; nt > 1; nt = (nt + 1) / 2) {
          const size_t s = smem_for(nt);
          if (s <= size_t(dev.max_smem_per_block) && occ(bt, threads, s, occ_ctx) >= per_sm) {
            plan.tiles = nt;
            smem = s;
            break;
          }
        }
      }
    }
    // A group with a per-step barrier as a thread-block cluster, where the device has them (the launcher drops it
    // where the GPU cannot hold all groups' clusters at once: cluster_fits); its CTAs then exchange r_t (forward) or
    // da_t (backward) through distributed shared memory where that layout (every tile's r or da of two steps) fits
    // as many CTAs per SM.
    plan.cluster = group > 1 && product && group <= dev.cluster && cluster_capable(tsize);
    if (plan.cluster) {
      plan.dsmem = true;
      const size_t s = smem_for(plan.tiles);
      if (s <= size_t(dev.max_smem_per_block) && occ(bt, threads, s, occ_ctx) >= per_sm)
        smem = s;
      else
        plan.dsmem = false;
    }
    plan.smem_bytes = smem;
    plan.workspace_bytes = workspace_layout(forward, d, plan, tsize, asize).total;
    plan.ok = true;
    out = plan;
    return true;
  };
  auto next_group = [](int g) { return g < 8 ? g + 1 : g + (g + 3) / 4; };
  const int max_group = nb < dev.sm_count * 4 ? nb : dev.sm_count * 4;

  // 1. U on chip: the largest batch tile, then the fewest CTAs per group that hold their slices; widened while
  //    one CTA's work per step is large and every tile still gets its own SMs.
  for (int bt = bt_pref; bt >= 1; bt /= 2) {
    LaunchPlan plan{};
    int group = 0;
    for (int g = 1; g <= max_group; g = next_group(g)) {
      if (try_plan(bt, g, true, plan)) {
        group = g;
        break;
      }
    }
    if (group == 0) continue;
    const int64_t tiles = plan.n_tiles;
    while (product) {
      const int nbl = plan.max_blocks;
      const int64_t work =
          int64_t(bt) * (forward ? int64_t(local_gate_rows(d, nbl)) * R : int64_t(local_rec(d, nbl)) * G);
      const int g2 = group * 2 <= nb ? group * 2 : nb;
      LaunchPlan wider{};
      if (work <= kSplitWork || g2 == group || int64_t(g2) * tiles > dev.sm_count || !try_plan(bt, g2, true, wider))
        break;
      plan = wider;
      group = g2;
    }
    // Where a group's tiles do not all fit side by side (rounds, each of T steps with a barrier per step), wider
    // groups while the GPU holds them: smaller slices of U leave room for more tiles' state (and use idle SMs).
    // The fewest rounds, then the fewest CTAs.
    auto rounds = [](const LaunchPlan& q) {
      const int64_t per_round = int64_t(q.n_groups) * q.tiles;
      return (q.n_tiles + per_round - 1) / per_round;
    };
    auto next_wider = [&](int g) {  // next_group, and one CTA per SM on the way
      const int n = next_group(g);
      return g < dev.sm_count && n > dev.sm_count ? dev.sm_count : n;
    };
    if (group > 1 && product) {
      for (int g = next_wider(group); g <= max_group && rounds(plan) > 1; g = next_wider(g)) {
        LaunchPlan wider{};
        if (try_plan(bt, g, true, wider) && rounds(wider) < rounds(plan)) plan = wider;
      }
    }
    return plan;
  }
  // 2. U does not fit on chip: slices in the global workspace (read through L2 every step), spread over as many
  //    CTAs as run at once.
  if (product) {
    for (int bt = bt_pref; bt >= 1; bt /= 2) {
      for (int g = max_group < dev.sm_count ? max_group : dev.sm_count; g >= 1; g = g > 8 ? g * 3 / 4 : g - 1) {
        LaunchPlan plan{};
        if (try_plan(bt, g, false, plan)) return plan;
      }
    }
  }
  LaunchPlan fail{};
  fail.error = "lstm_ext: no launch configuration of the CUDA recurrence fits this device for these sizes";
  return fail;
}

}  // namespace lstm_ext::cuda::detail
