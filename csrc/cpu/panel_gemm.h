// The recurrence's per-step product on the CPU, float32 with AVX2+FMA, or AVX-512 where the running CPU has it:
// C (M x N) = [C0 +] A (M x K) W, with W (K x N) the recurrent weights, the same for all T steps, packed once
// into panels of 16 columns.
//
// Why not BLAS: the products are small (a thread's rows of the batch, M = 1..128, by K, N = H..4H) and
// repeated T times with the same W. MKL's sgemm packs both operands on every call, and even its packed-B
// API (cblas_sgemm_compute) copies A each call; on this project's 2-core AMD machine that API runs these
// shapes at 45-85 GFLOP/s per core where this kernel runs at 85-94 (measured standalone: M=16 K=128 N=512
// 71 -> 93, M=16 K=512 N=128 65 -> 89, M=16 K=256 N=1024 45 -> 88).
//
// The micro-kernel keeps a tile of up to 6 rows x 16 columns of C in 12 AVX registers, each k one broadcast of A
// per row and two loads of the panel (the classic 6x16 layout), in blocks of kBlockK k (see there). Tiles are
// balanced (M = 16 is 6 + 5 + 5 rows, never a slow 1- or 2-row tail). A is read in place (no packing); a partial
// last panel goes through a 16-column scratch tile. Only compiled where the build targets AVX2+FMA
// (LSTM_EXT_PANEL_GEMM); elsewhere the kernel keeps calling BLAS.
//
// AVX-512 (gemm_avx512): the same panels, a tile of up to 12 rows x 2 panels in 24 of the 32 zmm registers (up to
// 4 rows x 4 panels for M <= 4: more independent FMA chains for few rows; 3 rows keep the AVX2 tiles, see gemm).
// Compiled with a function target attribute and chosen at run time (avx512_enabled: the CPU has AVX-512F and
// LSTM_EXT_CPU_AVX512 is not 0). Each output is the same FMAs in the same order as in the AVX2 tile, so both give
// the same bits. On the 2-core Xeon of 2026-11 (AVX-512, two FMA units): M=16 K=128 N=512 98 -> 150 GFLOP/s per
// core, M=16 K=512 N=128 106 -> 170 (MKL's sgemm: 172).
#pragma once

#if defined(__AVX2__) && defined(__FMA__)
#define LSTM_EXT_PANEL_GEMM 1

#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <unistd.h>

