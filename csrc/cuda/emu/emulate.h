// A CPU emulation of the little of CUDA that the recurrence kernels use, to run their logic without a GPU:
// one host thread per CUDA thread, all CTAs of a launch at once (so the group barrier works), a std::barrier
// per CTA for __syncthreads, a buffer per CTA for dynamic shared memory, host versions of the 16-bit types.
// It checks indexing, masking, the alignment of vector accesses, the exchange between the CTAs of a group and
// the barrier protocol; it does not model warps (beyond the warp-wide mma, as the PTX specifies its fragments),
// the CUDA memory model or device math (float uses cell.h's host approximations).
#pragma once

#define LSTM_EXT_CUDA_EMULATE 1

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <barrier>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

struct EmuDim3 {
  unsigned x = 0, y = 0, z = 0;
};
struct alignas(8) float2 {
  float x, y;
};
struct alignas(16) double2 {
  double x, y;
};

// The 16-bit storage types and the conversions the kernels use (cuda_fp16.h / cuda_bf16.h on the GPU): raw bits,
// no arithmetic, round to nearest even (half through the compiler's _Float16, bfloat16 by hand).
struct __half {
  unsigned short bits;
};
struct __nv_bfloat16 {
  unsigned short bits;
};
struct alignas(4) __half2 {
  __half x, y;
};
struct alignas(4) __nv_bfloat162 {
  __nv_bfloat16 x, y;
};
inline float __half2float(__half h) {
  _Float16 f;
  std::memcpy(&f, &h.bits, 2);
  return float(f);
}
inline __half __float2half_rn(float x) {
  const _Float16 f = _Float16(x);
  __half h;
  std::memcpy(&h.bits, &f, 2);
  return h;
}
inline float __bfloat162float(__nv_bfloat16 b) {
  const uint32_t u = uint32_t(b.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16_rn(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if (std::isnan(x)) return {static_cast<unsigned short>((u >> 16) | 0x40u)};  // a quiet NaN
  u += 0x7FFFu + ((u >> 16) & 1u);                                             // round to nearest even
  return {static_cast<unsigned short>(u >> 16)};
}
inline float2 __half22float2(__half2 v) { return {__half2float(v.x), __half2float(v.y)}; }
inline float2 __bfloat1622float2(__nv_bfloat162 v) { return {__bfloat162float(v.x), __bfloat162float(v.y)}; }

inline unsigned bits16(__half x) { return x.bits; }
inline unsigned bits16(__nv_bfloat16 x) { return x.bits; }

inline double emu_to_double(float x) { return x; }
inline double emu_to_double(double x) { return x; }
inline double emu_to_double(__half x) { return __half2float(x); }
inline double emu_to_double(__nv_bfloat16 x) { return __bfloat162float(x); }

// A GPU faults on a vector access (float2, a 16-byte load, __half2) at an address not aligned to its size; a
// host CPU does not, so the emulation checks every such access (LSTM_ASSERT_ALIGNED in the kernels).
inline void emu_check_aligned(const void* p, size_t align, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % align != 0) {
    std::fprintf(stderr, "MISALIGNED %s: %p is not %zu-byte aligned\n", what, p, align);
    std::abort();
  }
}
#define LSTM_ASSERT_ALIGNED(p, align) emu_check_aligned(p, align, #p)

inline thread_local EmuDim3 threadIdx, blockIdx, blockDim, gridDim;
inline thread_local std::barrier<>* emu_cta_barrier = nullptr;
inline thread_local std::barrier<>* emu_cluster_barrier = nullptr;  // all threads of the CTA's cluster, if any
inline thread_local unsigned char* const* emu_cluster_smem = nullptr;  // the shared memory of its CTAs, by rank
inline thread_local unsigned emu_cluster_size = 0;
inline thread_local unsigned char* emu_smem = nullptr;

// A warp, for the warp-wide mma: its 32 threads meet at a barrier and exchange fragments through a, b, c.
struct EmuWarp {
  std::barrier<> bar{32};
  float a[16][16], b[16][8], c[16][8];
};
inline thread_local EmuWarp* emu_warp = nullptr;

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16} (c += a b, float32 accumulation in k order) with the PTX
// fragment layout (see mma_16816 in recurrence_kernels.cuh): every lane of the warp must call it.
template <typename T>
void emu_mma_16816(float (&c)[4], const unsigned (&a)[4], const unsigned (&b)[2]) {
  if (emu_warp == nullptr) {
    std::fprintf(stderr, "mma outside a whole warp (blockDim.x %% 32 != 0)\n");
    std::abort();
  }
  EmuWarp& w = *emu_warp;
  const int lane = int(threadIdx.x % 32), g = lane / 4, q = lane % 4;
  auto val = [](unsigned reg, int half) {  // the low (half 0) or high 16 bits of a register, as float
    return float(emu_to_double(T{static_cast<unsigned short>(reg >> (16 * half))}));
  };
  for (int j = 0; j < 4; ++j)
    for (int h = 0; h < 2; ++h) w.a[g + 8 * (j & 1)][2 * q + h + 8 * (j >> 1)] = val(a[j], h);
  for (int j = 0; j < 2; ++j)
    for (int h = 0; h < 2; ++h) w.b[2 * q + h + 8 * j][g] = val(b[j], h);
  for (int j = 0; j < 4; ++j) w.c[g + 8 * (j >> 1)][2 * q + (j & 1)] = c[j];
  w.bar.arrive_and_wait();
  for (int j = 0; j < 4; ++j) {
    const int row = g + 8 * (j >> 1), col = 2 * q + (j & 1);
    float acc = w.c[row][col];
    for (int k = 0; k < 16; ++k) acc += w.a[row][k] * w.b[k][col];
    c[j] = acc;
  }
  w.bar.arrive_and_wait();  // everyone has read the fragments before the next mma writes them
}

