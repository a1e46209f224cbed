/* Few-row float32 products for the decoder step: out = x W^T (+ bias) for 1-8 rows of x.
 *
 * A generation step multiplies one row per beam by every weight of the decoder; its cost is reading the
 * weights from memory. MKL's products for so few rows read a weight at about half the machine's memory
 * bandwidth on the CPUs we measured (AMD EPYC); these loops read each weight row once, with the 1-8 rows of x
 * kept in L1 and one AVX2 accumulator per (weight row, x row) pair, and split the output features between
 * the OpenMP threads of the calling process (torch's own OpenMP runtime: this file is compiled and loaded
 * after torch, see kernels.py).
 *
 *     out[b][r * ldo + n] = bias[n] + sum_k w[b][n * K + k] * x[b][r * ldx + k]
 *
 * for b < batch (a batched product: the decoder's cross-attention, one (input, head) per b), r < rows,
 * n < N. Each sum runs over k in 8 lanes (term k in lane k % 8), then across the lanes; the result equals
 * torch's to float32 rounding (a different order of the same additions), and a row's result is the same
 * whatever the other rows, the number of rows and the zeros after its last term.
 */
#include <immintrin.h>
#include <omp.h>

#define MAX_ROWS 8
#define PARALLEL_MIN_WEIGHTS (1L << 17)
#define PREFETCH_AHEAD 4096 /* floats */

/* The 8 sums of a[0..7]'s lanes, as the 8 lanes of one vector (7 shuffles and adds, where 8 separate sums
 * would take 8 x 5: with short rows, K = 64 for a head's keys, the sums would cost more than the products). */
static inline __m256 sums8(const __m256 *a) {
    const __m256 s01 = _mm256_hadd_ps(a[0], a[1]), s23 = _mm256_hadd_ps(a[2], a[3]);
    const __m256 s45 = _mm256_hadd_ps(a[4], a[5]), s67 = _mm256_hadd_ps(a[6], a[7]);
    const __m256 s0123 = _mm256_hadd_ps(s01, s23), s4567 = _mm256_hadd_ps(s45, s67);
    /* s0123 = [sums of a0..a3 over lanes 0-3 | the same over lanes 4-7]; likewise s4567 */
    return _mm256_add_ps(_mm256_permute2f128_ps(s0123, s4567, 0x20), _mm256_permute2f128_ps(s0123, s4567, 0x31));
}

/* P consecutive weight rows (from w, each K long) times R rows of x (P * R <= 8), results into out (row
 * stride ldo). One pass over the weight rows: each 8 floats of a weight row are multiplied into all R rows
 * while they are in a register, so the arithmetic runs while the next weights stream in. P and R are
 * literal constants at every call, so the loops unroll and the accumulators stay in registers (16 AVX2
 * registers: P * R accumulators, R vectors of x, one of w). */
static inline __attribute__((always_inline)) void tile(const int P, const int R, const float *w, long K,
                                                       const float *x, long ldx, const float *bias,
                                                       float *out, long ldo) {
    __m256 acc[8];
    for (int i = 0; i < 8; i++) acc[i] = _mm256_setzero_ps();
    long k = 0;
    for (; k + 8 <= K; k += 8) {
        /* With several rows of x the arithmetic per weight byte is R times one row's, and the loads of the
         * weights stop running ahead of it: ask for each weight row's cache line 16 KB ahead (R = 4: 1.3-1.4x
         * faster on led-base's weights; one row reads no faster with it). */
        if (R > 1 && (k & 15) == 0)
            for (int p = 0; p < P; p++) _mm_prefetch((const char *)(w + p * K + k + PREFETCH_AHEAD), _MM_HINT_T0);
        if (P == 1) {
            const __m256 wv = _mm256_loadu_ps(w + k);
            for (int r = 0; r < R; r++) acc[r] = _mm256_fmadd_ps(wv, _mm256_loadu_ps(x + r * ldx + k), acc[r]);
        } else if (R == 1) {
            const __m256 xv = _mm256_loadu_ps(x + k);
            for (int p = 0; p < P; p++) acc[p] = _mm256_fmadd_ps(_mm256_loadu_ps(w + p * K + k), xv, acc[p]);
        } else {
            __m256 xv[8];
            for (int r = 0; r < R; r++) {
                xv[r] = _mm256_loadu_ps(x + r * ldx + k);
                __asm__("" : "+x"(xv[r]));  /* keep it in a register: one load per k-step, not one per weight row */
            }
            for (int p = 0; p < P; p++) {
                const __m256 wv = _mm256_loadu_ps(w + p * K + k);
                for (int r = 0; r < R; r++) acc[p * R + r] = _mm256_fmadd_ps(wv, xv[r], acc[p * R + r]);
            }
        }
    }
    if (k < K) {
        /* The last K % 8 terms in the same lanes as a full step, the rest of it read as zeros: each term of a
         * sum lands in the same lane whatever K is, so a row's result does not depend on padding (the
         * probabilities of padded keys are exact zeros) and a document gets the same numbers alone as in a
         * padded batch. */
        const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(K - k)),
                                                _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int p = 0; p < P; p++) {
            const __m256 wv = _mm256_maskload_ps(w + p * K + k, mask);
            for (int r = 0; r < R; r++)
                acc[p * R + r] = _mm256_fmadd_ps(wv, _mm256_maskload_ps(x + r * ldx + k, mask), acc[p * R + r]);
        }
    }
    float sums[8];
    _mm256_storeu_ps(sums, sums8(acc));
    for (int p = 0; p < P; p++)
        for (int r = 0; r < R; r++) out[r * ldo + p] = bias ? sums[p * R + r] + bias[p] : sums[p * R + r];
}