namespace lstm_ext::cpu::panel {

constexpr int64_t kWidth = 16;  // columns per panel: two AVX registers
constexpr int kMaxRows = 6;     // rows per register tile: 12 accumulators + 2 panel loads + 1 broadcast
constexpr int kMaxRows512 = 12;  // AVX-512: rows x 2 panels, 24 accumulators + 2 panel loads + 1 broadcast of 32 zmm

// Summation in blocks of k: a register accumulates the products of at most kBlockK consecutive k, as one chain of
// FMAs (the first block's chain starts from C0, the others' from zero), and each later block's sum is added to C:
// C = (C0 + a_0 w_0 + ... + a_63 w_63) + S_1 + S_2 + ..., left to right. One chain over all K grows its rounding
// error like sqrt(K) (K = R in the forward, G = 4H in the backward): one step at H = 1030 and 4096 left y and s
// 3-9x as far from float64 as the float32 reference loop (ATen's products); blocked, 1.0-2.2x
// (scripts/float32_error.py). The flush, once per 64 k, cost 0-3 % in paired runs (B=16..64, H=128..512), about
// this machine's noise. Products with K <= kBlockK are one chain, as before.
constexpr int64_t kBlockK = 64;

// The AVX-512 tiles prefetch each panel kPrefetchK rows of k ahead (1 KB): a panel streams from L2 or the shared
// cache, and the hardware prefetchers did not keep up. Paired runs (min of 6): forward B=32 H=1024 T=100 107 -> 101
// ms, H=512 30.9 -> 29.4 ms, B=4 H=256 T=50 (1 thread) 1.01 -> 0.78 ms, T1 fwd+bwd 6.40 -> 6.11 ms; 8 and 32 did the
// same. The AVX2 tiles measured no change (3 rows, H=256), so they have none. A prefetch past a panel's end never
// faults.
constexpr int64_t kPrefetchK = 16;

inline int64_t padded_cols(int64_t N) { return (N + kWidth - 1) / kWidth * kWidth; }

// Floats the packed W takes: K rows of every panel.
inline int64_t packed_size(int64_t K, int64_t N) { return K * padded_cols(N); }

// dst[i * ldd + r] = src[r * lds + i] for r, i < 8: an 8 x 8 block transposed in registers.
inline void transpose8x8(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], _MM_SHUFFLE(3, 2, 3, 2));
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(1, 0, 1, 0));
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], _MM_SHUFFLE(3, 2, 3, 2));
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ldd, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// W (K x N) into panels: panel p holds W[k][16p .. 16p+15] for k = 0..K-1, contiguous; columns past N are 0.
// `trans`: the source is U (N x K) and W = U^T (the forward's r U^T); else it is W itself (the backward's da U).
// Every element of P (packed_size floats) is written. U^T goes by blocks of 8 x 8 transposed in registers: an
// element at a time, the packing took 20 us at H=128 (U: 512 x 128), 10 times the product of a B=1 step.
inline void pack(const float* U, bool trans, int64_t K, int64_t N, float* P) {
  for (int64_t n0 = 0; n0 < padded_cols(N); n0 += kWidth) {
    float* panel = P + n0 * K;
    const int64_t cols = std::min<int64_t>(kWidth, N - n0);  // the rest of the panel is zeros
    if (trans) {
      int64_t j = 0;
      for (; j + 8 <= cols; j += 8) {  // U's rows n0 + j .. n0 + j + 7 into columns j .. j + 7
        const float* u = U + (n0 + j) * K;
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) transpose8x8(u + k, K, panel + k * kWidth + j, kWidth);
        for (; k < K; ++k)
          for (int64_t i = 0; i < 8; ++i) panel[k * kWidth + j + i] = u[i * K + k];
      }
      for (; j < cols; ++j)
        for (int64_t k = 0; k < K; ++k) panel[k * kWidth + j] = U[(n0 + j) * K + k];
      for (; j < kWidth; ++j)
        for (int64_t k = 0; k < K; ++k) panel[k * kWidth + j] = 0.0f;
    } else {
      for (int64_t k = 0; k < K; ++k) {
        std::copy(U + k * N + n0, U + k * N + n0 + cols, panel + k * kWidth);
        std::fill(panel + k * kWidth + cols, panel + (k + 1) * kWidth, 0.0f);
      }
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
#define LSTM_EXT_ZERO(r, lo, hi) \
  lo = _mm256_setzero_ps();      \
  hi = lo;
#define LSTM_EXT_ADD_TO_C(r, lo, hi)                                                  \
  _mm256_storeu_ps(C + (r) * ldc, _mm256_add_ps(_mm256_loadu_ps(C + (r) * ldc), lo)); \
  _mm256_storeu_ps(C + (r) * ldc + 8, _mm256_add_ps(_mm256_loadu_ps(C + (r) * ldc + 8), hi));
  if (C0 != nullptr) {
    LSTM_EXT_TILE_ROWS(LSTM_EXT_LOAD)
  }
  for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += kBlockK) {  // blocks of k (kBlockK): see there
    if (k0 > 0) {
      LSTM_EXT_TILE_ROWS(LSTM_EXT_ZERO)
    }
    for (int64_t k = k0, k1 = std::min(K, k0 + kBlockK); k < k1; ++k) {
      const __m256 w0 = _mm256_loadu_ps(panel + k * kWidth), w1 = _mm256_loadu_ps(panel + k * kWidth + 8);
      LSTM_EXT_TILE_ROWS(LSTM_EXT_FMA)
    }
    if (k0 == 0) {
      LSTM_EXT_TILE_ROWS(LSTM_EXT_STORE)
    } else {
      LSTM_EXT_TILE_ROWS(LSTM_EXT_ADD_TO_C)
    }
  }
#undef LSTM_EXT_ADD_TO_C
#undef LSTM_EXT_ZERO
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

// Bytes of packed W up to which rows_outer holds: half a core's L2 cache, as the C library reads it (256 KB where it
// does not say), or LSTM_EXT_ROWS_OUTER_MAX_KB (read once; the tests force each order with it). On the 2-core AMD
// machine of 2026-10 (512 KB of L2) that is the 256 KB it was fixed at before; on the Xeon of 2026-11 (2 MB) it is
// 1 MB, and the 4H x H recurrent weights of H = 256 (1 MB) now take rows_outer: one thread, B=128 H=256 T=50
// recurrence 105 -> 125 GFLOP/s; two threads, in-process A/B, forward B=256 H=256 T=100 68 -> 63 ms, B=128 H=256
// 32.7 -> 30.8 ms, forward+backward B=256 H=256 245 -> 233 ms. Past the cache it loses (B=16 H=512, 4 MB of W:
// 110 -> 103 GFLOP/s with rows_outer).
inline int64_t rows_outer_max_bytes() {
  static const int64_t bytes = [] {
    if (const char* env = std::getenv("LSTM_EXT_ROWS_OUTER_MAX_KB")) return int64_t(std::atoll(env)) << 10;
    long l2 = 0;
#ifdef _SC_LEVEL2_CACHE_SIZE
    l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return l2 > 0 ? int64_t(l2) / 2 : int64_t(256) << 10;
  }();
  return bytes;
}

// Whether a row tile sweeps all panels before the next tile (W fits the L2 cache with room: the tile's rows of A
// stay in L1, and W comes from L2 for each tile), or each panel is swept by all row tiles (large W streams from
// memory once per step, not once per row tile). Either order computes each output by the same FMAs: the same bits.
inline bool rows_outer(int64_t K, int64_t N) {
  return packed_size(K, N) * int64_t(sizeof(float)) <= rows_outer_max_bytes();
}

// body(m0, rows) for M rows in balanced tiles of at most max_rows (M = 16 by 6: 6 + 5 + 5, never a slow 1- or 2-row
// tail).
template <typename F>
inline void for_each_row_tile(int64_t M, int max_rows, F body) {
  const int64_t tiles = (M + max_rows - 1) / max_rows;
  const int64_t base = M / tiles, extra = M % tiles;  // `extra` tiles of base + 1 rows, the rest of base
  for (int64_t t = 0, m0 = 0; t < tiles; ++t) {
    const int rows = int(base + (t < extra ? 1 : 0));
    body(m0, rows);
    m0 += rows;
  }
}

// The last, partial panel (cols < 16 columns) of `rows` rows through a scratch tile: tile(scratch_c0, scratch, 16)
// computes the full-width tile, of which the first cols columns go to C (ldc); c0 (ldc) or nullptr.
template <typename Tile>
inline void through_scratch(int rows, int64_t cols, const float* c0, float* c, int64_t ldc, Tile tile) {
  float scratch[kMaxRows512 * kWidth] = {};
  if (c0 != nullptr)
    for (int r = 0; r < rows; ++r) std::copy(c0 + r * ldc, c0 + r * ldc + cols, scratch + r * kWidth);
  tile(c0 == nullptr ? nullptr : scratch, scratch, kWidth);
  for (int r = 0; r < rows; ++r) std::copy(scratch + r * kWidth, scratch + r * kWidth + cols, c + r * ldc);
}

// Rows [m0, m0 + rows) of C against panel p (columns 16p ..): the last, partial panel through a scratch tile.
inline void tile_at(int rows, int64_t m0, int64_t p, int64_t N, int64_t K, const float* A, int64_t lda,
                    const float* P, const float* C0, float* C, int64_t ldc) {
  const int64_t n0 = p * kWidth;
  const float* panel = P + n0 * K;
  const float* c0 = C0 == nullptr ? nullptr : C0 + m0 * ldc + n0;
  if (n0 + kWidth <= N) return tile_rows(rows, K, A + m0 * lda, lda, panel, c0, C + m0 * ldc + n0, ldc);
  through_scratch(rows, N - n0, c0, C + m0 * ldc + n0, ldc, [&](const float* s0, float* s, int64_t lds) {
    tile_rows(rows, K, A + m0 * lda, lda, panel, s0, s, lds);
  });
}

// gemm with the AVX2 tiles.
inline void gemm_avx2(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* P, const float* C0,
                      float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const int64_t panels = padded_cols(N) / kWidth;
  if (rows_outer(K, N)) {
    for_each_row_tile(M, kMaxRows, [&](int64_t m0, int rows) {
      for (int64_t p = 0; p < panels; ++p) tile_at(rows, m0, p, N, K, A, lda, P, C0, C, ldc);
    });
  } else {
    for (int64_t p = 0; p < panels; ++p)
      for_each_row_tile(M, kMaxRows, [&](int64_t m0, int rows) { tile_at(rows, m0, p, N, K, A, lda, P, C0, C, ldc); });
  }
}

// ---- AVX-512 ------------------------------------------------------------------------------------------------

#define LSTM_EXT_TARGET_AVX512 __attribute__((target("avx512f")))

// One tile: C (MR x 16*NP, ldc) = [C0 +] A (MR x K, lda) [panel_0 .. panel_{NP-1}], panel_j at panel + j * stride,
// in blocks of kBlockK k (see there). The loops over MR and NP are unrolled, so the accumulators live in registers.
// A's rows are read through four pointers, rows 3q, 3q+1 and 3q+2 at base[q][0], [lda] and [2 lda] (one addressing
// mode each): with a pointer per row, the 11- and 12-row tiles ran out of general registers once the k loop was
// blocked (a row of A reloaded from the stack every k: B=32 H=512 9 % slower).
template <int MR, int NP>
LSTM_EXT_TARGET_AVX512 inline void tile512(int64_t K, const float* A, int64_t lda, const float* panel,
                                           int64_t stride, const float* C0, float* C, int64_t ldc) {
  __m512 acc[MR][NP];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j)
      acc[r][j] = C0 != nullptr ? _mm512_loadu_ps(C0 + r * ldc + j * kWidth) : _mm512_setzero_ps();
  const float* base[4];  // those past the tile's rows stay at A, unread
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) base[q] = A + (3 * q < MR ? 3 * q : 0) * lda;
  const float* w = panel;
  for (int64_t k0 = 0; k0 == 0 || k0 < K; k0 += kBlockK) {
    if (k0 > 0) {
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) acc[r][j] = _mm512_setzero_ps();
    }
    for (int64_t k = k0, k1 = std::min(K, k0 + kBlockK); k < k1; ++k) {
      __m512 wk[NP];
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) {
        _mm_prefetch(reinterpret_cast<const char*>(w + j * stride + kPrefetchK * kWidth), _MM_HINT_T0);
        wk[j] = _mm512_loadu_ps(w + j * stride);
      }
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512 a = _mm512_set1_ps(base[r / 3][(r % 3) * lda]);
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) acc[r][j] = _mm512_fmadd_ps(a, wk[j], acc[r][j]);
      }
