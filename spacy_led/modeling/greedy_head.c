/* Greedy search's LM head through an int8 copy (greedy_head.py, which proves the bound used here):
 *
 * - greedy_head_quantize: the int8 copy of a float32 weight and each row's error coefficient;
 * - greedy_head_int8_products: the int8 logits of 1-8 rows of hidden states;
 * - greedy_head_candidates: the tokens the bound cannot rule out.
 *
 * Plain C with AVX2/FMA intrinsics and OpenMP, built with fewrow.c and band_attention.c (kernels.py).
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>

#include "simd.h"

#define MAX_ROWS 8
#define PARALLEL_MIN_BYTES (1L << 19) /* below this a parallel region costs more than it saves */

/*     out[r * ldo + n] = scales[n] * sum_k q[n * K + k] * x[r * ldx + k]
 *
 * for r < rows (1-8), n < N, with q int8 (a quarter of float32's bytes: the point of it). The sums are
 * float32 in any order; greedy_head.py bounds their rounding for every order (gamma_K), so no order is
 * promised here. Four weight rows at a time, one accumulator each per row of x (four independent FMA chains
 * keep up with the memory); the rows of x and the four weight rows stay in L1 while each row of x passes. */

#define INT8_AHEAD 4 /* blocks of four weight rows */

static inline __m256 int8x8(const int8_t *q) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)q)));
}

static void int8_range(const int8_t *q, const float *scales, long K, const float *x, long ldx, int rows,
                       float *out, long ldo, long n0, long n1) {
    long n = n0;
    for (; n + 4 <= n1; n += 4) {
        const int8_t *q0 = q + n * K, *q1 = q0 + K, *q2 = q1 + K, *q3 = q2 + K;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + r * ldx;
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
            long k = 0;
            for (; k + 8 <= K; k += 8) {
                /* The four rows are one contiguous block of 4K bytes, read as four short streams that the
                 * hardware prefetcher does not follow: ask for the block INT8_AHEAD blocks on, a cache line
                 * per two steps. */
                if (r == 0 && (k & 15) == 0) _mm_prefetch((const char *)(q0 + INT8_AHEAD * 4 * K + 4 * k), _MM_HINT_T0);
                const __m256 xv = _mm256_loadu_ps(xr + k);
                a0 = _mm256_fmadd_ps(int8x8(q0 + k), xv, a0);
                a1 = _mm256_fmadd_ps(int8x8(q1 + k), xv, a1);
                a2 = _mm256_fmadd_ps(int8x8(q2 + k), xv, a2);
                a3 = _mm256_fmadd_ps(int8x8(q3 + k), xv, a3);
            }
            float s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
            for (; k < K; k++) {
                s0 += q0[k] * xr[k];
                s1 += q1[k] * xr[k];
                s2 += q2[k] * xr[k];
                s3 += q3[k] * xr[k];
            }
            float *o = out + r * ldo + n;
            o[0] = scales[n] * s0;
            o[1] = scales[n + 1] * s1;
            o[2] = scales[n + 2] * s2;
            o[3] = scales[n + 3] * s3;
        }
    }
    for (; n < n1; n++) {
        const int8_t *qn = q + n * K;
        for (int r = 0; r < rows; r++) {
            const float *xr = x + r * ldx;
            __m256 a = _mm256_setzero_ps();
            long k = 0;
            for (; k + 8 <= K; k += 8) a = _mm256_fmadd_ps(int8x8(qn + k), _mm256_loadu_ps(xr + k), a);
            float s = hsum(a);
            for (; k < K; k++) s += qn[k] * xr[k];
            out[r * ldo + n] = scales[n] * s;
        }
    }
}

