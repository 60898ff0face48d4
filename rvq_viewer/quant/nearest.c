/* Nearest code for each row: argmin_k ||e_k||^2 - 2 x.e_k, ties to the lowest k, the score matrix
 * never written. Compiled on the user's machine by rvq_viewer/quant/_native.py (one candidate among
 * the engine's paths; the search probe uses it only where it is fastest and its codes equal addmm's).
 *
 * Layout (prepared once per codebook by _native.py):
 *   w     [kp / 16][d][16]  -2 E, groups of 16 codes side by side per dimension; kp a multiple of 64,
 *                           padding 0
 *   bias  [kp]              ||e||^2, +inf for padding codes (never the minimum)
 *
 * A block of R rows and C groups of 16 codes keeps R x C x (16 / lanes) vector accumulators in
 * registers; each row's running minimum is kept per lane (lane l sees codes l, l + lanes, ...; a
 * strict < keeps the lowest code of a lane), and the lanes are merged at the end of each panel, lowest
 * index first on equal scores.
 * Panels of `panel` codes keep their part of w in cache while every row of a piece passes over it.
 * The score is summed as the BLAS does it (the products first, in dimension order, then the bias), so
 * it rounds as addmm's scores do. Vectors are GCC/clang vector extensions of the machine's own width
 * (AVX-512, AVX2, SSE or NEON). A row with NaN gets code 0, as torch.argmin. */

#include <stdint.h>
#include <string.h>

/* The machine's vector width: 64-byte vectors on AVX-512, 32 on AVX/AVX2, 16 elsewhere (SSE, NEON).
 * A vector wider than the machine's would be split by the compiler, and gcc splits it badly. */
#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
#define VL (VBYTES / 4)       /* lanes per vector */
#define G 16                  /* codes per group of the layout */
#define S (G / VL)            /* vectors per group */
#define PIECE 4096

typedef float vf __attribute__((vector_size(VBYTES)));
typedef int32_t vi __attribute__((vector_size(VBYTES)));

#define INLINE static inline __attribute__((always_inline))

INLINE vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }

/* The selection step, one instruction each where the machine has one: `less_than` a mask of the
 * lanes where a < b (false for NaN, as C's <), `lower` a where a < b else b (x86's min is exactly that,
 * NaN included), `choose` a where the mask is set else b. Spelled with the generic vector operators,
 * gcc turns AVX-512's blend into three instructions, which at D = 8 cost a fifth of the search. */
#if defined(__AVX512F__)
#include <immintrin.h>
typedef __mmask16 vmask;
INLINE vmask less_than(vf a, vf b) { return _mm512_cmp_ps_mask((__m512)a, (__m512)b, _CMP_LT_OQ); }
INLINE vf lower(vf a, vf b, vmask m) { (void)m; return (vf)_mm512_min_ps((__m512)a, (__m512)b); }
INLINE vi choose(vmask m, vi a, vi b) { return (vi)_mm512_mask_mov_epi32((__m512i)b, m, (__m512i)a); }
#elif defined(__AVX__)
#include <immintrin.h>
typedef vi vmask;
INLINE vmask less_than(vf a, vf b) { return a < b; }
INLINE vf lower(vf a, vf b, vmask m) { (void)m; return (vf)_mm256_min_ps((__m256)a, (__m256)b); }
INLINE vi choose(vmask m, vi a, vi b) {
    return (vi)_mm256_blendv_ps((__m256)b, (__m256)a, (__m256)m);
}
#else
typedef vi vmask;
INLINE vmask less_than(vf a, vf b) { return a < b; }
INLINE vi choose(vmask m, vi a, vi b) { return (a & m) | (b & ~m); }
INLINE vf lower(vf a, vf b, vmask m) { return (vf)choose(m, (vi)a, (vi)b); }
#endif

/* Rows x[0 .. nr) (nr <= R, stride d) against codes [k0, k1): merges into best[r], code[r].
 * A step takes C groups: V = C * S vectors, vector j holding codes k + j * VL + lane. */
