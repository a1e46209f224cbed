/* One decoder layer of generation's step in one call, for float32 inference on the CPU (decoder_step.py's
 * _LayerStep, which calls it where it applies and otherwise runs the same layer as torch operations).
 *
 * For each of the `rows` rows (1-8; `group` consecutive rows per input, the beams), with x its hidden state,
 * d = H * D, scale = 1 / sqrt(D), and the self-attention cache holding positions [0, position):
 *
 *     q, k, v = x Wqkv^T + bqkv                      (the fused q/k/v projections)
 *     cache[position] = k, v
 *     a   = softmax(scale q . cache keys[0..position]) cache values      per head
 *     x   = norm1(x + a Wo^T + bo)
 *     c   = softmax(scale (x Wcq^T + bcq) . cross keys + mask) cross values   per head, over the input's S
 *     x   = norm2(x + c Wco^T + bco)
 *     x   = norm3(x + act(x W1^T + b1) W2^T + b2)      act: GELU (erf) or ReLU
 *
 * which is the layer's forward in eval mode (transformers' BART/LED decoder layer). Why one call: a step of
 * generation reads ~33 MB of weights and 2 x 4 B x S x d of cross-attention keys/values per layer, and the
 * products (fewrow.c) stream them at close to the memory bandwidth; but as ~30 torch operations per layer the
 * step also paid their dispatch and, between products that had just pushed megabytes through the caches,
 * cold code and data for each small operation (~4 ms of a 22 ms step at 4k for led-base). Here the layer is
 * one OpenMP parallel region: the products are split between the threads over output features
 * (fewrow_share), the small parts (attention over the cache, softmax, layer norms) over rows and heads, with
 * a barrier between dependent stages.
 *
 * Numbers: the products are fewrow's (the same sums in the same order as the torch-operation step on this
 * machine); layer norm accumulates its mean and variance in double, softmax uses simd.h's exp (~1 ulp), GELU
 * simd.h's gelu8 (torch's erf approximation): the same function as torch's to float32 rounding
 * (tests/test_decoder_layer.py).
 *
 * Layouts (row-major, contiguous): hidden (rows, d), updated in place; weights as nn.Linear's (out, in);
 * the self-attention cache keys/values (rows, H, P, D); cross keys (inputs, H, S, D), cross values
 * transposed (inputs, H, D, S); the additive cross mask (inputs, S) or NULL; `work`: at least
 * decoder_layer_work_floats(...) floats.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "simd.h"

#define MAX_ROWS 8 /* fewrow.c's */
#define MAX_D 1024

/* fewrow.c: thread t of T's share of a batched few-row product. */
void fewrow_share(const float *w, long w_batch_stride, const float *x, long x_batch_stride, long ldx,
                  const float *bias, float *out, long out_batch_stride, long ldo, long batch, long N, long K,
                  int rows, long t, long T);

typedef struct {
    const float *qkv_w, *qkv_b, *self_out_w, *self_out_b, *self_norm_w, *self_norm_b;
    const float *cross_q_w, *cross_q_b, *cross_out_w, *cross_out_b, *cross_norm_w, *cross_norm_b;
    const float *fc1_w, *fc1_b, *fc2_w, *fc2_b, *final_norm_w, *final_norm_b;
    float *keys, *values;
    const float *cross_keys, *cross_values_t, *cross_mask;
    float self_norm_eps, cross_norm_eps, final_norm_eps;
} decoder_layer;

enum { ACT_GELU = 0, ACT_RELU = 1 };

/* [*a, *e): thread t of T's contiguous share of n items. */
static inline void share(long n, long t, long T, long *a, long *e) {
    const long per = (n + T - 1) / T;
    *a = t * per < n ? t * per : n;
    *e = *a + per < n ? *a + per : n;
}

/* One row of n: x = layer_norm(x + y) with weight w, bias b (biased variance, as torch). */
static void add_norm(float *x, const float *y, long n, const float *w, const float *b, float eps) {
    double sum = 0.0;
    for (long i = 0; i < n; i++) {
        x[i] += y[i];
        sum += x[i];
    }
    const double mean = sum / n;
    double var = 0.0;
    for (long i = 0; i < n; i++) var += (x[i] - mean) * (x[i] - mean);
    const float rstd = (float)(1.0 / sqrt(var / n + eps)), m = (float)mean;
    for (long i = 0; i < n; i++) x[i] = (x[i] - m) * rstd * w[i] + b[i];
}

