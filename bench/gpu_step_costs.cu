// What the building blocks of one recurrent step cost on this GPU, each alone in a persistent kernel: a
// __syncthreads, a dependent load from L2 or from DRAM, one cell's activations, the group barrier of the recurrence
// kernels (csrc/cuda/recurrence_kernels.cuh: group_sync, and the same without its back-off), a thread-block cluster
// barrier (sm_90), and the exchange of r between the CTAs of a group, through L2 (what the kernels do) or through
// distributed shared memory (sm_90); and the SM clock while one CTA runs. The per-step floor of the fused kernels
// is a sum of these; the CUDA issue's targets at small H (<= 1 us per step) need to know which of them dominates.
//
// Each figure is (time of 2N steps - time of N steps) / N, so the launch cancels: the median of 5 such pairs.
// torch-free; scripts/gpu_check.sh micro builds and runs it:
//
//   nvcc -std=c++20 --expt-relaxed-constexpr -O3 -I csrc -arch=native bench/gpu_step_costs.cu -o step_costs
//   ./step_costs            # a Markdown table on stdout
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "cuda/recurrence_kernels.cuh"

namespace cg = cooperative_groups;
using lstm_ext::cuda::detail::group_sync;
using lstm_ext::cuda::detail::ld_acquire;
using lstm_ext::cuda::detail::ld_cg;
using lstm_ext::cuda::detail::st_cg;

namespace {

#define CHECK(x)                                                                                  \
  do {                                                                                            \
    const cudaError_t e_ = (x);                                                                   \
    if (e_ != cudaSuccess) {                                                                      \
      std::fprintf(stderr, "%s:%d: %s: %s\n", __FILE__, __LINE__, #x, cudaGetErrorString(e_));    \
      std::exit(1);                                                                               \
    }                                                                                             \
  } while (0)

constexpr int kThreads = 256;         // threads per CTA where the figure does not vary them
constexpr size_t kOneCtaPerSm = 120 * 1024;  // dynamic shared memory that keeps a second CTA off the SM

// ---- kernels (each runs `steps` steps; `sink` keeps the compiler from dropping the work) --------------------

// The SM clock while one CTA runs (what a persistent kernel of one group sees: the GPU may not boost for one SM):
// SM cycles (clock64) and nanoseconds (the global timer) over a dependent chain of `steps` multiply-adds.
__global__ void clock_steps(long steps, long long* out) {
  unsigned long long g0, g1;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g0));
  const long long c0 = clock64();
  float v = float(threadIdx.x);
  for (long t = 0; t < steps; ++t) v = v * 0.999f + 1.0f;
  const long long c1 = clock64();
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g1));
  if (threadIdx.x == 0) {
    out[0] = c1 - c0;
    out[1] = (long long)(g1 - g0);
    out[2] = v == -1.0f;  // keeps the chain
  }
}

// __syncthreads between a write and a read of shared memory (two buffers, so one barrier per step suffices).
__global__ void sync_steps(long steps, float* sink) {
  __shared__ float buf[2][512];
  const int tid = int(threadIdx.x), n = int(blockDim.x);
  float v = float(tid);
  for (long t = 0; t < steps; ++t) {
    float* b = buf[t & 1];
    b[tid] = v;
    __syncthreads();
    v = b[(tid + 1) % n] * 0.5f + 1.0f;
  }
  if (v == -1.0f) sink[0] = v;
}

// One dependent load per step (thread 0 follows a random cycle through `next` with ld.cg), then a __syncthreads:
// the latency of L2 (a small buffer) or DRAM (a large one; this includes TLB misses).
__global__ void chain_steps(long steps, const unsigned* next, float* sink) {
  __shared__ unsigned idx_s;
  unsigned idx = 0;
  for (long t = 0; t < steps; ++t) {
    if (threadIdx.x == 0) idx_s = ld_cg(next + idx);
    __syncthreads();
    idx = idx_s;
    __syncthreads();
  }
  if (idx == 0xffffffffu) sink[0] = 1.0f;
}

// One warp: the activations of one LSTM 2000 cell per step, each step's input the last output (a latency chain),
// with the device math of csrc/cell.h (what the kernels call).
__global__ void cell_steps(long steps, float* sink) {
  float v = 0.01f * float(threadIdx.x), s = 0.0f;
  for (long t = 0; t < steps; ++t) {
    const float y_iota = lstm_ext::sigmoid(v), y_phi = lstm_ext::sigmoid(0.5f * v),
                y_omega = lstm_ext::sigmoid(0.25f * v);
    const float g = lstm_ext::tanh_(v);
    s = y_phi * s + y_iota * g;
    v = y_omega * lstm_ext::tanh_(s) + 0.1f;
  }
  if (v == -1.0f) sink[0] = s;
}