#pragma GCC unroll 4
      for (int q = 0; q < 4; ++q) ++base[q];
      w += kWidth;
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) {
        float* c = C + r * ldc + j * kWidth;
        _mm512_storeu_ps(c, k0 == 0 ? acc[r][j] : _mm512_add_ps(_mm512_loadu_ps(c), acc[r][j]));
      }
  }
}

template <int NP>
LSTM_EXT_TARGET_AVX512 inline void tile512_rows(int rows, int64_t K, const float* A, int64_t lda, const float* panel,
                                                int64_t stride, const float* C0, float* C, int64_t ldc) {
  switch (rows) {
#define LSTM_EXT_TILE512_CASE(r) \
  case r: return tile512<r, NP>(K, A, lda, panel, stride, C0, C, ldc);
    LSTM_EXT_TILE512_CASE(12) LSTM_EXT_TILE512_CASE(11) LSTM_EXT_TILE512_CASE(10) LSTM_EXT_TILE512_CASE(9)
    LSTM_EXT_TILE512_CASE(8) LSTM_EXT_TILE512_CASE(7) LSTM_EXT_TILE512_CASE(6) LSTM_EXT_TILE512_CASE(5)
    LSTM_EXT_TILE512_CASE(4) LSTM_EXT_TILE512_CASE(3) LSTM_EXT_TILE512_CASE(2)
#undef LSTM_EXT_TILE512_CASE
    default: return tile512<1, NP>(K, A, lda, panel, stride, C0, C, ldc);
  }
}

