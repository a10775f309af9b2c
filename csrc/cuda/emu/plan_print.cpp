// Prints the launch plans of the CUDA recurrence kernels for the CUDA issue's benchmark sizes on an H100 (SXM, 80 GB),
// planned on the host: the planner of recurrence_kernels.cuh with the H100's limits and an occupancy model (threads,
// shared memory, 128 registers per thread: the kernels' __launch_bounds__ ceiling). The GPU's own occupancy query can
// differ a little; scripts/gpu_profile.py prints the plans there.
//
//   g++ -std=c++20 -O1 -I csrc csrc/cuda/emu/plan_print.cpp -o plan_print && ./plan_print
// One line per plan: dtype B H fwd|bwd, then key=value fields (tests/test_cuda_compile.py reads them).
#include "emulate.h"

#include <cstdio>

#include "../recurrence_kernels.cuh"

using namespace lstm_ext;
using namespace lstm_ext::cuda;
using namespace lstm_ext::cuda::detail;

namespace {

int occupancy(int, int threads, size_t smem, void* ctx) {
  const auto* dev = static_cast<const DeviceInfo*>(ctx);
  const int by_threads = dev->max_threads_per_sm / threads;
  const int by_regs = 65536 / (threads * 128);
  const int by_smem = int(size_t(dev->max_smem_per_sm) / (smem + 1024));  // 1 KB reserved per CTA
  const int m = by_threads < by_smem ? by_threads : by_smem;
  return m < by_regs ? m : by_regs;
}

}  // namespace

int main() {
  DeviceInfo h100;
  h100.sm_count = 132;
  h100.max_smem_per_block = 227 * 1024;
  h100.max_smem_per_sm = 228 * 1024;
  h100.max_threads_per_sm = 2048;
  h100.cooperative = 1;
  h100.mma = 1;
  h100.cluster = 16;  // cluster=1 below: planned as thread-block clusters, if the GPU holds them (GPCs; not modelled)
  struct Case {
    const char* dtype;
    int tsize, B, H;
  };
  const Case cases[] = {{"float32", 4, 1, 32},    {"float32", 4, 64, 128},  {"float32", 4, 64, 256},
                        {"float32", 4, 256, 1024}, {"bfloat16", 2, 16, 256}, {"bfloat16", 2, 64, 512},
                        {"bfloat16", 2, 16, 1024}, {"bfloat16", 2, 64, 1024}, {"float16", 2, 16, 768}};
  for (const Case& c : cases) {
    const CellDims d = make_cell_dims(c.H, 1, true, false, false, Squash::Tanh);  // nn.LSTM's cell
    for (bool forward : {true, false}) {
      const LaunchPlan p = plan_launch(forward, d, c.B, h100, c.tsize, 4, &occupancy, &h100);
      const int rounds = p.ok ? (p.n_tiles + p.n_groups * p.tiles - 1) / (p.n_groups * p.tiles) : 0;
      std::printf("%s B=%d H=%d %s ok=%d bt=%d n_tiles=%d group=%d n_groups=%d tiles=%d rounds=%d threads=%d ks=%d "
                  "u_smem=%d mma=%d cluster=%d dsmem=%d smem=%zu\n",
                  c.dtype, c.B, c.H, forward ? "fwd" : "bwd", p.ok, p.bt, p.n_tiles, p.group, p.n_groups, p.tiles,
                  rounds, p.threads, p.ksplit, p.u_in_smem, p.mma, p.cluster, p.dsmem, p.smem_bytes);
    }
  }
}