// The recurrence kernels' group barrier (a release fence, a relaxed add and an acquire spin with __nanosleep back-off).
__global__ void group_barrier_steps(long steps, unsigned* counter, float* sink) {
  unsigned epoch = 0;
  for (long t = 0; t < steps; ++t) group_sync(counter, int(gridDim.x), ++epoch);
  if (epoch == 0) sink[0] = 1.0f;
}

// The same barrier without the back-off in the spin.
__global__ void group_barrier_nosleep_steps(long steps, unsigned* counter, float* sink) {
  unsigned epoch = 0;
  for (long t = 0; t < steps; ++t) {
    ++epoch;
    __syncthreads();
    if (threadIdx.x == 0) {
      asm volatile("fence.acq_rel.gpu;" ::: "memory");
      asm volatile("red.relaxed.gpu.global.add.u32 [%0], %1;" ::"l"(counter), "r"(1u) : "memory");
      const unsigned target = epoch * gridDim.x;
      while (int(ld_acquire(counter) - target) < 0) {
      }
    }
    __syncthreads();
  }
  if (epoch == 0) sink[0] = 1.0f;
}

// A step's exchange of r as the recurrence kernels do it: each CTA writes its `per_cta` floats of r_t to the
// exchange buffer (st.cg), group barrier, every CTA reads all gridDim.x * per_cta of them back (ld.cg) into
// shared memory, __syncthreads.
__global__ void l2_exchange_steps(long steps, int per_cta, float* exch, unsigned* counter, float* sink) {
  extern __shared__ float r_s[];
  const int tid = int(threadIdx.x), n = int(blockDim.x), total = per_cta * int(gridDim.x);
  unsigned epoch = 0;
  float acc = 0.0f;
  for (long t = 0; t < steps; ++t) {
    float* out = exch + size_t(epoch & 1u) * total + size_t(blockIdx.x) * per_cta;
    for (int i = tid; i < per_cta; i += n) st_cg(out + i, r_s[i] + 1.0f);
    group_sync(counter, int(gridDim.x), ++epoch);
    const float* in = exch + size_t((epoch - 1) & 1u) * total;
    for (int i = tid; i < total; i += n) r_s[i] = ld_cg(in + i);
    __syncthreads();
    acc += r_s[tid % total];
  }
  if (acc == -1.0f) sink[0] = acc;
}

// Thread-block cluster barrier (sm_90: barrier.cluster.arrive.release / wait.acquire, in hardware).
__global__ void cluster_barrier_steps(long steps, float* sink) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  for (long t = 0; t < steps; ++t) cluster.sync();
#endif
  if (steps < 0) sink[0] = 1.0f;
}

// The exchange through distributed shared memory (sm_90): each CTA writes its `per_cta` floats of r_t straight
// into every CTA's buffer (two buffers, by the step's parity), one cluster barrier, r_t is then in local shared memory.
__global__ void dsmem_exchange_steps(long steps, int per_cta, float* sink) {
  extern __shared__ float r_s[];  // [2][cluster size * per_cta]
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  cg::cluster_group cluster = cg::this_cluster();
  const int n_cta = int(cluster.num_blocks()), rank = int(cluster.block_rank());
  const int tid = int(threadIdx.x), n = int(blockDim.x), total = per_cta * n_cta;
  for (int i = tid; i < 2 * total; i += n) r_s[i] = 0.0f;
  cluster.sync();
  float acc = 0.0f;
  for (long t = 0; t < steps; ++t) {
    const int cur = int(t & 1), prev = cur ^ 1;
    // this CTA's entries of r_t, from r_{t-1} in the local buffer, into buffer `cur` of every CTA
    for (int i = tid; i < n_cta * per_cta; i += n) {
      const int dst = i / per_cta, k = i - dst * per_cta;
      float* remote = cluster.map_shared_rank(r_s, dst);
      remote[cur * total + rank * per_cta + k] = r_s[prev * total + rank * per_cta + k] + 1.0f;
    }
    cluster.sync();
    acc += r_s[cur * total + tid % total];
  }
  if (acc == -1.0f) sink[0] = acc;
#else
  if (steps < 0) sink[0] = r_s[0];
#endif
}

// ---- timing ----------------------------------------------------------------------------------------------------

// ns per step: (time of 2n steps - time of n steps) / n, the median of 5 pairs. `launch(steps)` enqueues one kernel.
double ns_per_step(const std::function<cudaError_t(long)>& launch, long n) {
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  auto time = [&](long steps) {
    CHECK(cudaEventRecord(e0));
    CHECK(launch(steps));
    CHECK(cudaEventRecord(e1));
    CHECK(cudaEventSynchronize(e1));
    float ms = 0;
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    return double(ms) * 1e6;
  };
  time(n / 10);  // warm-up (module load, clocks)
  std::vector<double> d;
  for (int i = 0; i < 5; ++i) d.push_back((time(2 * n) - time(n)) / double(n));
  std::sort(d.begin(), d.end());
  CHECK(cudaEventDestroy(e0));
  CHECK(cudaEventDestroy(e1));
  return d[2];
}