// Rows [m0, m0 + rows) of C against panels [p, p + np), all whole (np = 4, 2 or 1); or, with np = 0, against the
// last, partial panel p through a scratch tile.
LSTM_EXT_TARGET_AVX512 inline void tile512_at(int rows, int np, int64_t m0, int64_t p, int64_t N, int64_t K,
                                              const float* A, int64_t lda, const float* P, const float* C0, float* C,
                                              int64_t ldc) {
  const int64_t n0 = p * kWidth, stride = K * kWidth;
  const float* panel = P + n0 * K;
  const float* a = A + m0 * lda;
  const float* c0 = C0 == nullptr ? nullptr : C0 + m0 * ldc + n0;
  float* c = C + m0 * ldc + n0;
  if (np == 4) return tile512_rows<4>(rows, K, a, lda, panel, stride, c0, c, ldc);
  if (np == 2) return tile512_rows<2>(rows, K, a, lda, panel, stride, c0, c, ldc);
  if (np == 1) return tile512_rows<1>(rows, K, a, lda, panel, stride, c0, c, ldc);
  through_scratch(rows, N - n0, c0, c, ldc, [&](const float* s0, float* s, int64_t lds) {
    tile512_rows<1>(rows, K, a, lda, panel, stride, s0, s, lds);
  });
}

