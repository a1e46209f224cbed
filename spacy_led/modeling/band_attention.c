/* LED's encoder self-attention, local part, for float32 inference on the CPU: each query attends the keys
 * of its window and the global tokens, and nothing else is computed.
 *
 * For query i of row b and head h (w = the one-sided window, scale = 1/sqrt(D)):
 *
 *     s_j  = scale * q_i . k_j     for j in [i - w, i + w], 0 <= j < L, key_ok[b][j] (a normal token)
 *     s_g  = scale * q_i . kg_g    for the global slots g with g_ok[b][g] (global tokens' keys, local projection)
 *     out_i = sum_j softmax(s)_j v_j + sum_g softmax(s)_g vg_g
 *
 * which is what attention.py's blocked scaled_dot_product_attention computes (every query's own band, the
 * other keys of its block masked out). That formulation multiplies each block of w queries by the 3w keys
 * around it: 1.5x the band's products. Here a tile of 6 queries takes the keys of its 6 windows, 2w + 6
 * rounded to whole 16-key panels: ~1.02x. A row with no key at all (only padding rows, whose output the
 * caller overwrites) gets zeros.
 *
 * Layout. q, k, v, out: (B, L, H, D), row-major (the projections as (B, L, H*D)). kg, vg: (B, G, H, D). Each
 * head's keys are first packed into panels of 16 positions, (L_panels, D, 16), and its values into (L, D), with
 * zeros past the sequence, so that the loops below read contiguous, aligned memory:
 *
 * - scores: a tile's 6 x 16 scores against one panel are a small matrix product in 12 AVX2 registers, over d
 *   (broadcast q[r][d], two loads of the panel row);
 * - softmax per row: the maximum, exp through Cephes' expf polynomial (~1 ulp), the sum; the output is divided
 *   by the sum at the end, as a flash-attention kernel does;
 * - values: 6 rows x 16 of D in 12 registers, over the keys (broadcast p[r][j], two loads of v[j]).
 *
 * A block of 8 tiles (48 queries) shares one pass over its keys and values: each panel is loaded into L1 once
 * for every tile whose windows reach it, and the values go 64 keys (16 KB at D = 64) at a time through every
 * tile, so a head's 2w + 48 keys and values are read from the outer caches once per 48 queries, not per 6
 * (with a tile at a time they did not fit in L2 beside each other, and the kernel took 1.6x as long).
 *
 * Work is split between the OpenMP threads of the calling process (torch's own, see kernels.py) over
 * (b, h, block), each thread taking a contiguous run of blocks so that a head's keys stay in its cache.
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "simd.h"

#define TILE 6                  /* queries per register tile */
#define TILES 8                 /* tiles per block: 48 queries share one pass over their keys and values */
#define BLOCK (TILE * TILES)
#define PANEL 16                /* keys per panel */
#define CHUNK 64                /* keys per pass of the values (16 KB of values at D = 64: in L1) */
#define MAX_D 1024

static const float zero_row[MAX_D] __attribute__((aligned(32)));