void row(const char* what, const std::string& config, double ns) {
  std::printf("| %s | %s | %.0f |\n", what, config.c_str(), ns);
  std::fflush(stdout);
}

// A random single cycle through n entries (Sattolo), on the device.
unsigned* random_cycle(size_t n) {
  std::vector<unsigned> next(n);
  std::iota(next.begin(), next.end(), 0u);
  std::mt19937_64 rng(0);
  for (size_t i = n - 1; i > 0; --i) std::swap(next[i], next[std::uniform_int_distribution<size_t>(0, i - 1)(rng)]);
  unsigned* d = nullptr;
  CHECK(cudaMalloc(&d, n * sizeof(unsigned)));
  CHECK(cudaMemcpy(d, next.data(), n * sizeof(unsigned), cudaMemcpyHostToDevice));
  return d;
}

template <typename... Args>
cudaError_t launch_cooperative(void (*k)(Args...), int grid, size_t smem, Args... args) {
  void* p[] = {&args...};
  return cudaLaunchCooperativeKernel(reinterpret_cast<const void*>(k), dim3(grid), dim3(kThreads), p, smem, nullptr);
}

template <typename... Args>
cudaError_t launch_cluster(void (*k)(Args...), int cluster, size_t smem, Args... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = dim3(unsigned(cluster));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = smem;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(cluster);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, k, args...);
}

}  // namespace