inline void __syncthreads() { emu_cta_barrier->arrive_and_wait(); }

#define LSTM_DEV inline
#define LSTM_KERNEL
#define LSTM_LAUNCH_BOUNDS(n)

namespace lstm_ext::cuda::detail {

inline unsigned char* lstm_dynamic_smem() { return emu_smem; }
inline unsigned ld_acquire(const unsigned* p) {
  std::this_thread::yield();
  return std::atomic_ref<unsigned>(*const_cast<unsigned*>(p)).load(std::memory_order_acquire);
}
inline void fence_acq_rel_gpu() { std::atomic_thread_fence(std::memory_order_acq_rel); }
// The cluster's barrier (std::barrier orders memory: what a thread wrote before it is visible after it).
inline void cluster_sync() {
  if (emu_cluster_barrier == nullptr) {
    std::fprintf(stderr, "cluster_sync outside a cluster launch\n");
    std::abort();
  }
  emu_cluster_barrier->arrive_and_wait();
}
// Distributed shared memory: *p = v in CTA `rank` of the cluster, p an address in this CTA's shared memory.
template <typename V>
void st_cluster(V* p, int rank, V v) {
  if (emu_cluster_smem == nullptr || rank < 0 || rank >= int(emu_cluster_size)) {
    std::fprintf(stderr, "st_cluster: rank %d outside the cluster\n", rank);
    std::abort();
  }
  const std::ptrdiff_t off = reinterpret_cast<unsigned char*>(p) - emu_smem;
  if (off < 0) {
    std::fprintf(stderr, "st_cluster: not a shared-memory address\n");
    std::abort();
  }
  *reinterpret_cast<V*>(emu_cluster_smem[rank] + off) = v;
}
inline void red_relaxed_add(unsigned* p, unsigned v) {
  std::atomic_ref<unsigned>(*p).fetch_add(v, std::memory_order_relaxed);
}
template <typename A>
A ld_cg(const A* p) {
  return *p;
}
template <typename A>
void st_cg(A* p, A v) {
  *p = v;
}

}  // namespace lstm_ext::cuda::detail

// Worker threads reused across launches (creating ~10^5 threads per run costs minutes of system time).
class EmuPool {
 public:
  ~EmuPool() {
    for (auto& w : workers_) {
      {
        std::lock_guard<std::mutex> lock(w->m);
        w->quit = true;
      }
      w->cv.notify_one();
      w->th.join();
    }
  }
  // Runs f(0) .. f(n - 1) on n threads at once and waits for all of them.
  void run(int n, const std::function<void(int)>& f) {
    while (int(workers_.size()) < n) spawn();
    {
      std::lock_guard<std::mutex> lock(done_m_);
      pending_ = n;
    }
    for (int i = 0; i < n; ++i) {
      Worker& w = *workers_[size_t(i)];
      {
        std::lock_guard<std::mutex> lock(w.m);
        w.task = [&f, i] { f(i); };
        w.has = true;
      }
      w.cv.notify_one();
    }
    std::unique_lock<std::mutex> lock(done_m_);
    done_cv_.wait(lock, [&] { return pending_ == 0; });
  }