/* s[r * lds + c] = q[r] . key c of the panel (D x 16), for the tile's 6 queries. */
static inline void tile_scores(const float *const q[TILE], const float *panel, long D, float *s, long lds) {
    __m256 acc[TILE][2];
    for (int r = 0; r < TILE; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
    for (long d = 0; d < D; d++) {
        const __m256 k0 = _mm256_load_ps(panel + d * PANEL), k1 = _mm256_load_ps(panel + d * PANEL + 8);
        for (int r = 0; r < TILE; r++) {
            const __m256 qr = _mm256_broadcast_ss(q[r] + d);
            acc[r][0] = _mm256_fmadd_ps(qr, k0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_ps(qr, k1, acc[r][1]);
        }
    }
    for (int r = 0; r < TILE; r++) {
        _mm256_storeu_ps(s + r * lds, acc[r][0]);
        _mm256_storeu_ps(s + r * lds + 8, acc[r][1]);
    }
}

/* o[r * D + d0 ..] += sum_{t in [first, last)} p[r * ldp + t] v[t * D + d0 ..], W = 16 or 8 columns. */
static inline __attribute__((always_inline)) void tile_values(const int W, const float *p, long ldp, long first,
                                                              long last, const float *v, long D, long d0,
                                                              float *o) {
    __m256 acc[TILE][2];
    for (int r = 0; r < TILE; r++) {
        acc[r][0] = _mm256_loadu_ps(o + r * D + d0);
        acc[r][1] = W == 16 ? _mm256_loadu_ps(o + r * D + d0 + 8) : _mm256_setzero_ps();
    }
    for (long t = first; t < last; t++) {
        const __m256 v0 = _mm256_loadu_ps(v + t * D + d0);
        const __m256 v1 = W == 16 ? _mm256_loadu_ps(v + t * D + d0 + 8) : _mm256_setzero_ps();
        for (int r = 0; r < TILE; r++) {
            const __m256 pr = _mm256_broadcast_ss(p + r * ldp + t);
            acc[r][0] = _mm256_fmadd_ps(pr, v0, acc[r][0]);
            if (W == 16) acc[r][1] = _mm256_fmadd_ps(pr, v1, acc[r][1]);
        }
    }
    for (int r = 0; r < TILE; r++) {
        _mm256_storeu_ps(o + r * D + d0, acc[r][0]);
        if (W == 16) _mm256_storeu_ps(o + r * D + d0 + 8, acc[r][1]);
    }
}

/* Row r's scores s[pa, pe) (its tile's panels) and its global scores g[0, G) -> probabilities before
 * normalisation, in place; returns 1 / their sum (0 when the row has no key). Its keys are span positions
 * [a, e) that are normal tokens (ok[t]). */
static float row_softmax(float *s, long pa, long pe, long a, long e, const unsigned char *ok, float scale,
                         float *g, long G) {
    for (long t = pa; t < a; t++) s[t] = -INFINITY;
    for (long t = e > a ? e : a; t < pe; t++) s[t] = -INFINITY;
    __m256 m = _mm256_set1_ps(-INFINITY);
    long t = a;
    for (; t + 8 <= e; t += 8) {
        const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + t), _mm256_set1_ps(scale));
        const __m256i ok32 = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(ok + t)));
        const __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(ok32, _mm256_setzero_si256()));
        const __m256 y = _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), x, keep);
        _mm256_storeu_ps(s + t, y);
        m = _mm256_max_ps(m, y);
    }
    float mx = hmax(m);
    for (; t < e; t++) {
        s[t] = ok[t] ? s[t] * scale : -INFINITY;
        mx = s[t] > mx ? s[t] : mx;
    }
    for (long u = 0; u < G; u++) mx = g[u] > mx ? g[u] : mx;
    if (mx == -INFINITY) {
        memset(s + pa, 0, (pe - pa) * sizeof(float));
        memset(g, 0, G * sizeof(float));
        return 0.0f;
    }
    const __m256 mv = _mm256_set1_ps(mx);
    __m256 sum = _mm256_setzero_ps();
    long u = pa;
    for (; u + 8 <= pe; u += 8) {  /* pe - pa is a multiple of 16 */
        const __m256 pr = exp_neg(_mm256_sub_ps(_mm256_loadu_ps(s + u), mv));
        _mm256_storeu_ps(s + u, pr);
        sum = _mm256_add_ps(sum, pr);
    }
    float total = hsum(sum);
    for (u = 0; u < G; u++) {
        g[u] = g[u] == -INFINITY ? 0.0f : expf(g[u] - mx);
        total += g[u];
    }
    return 1.0f / total;
}

long band_attention_scratch_floats(long B, long L, long H, long D) {
    return 2 * B * H * ((L + PANEL - 1) / PANEL) * PANEL * D;
}