int main(int argc, char** argv) {
  const long n = argc > 1 ? std::atol(argv[1]) : 20000;  // steps of the shorter run
  int dev = 0, sms = 0, major = 0, minor = 0, clock_khz = 0;
  CHECK(cudaGetDevice(&dev));
  CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev));
  CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev));
  cudaDeviceProp prop{};
  CHECK(cudaGetDeviceProperties(&prop, dev));
  (void)cudaDeviceGetAttribute(&clock_khz, cudaDevAttrClockRate, dev);
  std::printf("# step costs on %s (sm_%d%d, %d SMs), %ld and %ld steps per pair\n\n", prop.name, major, minor, sms, n,
              2 * n);
  std::printf("| building block | configuration | ns per step |\n|---|---|---:|\n");

  float* sink = nullptr;
  CHECK(cudaMalloc(&sink, sizeof(float)));

  {  // the SM clock seen by one CTA, over about 20 ms (after a warm-up of as long)
    long long* d = nullptr;
    long long h[3] = {0, 0, 0};
    CHECK(cudaMalloc(&d, sizeof h));
    for (int i = 0; i < 2; ++i) {
      clock_steps<<<1, 32>>>(5000000L, d);
      CHECK(cudaGetLastError());
      CHECK(cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost));
    }
    CHECK(cudaFree(d));
    row("SM clock while one CTA runs (clock64 cycles / global timer)", std::to_string(h[0]) + " cycles in " +
        std::to_string(h[1]) + " ns: MHz in the last column", h[1] > 0 ? 1e3 * double(h[0]) / double(h[1]) : 0);
  }

  for (int threads : {128, 256, 512})
    row("__syncthreads (a shared-memory write, barrier, read)", std::to_string(threads) + " threads",
        ns_per_step([&](long s) { sync_steps<<<1, threads>>>(s, sink); return cudaGetLastError(); }, n));

  row("one cell's activations (sigmoid x3, tanh x2), a dependent chain", "1 warp",
      ns_per_step([&](long s) { cell_steps<<<1, 32>>>(s, sink); return cudaGetLastError(); }, n));

  {
    unsigned* small = random_cycle(size_t(1) << 18);  // 1 MB: stays in L2
    row("dependent ld.cg + 2 __syncthreads", "1 MB (L2)",
        ns_per_step([&](long s) { chain_steps<<<1, kThreads>>>(s, small, sink); return cudaGetLastError(); }, n));
    CHECK(cudaFree(small));
    unsigned* large = random_cycle(size_t(1) << 26);  // 256 MB: DRAM (and TLB misses)
    row("dependent ld.cg + 2 __syncthreads", "256 MB (DRAM, TLB misses)",
        ns_per_step([&](long s) { chain_steps<<<1, kThreads>>>(s, large, sink); return cudaGetLastError(); }, n / 4));
    CHECK(cudaFree(large));
  }

  unsigned* counter = nullptr;
  CHECK(cudaMalloc(&counter, sizeof(unsigned)));
  auto zero_counter = [&] { return cudaMemsetAsync(counter, 0, sizeof(unsigned)); };
  CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(&group_barrier_steps),
                             cudaFuncAttributeMaxDynamicSharedMemorySize, int(kOneCtaPerSm)));
  CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(&group_barrier_nosleep_steps),
                             cudaFuncAttributeMaxDynamicSharedMemorySize, int(kOneCtaPerSm)));
  CHECK(cudaFuncSetAttribute(reinterpret_cast<const void*>(&l2_exchange_steps),
                             cudaFuncAttributeMaxDynamicSharedMemorySize, int(kOneCtaPerSm)));
  std::vector<int> groups;
  for (int g : {1, 2, 4, 8, 12, 16, 32, 69, 132})
    if (g <= sms) groups.push_back(g);
  for (int g : groups) {
    const std::string cfg = std::to_string(g) + " CTAs, one per SM";
    row("group barrier (group_sync)", cfg, ns_per_step([&](long s) {
          const cudaError_t e = zero_counter();
          return e != cudaSuccess ? e : launch_cooperative(&group_barrier_steps, g, kOneCtaPerSm, s, counter, sink);
        }, n));
    row("group barrier without __nanosleep back-off", cfg, ns_per_step([&](long s) {
          const cudaError_t e = zero_counter();
          return e != cudaSuccess ? e
                                  : launch_cooperative(&group_barrier_nosleep_steps, g, kOneCtaPerSm, s, counter, sink);
        }, n));
  }

  // the exchange of r: per_cta floats per CTA and step (r entries x batch rows of a tile)
  struct Exchange {
    int group, per_cta;
  };
  const Exchange exchanges[] = {{2, 16 * 1}, {2, 64 * 8}, {5, 52 * 1}, {8, 32 * 8}, {12, 22 * 8}, {16, 16 * 8}};
  float* exch = nullptr;
  CHECK(cudaMalloc(&exch, size_t(2) * 16 * 64 * 8 * sizeof(float)));
  for (const Exchange& x : exchanges) {
    if (x.group > sms) continue;
    const std::string cfg = std::to_string(x.group) + " CTAs x " + std::to_string(x.per_cta) + " floats";
    row("exchange of r through L2 (st.cg, group_sync, ld.cg, __syncthreads)", cfg, ns_per_step([&](long s) {
          const cudaError_t e = zero_counter();
          return e != cudaSuccess ? e
                                  : launch_cooperative(&l2_exchange_steps, x.group, kOneCtaPerSm, s, x.per_cta, exch,
                                                       counter, sink);
        }, n));
  }

  if (major >= 9) {
    for (const void* k : {reinterpret_cast<const void*>(&cluster_barrier_steps),
                          reinterpret_cast<const void*>(&dsmem_exchange_steps)}) {
      CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
      CHECK(cudaFuncSetAttribute(k, cudaFuncAttributeMaxDynamicSharedMemorySize, int(kOneCtaPerSm)));
    }
    for (int g : {1, 2, 4, 8, 16}) {
      const std::string cfg = std::to_string(g) + " CTAs, one per SM";
      const cudaError_t probe = launch_cluster(&cluster_barrier_steps, g, kOneCtaPerSm, 1L, sink);
      if (probe != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
        row("cluster barrier (cluster.sync)", cfg + ": cannot launch: " + cudaGetErrorString(probe), 0);
        (void)cudaGetLastError();
        continue;
      }
      row("cluster barrier (cluster.sync)", cfg,
          ns_per_step([&](long s) { return launch_cluster(&cluster_barrier_steps, g, kOneCtaPerSm, s, sink); }, n));
    }
    for (const Exchange& x : exchanges) {
      const std::string cfg = std::to_string(x.group) + " CTAs x " + std::to_string(x.per_cta) + " floats";
      const size_t smem = std::max(kOneCtaPerSm, size_t(2) * x.group * x.per_cta * sizeof(float));
      const cudaError_t probe = launch_cluster(&dsmem_exchange_steps, x.group, smem, 1L, x.per_cta, sink);
      if (probe != cudaSuccess || cudaDeviceSynchronize() != cudaSuccess) {
        row("exchange of r through distributed shared memory (cluster)", cfg + ": cannot launch", 0);
        (void)cudaGetLastError();
        continue;
      }
      row("exchange of r through distributed shared memory (cluster)", cfg, ns_per_step([&](long s) {
            return launch_cluster(&dsmem_exchange_steps, x.group, smem, s, x.per_cta, sink);
          }, n));
    }
  } else {
    row("cluster barrier / distributed shared memory", "needs sm_90", 0);
  }
  std::printf("\nclock rate (attribute): %d MHz\n", clock_khz / 1000);
  CHECK(cudaFree(exch));
  CHECK(cudaFree(counter));
  CHECK(cudaFree(sink));
  return 0;
}