/* Output features [n0, n1) of one product: tiles of P weight rows (8 / R, but 4 for one row: eight
 * interleaved streams of short rows, a head's keys, read slower than four), then one row at a time. */
#define RANGE(R, P)                                                                                        \
    static void range_##R(const float *w, long K, const float *x, long ldx, const float *bias, float *out, \
                          long ldo, long n0, long n1) {                                                    \
        long n = n0;                                                                                       \
        for (; n + P <= n1; n += P) tile(P, R, w + n * K, K, x, ldx, bias ? bias + n : 0, out + n, ldo);   \
        for (; n < n1; n++) tile(1, R, w + n * K, K, x, ldx, bias ? bias + n : 0, out + n, ldo);           \
    }
RANGE(1, 4)
RANGE(2, 4)
RANGE(3, 2)
RANGE(4, 2)
RANGE(5, 1)
RANGE(6, 1)
RANGE(7, 1)
RANGE(8, 1)

typedef void (*range_fn)(const float *, long, const float *, long, const float *, float *, long, long, long);
static const range_fn RANGES[MAX_ROWS + 1] = {0, range_1, range_2, range_3, range_4,
                                              range_5, range_6, range_7, range_8};

int fewrow_max_rows(void) { return MAX_ROWS; }

/* Thread t of T's share of a product (see fewrow_linear; rows in 1..MAX_ROWS): a contiguous run of the
 * output features of all its products. Called inside a parallel region, by fewrow_linear and by
 * decoder_layer.c's step, which runs a whole layer in one region. */
void fewrow_share(const float *w, long w_batch_stride, const float *x, long x_batch_stride, long ldx,
                  const float *bias, float *out, long out_batch_stride, long ldo, long batch, long N, long K,
                  int rows, long t, long T) {
    const range_fn range = RANGES[rows];
    const long total = batch * N, per = (total + T - 1) / T;
    long i = t * per;
    const long end = i + per < total ? i + per : total;
    while (i < end) {
        const long b = i / N, n0 = i % N;
        const long n1 = N < n0 + (end - i) ? N : n0 + (end - i);
        range(w + b * w_batch_stride, K, x + b * x_batch_stride, ldx, bias, out + b * out_batch_stride, ldo, n0, n1);
        i += n1 - n0;
    }
}

/* Returns 0, or -1 when rows is outside 1..MAX_ROWS (nothing is written then). */
int fewrow_linear(const float *w, long w_batch_stride, const float *x, long x_batch_stride, long ldx,
                  const float *bias, float *out, long out_batch_stride, long ldo, long batch, long N, long K,
                  int rows, int threads) {
    if (rows < 1 || rows > MAX_ROWS) return -1;
    /* Threads only for products worth waking them (as torch's own grain size): below ~0.5 MB of weights a
     * parallel region costs more than it saves, and far more on a loaded machine. */
    if (batch * N * K < PARALLEL_MIN_WEIGHTS) threads = 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
    fewrow_share(w, w_batch_stride, x, x_batch_stride, ldx, bias, out, out_batch_stride, ldo, batch, N, K, rows,
                 omp_get_thread_num(), omp_get_num_threads());
    return 0;
}