/* Returns 0, or -1 when rows is outside 1..MAX_ROWS (nothing is written then). */
int greedy_head_int8_products(const int8_t *q, const float *scales, const float *x, long ldx, float *out,
                              long ldo, long N, long K, int rows, int threads) {
    if (rows < 1 || rows > MAX_ROWS) return -1;
    if (N * K < PARALLEL_MIN_BYTES) threads = 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const long T = omp_get_num_threads(), t = omp_get_thread_num();
        const long per = ((N + T - 1) / T + 3) / 4 * 4;  /* whole blocks of four rows per thread */
        const long n0 = t * per < N ? t * per : N, n1 = n0 + per < N ? n0 + per : N;
        int8_range(q, scales, K, x, ldx, rows, out, ldo, n0, n1);
    }
    return 0;
}

/* The int8 copy of a weight (N, K) for greedy_head.py: per row, scale = max_k |w_k| / 127 (1 for a zero
 * row), q_k = round(w_k / scale), and the error coefficient
 *     coef = ||w - scale q|| + 2 gamma (||w|| + ||scale q||)
 * in double precision (scale q is exact in a double: a 24-bit scale times a 7-bit integer). */
void greedy_head_quantize(const float *w, long N, long K, double gamma, int8_t *q, float *scales, double *coef,
                          int threads) {
#pragma omp parallel for num_threads(threads) schedule(static)
    for (long n = 0; n < N; n++) {
        const float *wn = w + n * K;
        int8_t *qn = q + n * K;
        double peak = 0;
        for (long k = 0; k < K; k++) peak = fabs(wn[k]) > peak ? fabs(wn[k]) : peak;
        const float scale = peak > 0 ? (float)(peak / 127.0) : 1.0f;
        double error = 0, norm_w = 0, norm_q = 0;
        for (long k = 0; k < K; k++) {
            double v = nearbyint((double)wn[k] / scale);
            v = v > 127 ? 127 : v < -127 ? -127 : v;
            qn[k] = (int8_t)v;
            const double dequantized = v * (double)scale, w64 = wn[k];
            error += (w64 - dequantized) * (w64 - dequantized);
            norm_w += w64 * w64;
            norm_q += dequantized * dequantized;
        }
        scales[n] = scale;
        coef[n] = (sqrt(error) + 2 * gamma * (sqrt(norm_w) + sqrt(norm_q))) * (1 + 1e-9);
    }
}

/* The candidates of greedy_head.py for each of `rows` rows: with a = approx[r][i] (an int8 logit, its bias
 * included) and
 *     radius = norms[r] coef[i] + 2^-20 (|a| + |bias[i]|),
 * the tokens i not banned (processed[r][i] > -inf) whose a + radius reaches the largest a - radius of the
 * tokens not banned; written in ascending order to ids[r * N ...], their number to counts[r]. Returns 0, or
 * -1 when a row has no finite a - radius (every token banned) or a NaN (a weight that is not a number, whose
 * logit torch.argmax would pick: only the full product can answer then). */
int greedy_head_candidates(const float *approx, const float *processed, const float *bias, const double *coef,
                           const double *norms, long rows, long N, long *ids, long *counts) {
    const double tiny = 1.0 / (1 << 20);
    for (long r = 0; r < rows; r++) {
        const float *ar = approx + r * N, *pr = processed + r * N;
        double best = -INFINITY;
        for (long i = 0; i < N; i++) {
            if (!(pr[i] > -INFINITY)) continue;
            const double b = bias ? fabs((double)bias[i]) : 0, a = ar[i];
            const double low = a - (norms[r] * coef[i] + tiny * (fabs(a) + b));
            if (isnan(low)) return -1;
            best = low > best ? low : best;
        }
        if (!isfinite(best)) return -1;
        long count = 0;
        for (long i = 0; i < N; i++) {
            if (!(pr[i] > -INFINITY)) continue;
            const double b = bias ? fabs((double)bias[i]) : 0, a = ar[i];
            if (a + norms[r] * coef[i] + tiny * (fabs(a) + b) >= best) ids[r * N + count++] = i;
        }
        counts[r] = count;
    }
    return 0;
}