/* s[0..n) = softmax(s[0..n)) (zeros when every score is -inf). */
static void softmax(float *s, long n) {
    __m256 m = _mm256_set1_ps(-INFINITY);
    long i = 0;
    for (; i + 8 <= n; i += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(s + i));
    float mx = hmax(m);
    for (; i < n; i++) mx = s[i] > mx ? s[i] : mx;
    if (mx == -INFINITY) {
        memset(s, 0, n * sizeof(float));
        return;
    }
    const __m256 mv = _mm256_set1_ps(mx);
    __m256 sum = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        const __m256 p = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(s + i), mv));
        _mm256_storeu_ps(s + i, p);
        sum = _mm256_add_ps(sum, p);
    }
    float total = hsum(sum);
    for (; i < n; i++) {
        s[i] = expf(s[i] - mx);
        total += s[i];
    }
    const float inv = 1.0f / total;
    const __m256 iv = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(s + i, _mm256_mul_ps(_mm256_loadu_ps(s + i), iv));
    for (; i < n; i++) s[i] *= inv;
}

static inline float dot(const float *a, const float *b, long D) {
    __m256 acc = _mm256_setzero_ps();
    for (long j = 0; j < D; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc);
    return hsum(acc);
}

/* Inside the layer's parallel region (every thread calls it): hidden = norm(hidden + x W^T + bias) for the
 * rows, x (rows, K), the product through tmp (rows, d). */
static void project_add_norm(const float *w, const float *bias, const float *x, long K, float *tmp, float *hidden,
                             long rows, long d, const float *norm_w, const float *norm_b, float eps, long t, long T) {
    fewrow_share(w, 0, x, 0, K, bias, tmp, 0, d, 1, d, K, (int)rows, t, T);
#pragma omp barrier
    long a, e;
    share(rows, t, T, &a, &e);
    for (long r = a; r < e; r++) add_norm(hidden + r * d, tmp + r * d, d, norm_w, norm_b, eps);
#pragma omp barrier
}

long decoder_layer_work_floats(long rows, long d, long H, long F, long P, long S) {
    return rows * (8 * d + F) + rows * H * (S > P ? S : P);
}

/* Returns 0; -1 when rows or group is outside 1..MAX_ROWS, rows is not a multiple of group, D is not a
 * multiple of 8 up to MAX_D, d != H * D, or position >= P (nothing is written then). */
