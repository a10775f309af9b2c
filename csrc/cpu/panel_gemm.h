// The recurrence's per-step product on the CPU, float32 with AVX2+FMA: C (M x N) = [C0 +] A (M x K) W, with
// W (K x N) the recurrent weights, the same for all T steps, packed once into panels of 16 columns.
//
// Why not BLAS: the products are small (a thread's rows of the batch, M = 1..128, by K, N = H..4H) and
// repeated T times with the same W. MKL's sgemm packs both operands on every call, and even its packed-B
// API (cblas_sgemm_compute) copies A each call; on this project's 2-core AMD machine that API runs these
// shapes at 45-85 GFLOP/s per core where this kernel runs at 85-94 (measured standalone: M=16 K=128 N=512
// 71 -> 93, M=16 K=512 N=128 65 -> 89, M=16 K=256 N=1024 45 -> 88).
//
// The micro-kernel keeps a tile of up to 6 rows x 16 columns of C in 12 AVX registers for all K, each k one
// broadcast of A per row and two loads of the panel (the classic 6x16 layout). Tiles are balanced (M = 16 is
// 6 + 5 + 5 rows, never a slow 1- or 2-row tail). A is read in place (no packing); a partial last panel goes
// through a 16-column scratch tile. Only compiled where the build targets AVX2+FMA (LSTM_EXT_PANEL_GEMM);
// elsewhere the kernel keeps calling BLAS.
#pragma once

#if defined(__AVX2__) && defined(__FMA__)
#define LSTM_EXT_PANEL_GEMM 1

#include <immintrin.h>

#include <algorithm>
#include <cstdint>