// gemm with the AVX-512 tiles; the loop order as in gemm_avx2.
LSTM_EXT_TARGET_AVX512 inline void gemm_avx512(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                                               const float* P, const float* C0, float* C, int64_t ldc) {
  if (M <= 0 || N <= 0) return;
  const int64_t whole = N / kWidth, panels = padded_cols(N) / kWidth;
  const int group = M <= 4 ? 4 : 2;  // panels per tile
  // Panel groups: `group` panels while whole ones last, then single panels, then the partial one (np = 0).
  auto for_each_group = [&](auto body) {
    int64_t p = 0;
    for (; p + group <= whole; p += group) body(p, group);
    for (; p < whole; ++p) body(p, 1);
    if (whole < panels) body(whole, 0);
  };
  if (rows_outer(K, N)) {
    for_each_row_tile(M, kMaxRows512, [&](int64_t m0, int rows) {
      for_each_group([&](int64_t p, int np) { tile512_at(rows, np, m0, p, N, K, A, lda, P, C0, C, ldc); });
    });
  } else {
    for_each_group([&](int64_t p, int np) {
      for_each_row_tile(M, kMaxRows512, [&](int64_t m0, int rows) {
        tile512_at(rows, np, m0, p, N, K, A, lda, P, C0, C, ldc);
      });
    });
  }
}

#undef LSTM_EXT_TARGET_AVX512

// Whether gemm runs the AVX-512 tiles: the CPU has AVX-512F (and the OS saves its registers: libgcc's check) and
// the environment variable LSTM_EXT_CPU_AVX512 is not "0". Read once, at the first product.
inline bool avx512_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("LSTM_EXT_CPU_AVX512");
    return __builtin_cpu_supports("avx512f") && !(env != nullptr && std::strcmp(env, "0") == 0);
  }();
  return enabled;
}

// C (M x N, ldc) = [C0 +] A (M x K, lda) W, W packed by pack(); C0 (M x N, ldc, may be C itself) or nullptr.
// Three rows stay on the AVX2 tiles (same bits): measured on the Xeon above, the AVX-512 tile of 3 rows x 4 panels
// runs at 64 GFLOP/s against the AVX2 tiles' 75 (1, 2 and 4 rows: 39/91/118 against 35/55/92).
inline void gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* P, const float* C0,
                 float* C, int64_t ldc) {
  if (M != 3 && avx512_enabled()) return gemm_avx512(M, N, K, A, lda, P, C0, C, ldc);
  gemm_avx2(M, N, K, A, lda, P, C0, C, ldc);
}

}  // namespace lstm_ext::cpu::panel

#endif  // __AVX2__ && __FMA__