int decoder_layer_step(const decoder_layer *L, float *hidden, long rows, long group, long d, long H, long F,
                       long P, long position, long S, int activation, float *work, int threads) {
    const long D = H > 0 ? d / H : 0, inputs = group > 0 ? rows / group : 0;
    if (rows < 1 || rows > MAX_ROWS || group < 1 || group > MAX_ROWS || rows % group || H < 1 || D * H != d
        || D % 8 || D > MAX_D || position < 0 || position >= P)
        return -1;
    const float scale = 1.0f / sqrtf((float)D);
    float *const qkv = work, *const attn = qkv + rows * 3 * d, *const tmp = attn + rows * d;
    float *const cq = tmp + rows * d, *const qh = cq + rows * d, *const oh = qh + rows * d;
    float *const ffn = oh + rows * d, *const scores = ffn + rows * F;
    const long ldc = S > P ? S : P; /* a row of scores */

#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        const long t = omp_get_thread_num(), T = omp_get_num_threads();
        long a, e;

        /* self-attention: the fused projections, the cache's new position, each (row, head) over the cache */
        fewrow_share(L->qkv_w, 0, hidden, 0, d, L->qkv_b, qkv, 0, 3 * d, 1, 3 * d, d, (int)rows, t, T);
#pragma omp barrier
        share(rows * H, t, T, &a, &e);
        for (long item = a; item < e; item++) {
            const long r = item / H, h = item % H;
            const float *row = qkv + r * 3 * d;
            float *keys = L->keys + item * P * D, *values = L->values + item * P * D;
            memcpy(keys + position * D, row + d + h * D, D * sizeof(float));
            memcpy(values + position * D, row + 2 * d + h * D, D * sizeof(float));
            float q[MAX_D];
            for (long j = 0; j < D; j++) q[j] = row[h * D + j] * scale;
            float *s = scores + item * ldc;
            for (long j = 0; j <= position; j++) s[j] = dot(q, keys + j * D, D);
            softmax(s, position + 1);
            float *out = attn + r * d + h * D;
            for (long c = 0; c < D; c += 8) {
                __m256 acc = _mm256_setzero_ps();
                for (long j = 0; j <= position; j++)
                    acc = _mm256_fmadd_ps(_mm256_set1_ps(s[j]), _mm256_loadu_ps(values + j * D + c), acc);
                _mm256_storeu_ps(out + c, acc);
            }
        }
#pragma omp barrier
        project_add_norm(L->self_out_w, L->self_out_b, attn, d, tmp, hidden, rows, d, L->self_norm_w, L->self_norm_b,
                         L->self_norm_eps, t, T);

        /* cross-attention: queries (inputs, H, group, D), scores against the input's keys, softmax, values */
        fewrow_share(L->cross_q_w, 0, hidden, 0, d, L->cross_q_b, cq, 0, d, 1, d, d, (int)rows, t, T);
#pragma omp barrier
        share(rows * H, t, T, &a, &e);
        for (long item = a; item < e; item++) {
            const long r = item / H, h = item % H, b = r / group, g = r % group;
            float *dst = qh + ((b * H + h) * group + g) * D;
            for (long j = 0; j < D; j++) dst[j] = cq[r * d + h * D + j] * scale;
        }
#pragma omp barrier
        fewrow_share(L->cross_keys, S * D, qh, group * D, D, NULL, scores, group * ldc, ldc, inputs * H, S, D,
                     (int)group, t, T);
#pragma omp barrier
        share(rows * H, t, T, &a, &e);
        for (long item = a; item < e; item++) {  /* item = (b * H + h) * group + g */
            float *s = scores + (item / group) * group * ldc + (item % group) * ldc;
            if (L->cross_mask) {
                const float *mask = L->cross_mask + (item / (H * group)) * S;
                for (long j = 0; j < S; j++) s[j] += mask[j];
            }
            softmax(s, S);
        }
#pragma omp barrier
        fewrow_share(L->cross_values_t, D * S, scores, group * ldc, ldc, NULL, oh, group * D, D, inputs * H, D, S,
                     (int)group, t, T);
#pragma omp barrier
        share(rows * H, t, T, &a, &e);
        for (long item = a; item < e; item++) {
            const long r = item / H, h = item % H, b = r / group, g = r % group;
            memcpy(attn + r * d + h * D, oh + ((b * H + h) * group + g) * D, D * sizeof(float));
        }
#pragma omp barrier
        project_add_norm(L->cross_out_w, L->cross_out_b, attn, d, tmp, hidden, rows, d, L->cross_norm_w,
                         L->cross_norm_b, L->cross_norm_eps, t, T);

        /* feed-forward: each thread applies the activation to the features it computed */
        fewrow_share(L->fc1_w, 0, hidden, 0, d, L->fc1_b, ffn, 0, F, 1, F, d, (int)rows, t, T);
        share(F, t, T, &a, &e);
        for (long r = 0; r < rows; r++) {
            float *f = ffn + r * F;
            if (activation == ACT_RELU) {
                for (long n = a; n < e; n++) f[n] = f[n] < 0.0f ? 0.0f : f[n];
                continue;
            }
            long n = a;
            for (; n + 8 <= e; n += 8) _mm256_storeu_ps(f + n, gelu8(_mm256_loadu_ps(f + n)));
            if (n < e) {  /* the last e - n < 8 features, through the same lanes */
                const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(e - n)),
                                                        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
                _mm256_maskstore_ps(f + n, mask, gelu8(_mm256_maskload_ps(f + n, mask)));
            }
        }
#pragma omp barrier
        project_add_norm(L->fc2_w, L->fc2_b, ffn, F, tmp, hidden, rows, d, L->final_norm_w, L->final_norm_b,
                         L->final_norm_eps, t, T);
    }
    return 0;
}