namespace lstm_ext::cpu::panel {

constexpr int64_t kWidth = 16;  // columns per panel: two AVX registers
constexpr int kMaxRows = 6;     // rows per register tile: 12 accumulators + 2 panel loads + 1 broadcast

inline int64_t padded_cols(int64_t N) { return (N + kWidth - 1) / kWidth * kWidth; }

// Floats the packed W takes: K rows of every panel.
inline int64_t packed_size(int64_t K, int64_t N) { return K * padded_cols(N); }

// W (K x N) into panels: panel p holds W[k][16p .. 16p+15] for k = 0..K-1, contiguous; columns past N are 0.
// `trans`: the source is U (N x K) and W = U^T (the forward's r U^T); else it is W itself (the backward's da U).
inline void pack(const float* U, bool trans, int64_t K, int64_t N, float* P) {
  for (int64_t n0 = 0; n0 < padded_cols(N); n0 += kWidth) {
    float* panel = P + n0 * K;
    for (int64_t k = 0; k < K; ++k)
      for (int64_t j = 0; j < kWidth; ++j) {
        const int64_t n = n0 + j;
        panel[k * kWidth + j] = n >= N ? 0.0f : (trans ? U[n * K + k] : U[k * N + n]);
      }
  }
}

// One register tile: C (MR x 16, ldc) = [C0 +] A (MR x K, lda) panel (K x 16); C0 (nullptr: none) has C's ldc.
// The accumulators are named variables, not an array: GCC kept an array of __m256 on the stack, with a store per k.
template <int MR>
inline void tile(int64_t K, const float* A, int64_t lda, const float* panel, const float* C0, float* C, int64_t ldc) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
#define LSTM_EXT_TILE_ROW(r, body) \
  if constexpr (MR > r) {          \
    body(r, c##r##0, c##r##1);     \
  }
#define LSTM_EXT_TILE_ROWS(body)                                                                       \
  LSTM_EXT_TILE_ROW(0, body) LSTM_EXT_TILE_ROW(1, body) LSTM_EXT_TILE_ROW(2, body) LSTM_EXT_TILE_ROW(3, body) \
  LSTM_EXT_TILE_ROW(4, body) LSTM_EXT_TILE_ROW(5, body)
#define LSTM_EXT_LOAD(r, lo, hi)                \
  lo = _mm256_loadu_ps(C0 + (r) * ldc);         \
  hi = _mm256_loadu_ps(C0 + (r) * ldc + 8);
#define LSTM_EXT_FMA(r, lo, hi)                                  \
  {                                                              \
    const __m256 a = _mm256_broadcast_ss(A + (r) * lda + k);      \
    lo = _mm256_fmadd_ps(a, w0, lo);                             \
    hi = _mm256_fmadd_ps(a, w1, hi);                             \
  }
#define LSTM_EXT_STORE(r, lo, hi)               \
  _mm256_storeu_ps(C + (r) * ldc, lo);          \
  _mm256_storeu_ps(C + (r) * ldc + 8, hi);
  if (C0 != nullptr) {
    LSTM_EXT_TILE_ROWS(LSTM_EXT_LOAD)
  }
  for (int64_t k = 0; k < K; ++k) {
    const __m256 w0 = _mm256_loadu_ps(panel + k * kWidth), w1 = _mm256_loadu_ps(panel + k * kWidth + 8);
    LSTM_EXT_TILE_ROWS(LSTM_EXT_FMA)
  }
  LSTM_EXT_TILE_ROWS(LSTM_EXT_STORE)
#undef LSTM_EXT_STORE
#undef LSTM_EXT_FMA
#undef LSTM_EXT_LOAD
#undef LSTM_EXT_TILE_ROWS
#undef LSTM_EXT_TILE_ROW
}

inline void tile_rows(int rows, int64_t K, const float* A, int64_t lda, const float* panel, const float* C0, float* C,
                      int64_t ldc) {
  switch (rows) {
    case 6: return tile<6>(K, A, lda, panel, C0, C, ldc);
    case 5: return tile<5>(K, A, lda, panel, C0, C, ldc);
    case 4: return tile<4>(K, A, lda, panel, C0, C, ldc);
    case 3: return tile<3>(K, A, lda, panel, C0, C, ldc);
    case 2: return tile<2>(K, A, lda, panel, C0, C, ldc);
    default: return tile<1>(K, A, lda, panel, C0, C, ldc);
  }
}

// Rows [m0, m0 + rows) of C against panel p (columns 16p ..): the last, partial panel through a scratch tile.
inline void tile_at(int rows, int64_t m0, int64_t p, int64_t N, int64_t K, const float* A, int64_t lda,
                    const float* P, const float* C0, float* C, int64_t ldc) {
  const int64_t n0 = p * kWidth;
  const float* panel = P + n0 * K;
  const float* c0 = C0 == nullptr ? nullptr : C0 + m0 * ldc + n0;
  if (n0 + kWidth <= N) return tile_rows(rows, K, A + m0 * lda, lda, panel, c0, C + m0 * ldc + n0, ldc);
  const int64_t cols = N - n0;
  float scratch[kMaxRows * kWidth] = {};
  if (c0 != nullptr)
    for (int r = 0; r < rows; ++r) std::copy(c0 + r * ldc, c0 + r * ldc + cols, scratch + r * kWidth);
  tile_rows(rows, K, A + m0 * lda, lda, panel, c0 == nullptr ? nullptr : scratch, scratch, kWidth);
  for (int r = 0; r < rows; ++r) std::copy(scratch + r * kWidth, scratch + r * kWidth + cols, C + (m0 + r) * ldc + n0);
}

// C (M x N, ldc) = [C0 +] A (M x K, lda) W, W packed by pack(); C0 (M x N, ldc, may be C itself) or nullptr.
inline void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* P, const float* C0,
                 float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const int64_t panels = padded_cols(N) / kWidth;
  const int64_t tiles = (M + kMaxRows - 1) / kMaxRows;
  const int64_t base = M / tiles, extra = M % tiles;  // `extra` tiles of base + 1 rows, the rest of base
  // Small W (fits the L2 cache with room): a tile of rows sweeps all panels, its rows of A stay in L1. Large W:
  // each panel is swept by all row tiles, so W streams from memory once per step, not once per row tile.
  const bool rows_outer = packed_size(K, N) * int64_t(sizeof(float)) <= (int64_t(256) << 10);
  if (rows_outer) {
    for (int64_t t = 0, m0 = 0; t < tiles; ++t) {
      const int rows = int(base + (t < extra ? 1 : 0));
      for (int64_t p = 0; p < panels; ++p) tile_at(rows, m0, p, N, K, A, lda, P, C0, C, ldc);
      m0 += rows;
    }
  } else {
    for (int64_t p = 0; p < panels; ++p)
      for (int64_t t = 0, m0 = 0; t < tiles; ++t) {
        const int rows = int(base + (t < extra ? 1 : 0));
        tile_at(rows, m0, p, N, K, A, lda, P, C0, C, ldc);
        m0 += rows;
      }
  }
}

}  // namespace lstm_ext::cpu::panel

#endif  // __AVX2__ && __FMA__