#define BLOCK(NAME, R, C)                                                                          \
INLINE void NAME(const float *x, int64_t d, const float *w, const float *bias, int64_t k0,          \
                 int64_t k1, float *best, int32_t *code, int nr) {                                 \
    enum { V = (C) * S };                                                                          \
    vf lane_best[R]; vi lane_code[R]; vi index[V];                                                 \
    for (int r = 0; r < R; r++)                                                                    \
        for (int l = 0; l < VL; l++) { lane_best[r][l] = __builtin_inff(); lane_code[r][l] = 0; }  \
    for (int j = 0; j < V; j++)                                                                    \
        for (int l = 0; l < VL; l++) index[j][l] = (int32_t)k0 + j * VL + l;                       \
    for (int64_t k = k0; k < k1; k += G * (C)) {                                                   \
        const float *wk = w + k * d;                                                               \
        vf acc[R][V];                                                                              \
        for (int j = 0; j < V; j++) {                                                              \
            vf we = load(wk + (j / S) * d * G + (j % S) * VL);                                     \
            for (int r = 0; r < R; r++) acc[r][j] = x[r * d] * we;                                 \
        }                                                                                          \
        for (int64_t e = 1; e < d; e++)                                                            \
            for (int j = 0; j < V; j++) {                                                          \
                vf we = load(wk + ((j / S) * d + e) * G + (j % S) * VL);                           \
                for (int r = 0; r < R; r++) acc[r][j] += x[r * d + e] * we;                        \
            }                                                                                      \
        for (int j = 0; j < V; j++) {                                                              \
            vf b = load(bias + k + j * VL);                                                        \
            for (int r = 0; r < R; r++) {                                                          \
                vf score = acc[r][j] + b;                                                          \
                vmask less = less_than(score, lane_best[r]);                                       \
                lane_best[r] = lower(score, lane_best[r], less);                                   \
                lane_code[r] = choose(less, index[j], lane_code[r]);                               \
            }                                                                                      \
            index[j] += G * (C);                                                                   \
        }                                                                                          \
    }                                                                                              \
    for (int r = 0; r < nr; r++) {                                                                 \
        float m = best[r]; int32_t i = code[r];                                                    \
        for (int l = 0; l < VL; l++) {                                                             \
            float v = lane_best[r][l]; int32_t j = lane_code[r][l];                                \
            if (v < m || (v == m && j < i)) { m = v; i = j; }                                      \
        }                                                                                          \
        best[r] = m; code[r] = i;                                                                  \
    }                                                                                              \
}

/* Pieces of PIECE rows; per piece, panel by panel, blocks of R rows then the rest one by one. */
#define KERNEL(NAME, R, C)                                                                         \
BLOCK(NAME##_rows, R, C)                                                                           \
BLOCK(NAME##_row, 1, C)                                                                            \
INLINE void NAME##_run(const float *x, int64_t n, int64_t d, const float *w, const float *bias,    \
                       int64_t kp, int64_t panel, int64_t *out) {                                  \
    float best[PIECE]; int32_t code[PIECE];                                                        \
    for (int64_t s = 0; s < n; s += PIECE) {                                                       \
        int64_t m = n - s < PIECE ? n - s : PIECE;                                                 \
        for (int64_t r = 0; r < m; r++) { best[r] = __builtin_inff(); code[r] = 0; }               \
        for (int64_t k0 = 0; k0 < kp; k0 += panel) {                                               \
            int64_t k1 = k0 + panel < kp ? k0 + panel : kp;                                        \
            int64_t i = 0;                                                                         \
            for (; i + R <= m; i += R)                                                             \
                NAME##_rows(x + (s + i) * d, d, w, bias, k0, k1, best + i, code + i, R);           \
            for (; i < m; i++)                                                                     \
                NAME##_row(x + (s + i) * d, d, w, bias, k0, k1, best + i, code + i, 1);            \
        }                                                                                          \
        for (int64_t r = 0; r < m; r++) out[s + r] = code[r];                                      \
    }                                                                                              \
}                                                                                                  \
/* Constant d for the small dimensions of factorised codes: the loop over d unrolls. */             \
void NAME(const float *x, int64_t n, int64_t d, const float *w, const float *bias, int64_t kp,     \
          int64_t panel, int64_t *out) {                                                           \
    if (d == 8) NAME##_run(x, n, 8, w, bias, kp, panel, out);                                      \
    else if (d == 16) NAME##_run(x, n, 16, w, bias, kp, panel, out);                               \
    else NAME##_run(x, n, d, w, bias, kp, panel, out);                                             \
}

/* Register blockings (rows x groups of 16 codes); which is fastest depends on the vector registers
 * the host has (the probe measures them): few accumulators for AVX2's 16, more for AVX-512's and
 * NEON's 32. C must divide 4 (kp and panels are multiples of 64 codes). */
KERNEL(nearest_r2c2, 2, 2)
KERNEL(nearest_r4c1, 4, 1)
KERNEL(nearest_r4c2, 4, 2)
KERNEL(nearest_r6c2, 6, 2)
KERNEL(nearest_r8c1, 8, 1)
KERNEL(nearest_r8c2, 8, 2)

/* The version of this file's ABI, checked on load. */
int rvq_nearest_abi(void) { return 1; }