/* Returns 0; -1 when D is not a multiple of 8 up to MAX_D (nothing is written then); -2 when a thread could
 * not allocate its scores (then some outputs are not written). ``scratch``: at least
 * band_attention_scratch_floats(B, L, H, D) floats, 32-byte aligned (the packed keys and values). */
int band_attention(const float *q, const float *k, const float *v, long B, long L, long H, long D, long w,
                   const unsigned char *key_ok, const float *kg, const float *vg, const unsigned char *g_ok,
                   long G, float scale, float *out, float *scratch, int threads) {
    if (D % 8 != 0 || D <= 0 || D > MAX_D) return -1;
    const long ld = H * D;  /* row stride of q, k, v, out */
    const long n_panels = (L + PANEL - 1) / PANEL, per_head = n_panels * PANEL * D;
    float *const panels = scratch, *const values = scratch + B * H * per_head;
    const long n_blocks = (L + BLOCK - 1) / BLOCK;
    /* the most panels a block can span: floor16(i0 - w) .. i0 + BLOCK - 1 + w */
    const long span_cap = ((2 * w + BLOCK + 2 * PANEL - 2) / PANEL + 1) * PANEL;
    const long lds = span_cap + ((G + 7) / 8) * 8;  /* a row of scores: the span, then the global tokens */
    int failed = 0;

#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        /* keys into panels, panels[b][h][p][d][c] = k[b][16p + c][h][d]; values into values[b][h][j][d] */
#pragma omp for schedule(static)
        for (long bhp = 0; bhp < B * H * n_panels; bhp++) {
            const long bh = bhp / n_panels, b = bh / H, h = bh % H, p = bhp % n_panels;
            float *panel = panels + bh * per_head + p * PANEL * D;
            for (long c = 0; c < PANEL; c++) {
                const long j = p * PANEL + c;
                const float *krow = k + (b * L + j) * ld + h * D, *vrow = v + (b * L + j) * ld + h * D;
                float *vout = values + bh * per_head + j * D;
                if (j < L) {
                    for (long d = 0; d < D; d++) panel[d * PANEL + c] = krow[d];
                    memcpy(vout, vrow, D * sizeof(float));
                } else {
                    for (long d = 0; d < D; d++) panel[d * PANEL + c] = 0.0f;
                    memset(vout, 0, D * sizeof(float));
                }
            }
        }
        float *s = aligned_alloc(32, BLOCK * lds * sizeof(float) + BLOCK * D * sizeof(float));
        float *o = s == NULL ? NULL : s + BLOCK * lds;  /* the block's outputs before normalisation */
        if (s == NULL) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (long item = 0; item < B * H * n_blocks; item++) {
            if (s == NULL) continue;
            const long bh = item / n_blocks, b = bh / H, h = bh % H, i0 = (item % n_blocks) * BLOCK;
            const long rows = L - i0 < BLOCK ? L - i0 : BLOCK, tiles = (rows + TILE - 1) / TILE;
            const long lo = i0 - w < 0 ? 0 : i0 - w, hi = i0 + rows + w < L ? i0 + rows + w : L;
            const long p0 = lo / PANEL, p1 = (hi + PANEL - 1) / PANEL, j0 = p0 * PANEL;
            const float *qr[TILES][TILE];
            long ta[TILES], te[TILES], tp0[TILES], tp1[TILES];  /* a tile's keys [ta, te), panels [tp0, tp1) */
            for (long m = 0; m < tiles; m++) {
                const long first = i0 + m * TILE, last = first + TILE < i0 + rows ? first + TILE : i0 + rows;
                for (int r = 0; r < TILE; r++)
                    qr[m][r] = first + r < last ? q + (b * L + first + r) * ld + h * D : zero_row;
                ta[m] = first - w < 0 ? 0 : first - w;
                te[m] = last + w < L ? last + w : L;
                tp0[m] = ta[m] / PANEL;
                tp1[m] = (te[m] + PANEL - 1) / PANEL;
            }
            /* scores: each panel of keys, once in L1, for every tile whose windows reach it */
            const float *head_panels = panels + bh * per_head;
            for (long p = p0; p < p1; p++)
                for (long m = 0; m < tiles; m++)
                    if (tp0[m] <= p && p < tp1[m])
                        tile_scores(qr[m], head_panels + p * PANEL * D, D, s + m * TILE * lds + (p - p0) * PANEL, lds);
            /* the global tokens' scores, after the span */
            for (long r = 0; r < rows; r++) {
                const float *qrow = q + (b * L + i0 + r) * ld + h * D;
                for (long g = 0; g < G; g++) {
                    float dot = -INFINITY;
                    if (g_ok[b * G + g]) {
                        const float *kgrow = kg + (b * G + g) * ld + h * D;
                        __m256 acc = _mm256_setzero_ps();
                        for (long d = 0; d < D; d += 8)
                            acc = _mm256_fmadd_ps(_mm256_loadu_ps(qrow + d), _mm256_loadu_ps(kgrow + d), acc);
                        dot = hsum(acc) * scale;
                    }
                    s[r * lds + span_cap + g] = dot;
                }
            }
            float inv_sum[BLOCK];
            for (long r = 0; r < tiles * TILE; r++) {
                const long m = r / TILE, i = i0 + r;
                float *sr = s + r * lds;
                const long pa = (tp0[m] - p0) * PANEL, pe = (tp1[m] - p0) * PANEL;
                if (r >= rows) {  /* past the end: no probabilities */
                    memset(sr + pa, 0, (pe - pa) * sizeof(float));
                    memset(sr + span_cap, 0, G * sizeof(float));
                    continue;
                }
                const long a = (i - w < 0 ? 0 : i - w) - j0, e = (i + w + 1 < L ? i + w + 1 : L) - j0;
                inv_sum[r] = row_softmax(sr, pa, pe, a, e, key_ok + b * L + j0, scale, sr + span_cap, G);
            }
            /* outputs: the values a chunk at a time (in L1), into every tile that uses them */
            memset(o, 0, tiles * TILE * D * sizeof(float));
            const float *head_values = values + bh * per_head + j0 * D;
            for (long c0 = lo - j0; c0 < hi - j0; c0 += CHUNK)
                for (long m = 0; m < tiles; m++) {
                    const long first = c0 > ta[m] - j0 ? c0 : ta[m] - j0;
                    const long last = c0 + CHUNK < te[m] - j0 ? c0 + CHUNK : te[m] - j0;
                    if (first >= last) continue;
                    const float *pm = s + m * TILE * lds;
                    for (long d0 = 0; d0 < D; d0 += 16) {
                        if (D - d0 >= 16) tile_values(16, pm, lds, first, last, head_values, D, d0, o + m * TILE * D);
                        else tile_values(8, pm, lds, first, last, head_values, D, d0, o + m * TILE * D);
                    }
                }
            for (long r = 0; r < rows; r++) {
                float *orow = o + r * D, *dst = out + (b * L + i0 + r) * ld + h * D;
                const float *pg = s + r * lds + span_cap;
                for (long g = 0; g < G; g++) {
                    if (pg[g] == 0.0f) continue;
                    const float *vgrow = vg + (b * G + g) * ld + h * D;
                    const __m256 pr = _mm256_set1_ps(pg[g]);
                    for (long d = 0; d < D; d += 8)
                        _mm256_storeu_ps(orow + d, _mm256_fmadd_ps(pr, _mm256_loadu_ps(vgrow + d), _mm256_loadu_ps(orow + d)));
                }
                const __m256 inv = _mm256_set1_ps(inv_sum[r]);
                for (long d = 0; d < D; d += 8) _mm256_storeu_ps(dst + d, _mm256_mul_ps(_mm256_loadu_ps(orow + d), inv));
            }
        }
        free(s);
    }
    return failed ? -2 : 0;
}
