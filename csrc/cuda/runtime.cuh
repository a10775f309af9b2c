// cuda_runtime.h, or under the CPU emulation (emu/emulate.h, no CUDA runtime) the two types that the torch-free
// kernel interfaces name.
#pragma once

#if defined(LSTM_EXT_CUDA_EMULATE)
using cudaStream_t = void*;
using cudaError_t = int;
#else
#include <cuda_runtime.h>
#endif