 private:
  struct Worker {
    std::thread th;
    std::mutex m;
    std::condition_variable cv;
    std::function<void()> task;
    bool has = false, quit = false;
  };
  void spawn() {
    workers_.emplace_back(new Worker);
    Worker* w = workers_.back().get();
    w->th = std::thread([this, w] {
      for (;;) {
        std::function<void()> task;
        {
          std::unique_lock<std::mutex> lock(w->m);
          w->cv.wait(lock, [&] { return w->has || w->quit; });
          if (w->quit) return;
          task = std::move(w->task);
          w->has = false;
        }
        task();
        std::lock_guard<std::mutex> lock(done_m_);
        if (--pending_ == 0) done_cv_.notify_all();
      }
    });
  }
  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex done_m_;
  std::condition_variable done_cv_;
  int pending_ = 0;
};

inline EmuPool& emu_pool() {
  static EmuPool pool;
  return pool;
}

// Run kernel(params) on `grid` CTAs of `block` threads with `smem` bytes of dynamic shared memory, filled with
// 0xFF bytes (NaN for float and double) so that reading shared memory nobody wrote shows up; cluster > 0: the
// CTAs form thread-block clusters of that many (consecutive CTAs), each with its barrier (cluster_sync).
template <typename P>
void emu_launch(void (*kernel)(P), int grid, int block, size_t smem, const P& params, int cluster = 0) {
  if (cluster > 0 && grid % cluster != 0) {
    std::fprintf(stderr, "grid %d is not a multiple of the cluster size %d\n", grid, cluster);
    std::abort();
  }
  std::vector<std::unique_ptr<std::barrier<>>> cluster_bars;
  for (int c = 0; cluster > 0 && c < grid / cluster; ++c)
    cluster_bars.emplace_back(new std::barrier<>(std::ptrdiff_t(cluster) * block));
  std::vector<std::unique_ptr<unsigned char[]>> mem;
  std::vector<std::unique_ptr<std::barrier<>>> bars;
  const int warps = block % 32 == 0 ? block / 32 : 0;  // no warp-wide operations otherwise
  std::vector<std::unique_ptr<EmuWarp[]>> warp_state;
  for (int c = 0; c < grid; ++c) {
    mem.emplace_back(new unsigned char[smem + 16]);
    std::memset(mem.back().get(), 0xFF, smem + 16);
    bars.emplace_back(new std::barrier<>(block));
    warp_state.emplace_back(warps > 0 ? new EmuWarp[size_t(warps)] : nullptr);
  }
  std::vector<unsigned char*> bases;  // each CTA's shared memory, 16-byte aligned (what emu_smem points to)
  for (int c = 0; c < grid; ++c) {
    const uintptr_t p = reinterpret_cast<uintptr_t>(mem[size_t(c)].get());
    bases.push_back(reinterpret_cast<unsigned char*>((p + 15) & ~uintptr_t(15)));
  }
  emu_pool().run(grid * block, [&](int i) {
    const int c = i / block, t = i % block;
    threadIdx = {unsigned(t), 0, 0};
    blockIdx = {unsigned(c), 0, 0};
    blockDim = {unsigned(block), 1, 1};
    gridDim = {unsigned(grid), 1, 1};
    emu_cta_barrier = bars[size_t(c)].get();
    emu_cluster_barrier = cluster > 0 ? cluster_bars[size_t(c / cluster)].get() : nullptr;
    emu_cluster_smem = cluster > 0 ? bases.data() + (c / cluster) * cluster : nullptr;
    emu_cluster_size = unsigned(cluster);
    emu_warp = warps > 0 ? &warp_state[size_t(c)][t / 32] : nullptr;
    const uintptr_t p = reinterpret_cast<uintptr_t>(mem[size_t(c)].get());
    emu_smem = reinterpret_cast<unsigned char*>((p + 15) & ~uintptr_t(15));
    kernel(params);
  });
}

// Whether got[i] is within tol * (1 + |want[i]|) of want[i] for every i < n; prints the first mismatch and ctx.
template <typename G, typename W>
bool emu_close(const char* what, const std::string& ctx, const G* got, const W* want, size_t n, double tol) {
  for (size_t i = 0; i < n; ++i) {
    const double g = emu_to_double(got[i]), w = emu_to_double(want[i]);
    if (!(std::fabs(g - w) <= tol * (1.0 + std::fabs(w)))) {
      std::printf("MISMATCH %s [%zu]: got %.17g want %.17g  (%s)\n", what, i, g, w, ctx.c_str());
      return false;
    }
  }
  return true;
}
