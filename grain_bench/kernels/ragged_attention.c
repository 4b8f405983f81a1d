/* Self-attention over heads of unequal widths, one call per layer, for the compact model's CPU inference (fp32).
 *
 * Built at run time by grain_bench/ragged.py with the system's C compiler and loaded through ctypes; the `ragged`
 * runtime of grain_bench.runtimes uses it. PyTorch's fused attention needs one width for every head of a call, so the
 * eager compact model pads heads into buckets (PrunedBertAttention.set_layout); this kernel reads every head at its
 * own widths straight from the exact QKV GEMM and writes the contexts in W_O's column order: no padding, no bucket
 * calls, no transposes or concatenation.
 *
 * Layout: qkv is [batch, length, 2 * cq + cv] with contiguous channels: head h's query units at
 * qoff[h] .. qoff[h] + qdim[h], its key units cq further on, its value units at 2 * cq + voff[h] .. + vdim[h]. The
 * context is written to out, [batch, length, cv] contiguous. The additive mask (SDPA's form, [batch or 1, 1, 1 or
 * length, length]) is read through its strides (0 for a broadcast dimension); NULL for none. A head with qdim 0 attends
 * by softmax(mask) alone, as the compact model's uniform heads do.
 *
 * Per (sequence, head) the queries run along the vector lanes: S[j][i] = scale * q_i . k_j + mask[i][j] with a running
 * maximum per query, then exp and a sum per query, then O[c][i] = sum_j v_j[c] S[j][i] / Z[i]. No horizontal
 * reductions, one pass of exp over the length x length scores, and each head costs in proportion to its own widths.
 * Work is split over (sequence, head) pairs with OpenMP (PyTorch's own OpenMP runtime once torch is loaded).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define LANES 16

/* exp(x) for x <= 0 (scores minus their maximum): x = n ln2 + r with |r| <= ln2 / 2, Cephes' degree-7 polynomial for
 * e^r, 2^n from the exponent bits. Relative error about 2e-7. Written so that the compiler vectorises it: n is rounded
 * by adding and subtracting 1.5 * 2^23 (no call to roundf), and 2^n is assembled with memcpy (a bit cast). */
static inline float exp_nonpositive(float x) {
    x = x < -87.0f ? -87.0f : x;
    const float shifter = 12582912.0f; /* 1.5 * 2^23 */
    const float n = (x * 1.44269504088896341f + shifter) - shifter;
    const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

#define TILE 4 /* keys (scores) or value channels (context) per register tile, times LANES queries */
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* Scores of keys [j0, j0 + rows) for the queries of lanes [block, block + LANES), and their running maximum per query
 * in top (a local array of the caller, kept in a register). rows is a constant at each call (TILE or 1), so the
 * rows x LANES accumulators stay in vector registers and each load of Q^T serves every row. */
ALWAYS_INLINE void score_tile(const int rows, const float *x, int64_t row_stride, int64_t key_column, int64_t j0,
                              int64_t d, const float *qt, int64_t padded, int64_t block, const float *m,
                              int64_t mask_i, int64_t mask_j, int64_t length, float *scores, float *top) {
    float acc[TILE][LANES];
    for (int r = 0; r < rows; ++r) {
        /* a mask that is the same for every query (a padding mask) adds one number per key */
        const float shared = m && !mask_i ? m[(j0 + r) * mask_j] : 0.0f;
        for (int l = 0; l < LANES; ++l) acc[r][l] = shared;
    }
    for (int64_t c = 0; c < d; ++c) {
        const float *q = qt + c * padded + block;
        for (int r = 0; r < rows; ++r) {
            const float kc = x[(j0 + r) * row_stride + key_column + c];
#pragma omp simd
            for (int l = 0; l < LANES; ++l) acc[r][l] += kc * q[l];
        }
    }
    for (int r = 0; r < rows; ++r) {
        if (m && mask_i)
            for (int l = 0; l < LANES && block + l < length; ++l)
                acc[r][l] += m[(block + l) * mask_i + (j0 + r) * mask_j];
        float *row = scores + (j0 + r) * padded + block;
#pragma omp simd
        for (int l = 0; l < LANES; ++l) {
            row[l] = acc[r][l];
            top[l] = acc[r][l] > top[l] ? acc[r][l] : top[l];
        }
    }
}

/* Unnormalised context channels [c0, c0 + rows) for the queries of lanes [block, block + LANES). */
ALWAYS_INLINE void context_tile(const int rows, const float *x, int64_t row_stride, int64_t value_column, int64_t c0,
                                int64_t length, const float *scores, int64_t padded, int64_t block, float *context) {
    float acc[TILE][LANES];
    for (int r = 0; r < rows; ++r)
        for (int l = 0; l < LANES; ++l) acc[r][l] = 0.0f;
    for (int64_t j = 0; j < length; ++j) {
        const float *p = scores + j * padded + block;
        for (int r = 0; r < rows; ++r) {
            const float vc = x[j * row_stride + value_column + c0 + r];
#pragma omp simd
            for (int l = 0; l < LANES; ++l) acc[r][l] += vc * p[l];
        }
    }
    for (int r = 0; r < rows; ++r)
        for (int l = 0; l < LANES; ++l) context[(c0 + r) * padded + block + l] = acc[r][l];
}

/* Returns 0, or 1 when a thread could not allocate its scratch memory (its share of the output is then missing; the
 * caller raises). */
int grain_ragged_attention(const float *qkv, int64_t batch, int64_t length, int64_t batch_stride,
                           int64_t row_stride, const float *mask, int64_t mask_b, int64_t mask_i, int64_t mask_j,
                           int64_t heads, const int64_t *qoff, const int64_t *qdim, const int64_t *voff,
                           const int64_t *vdim, int64_t cq, int64_t cv, float scale, float *out, int threads) {
    const int64_t padded = (length + LANES - 1) / LANES * LANES;
    int64_t widest = 1;
    for (int64_t h = 0; h < heads; ++h) {
        widest = qdim[h] > widest ? qdim[h] : widest;
        widest = vdim[h] > widest ? vdim[h] : widest;
    }
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        /* per thread: Q^T or the context ([widest][padded]), the scores ([length][padded]), maxima and sums */
        float *buffer = malloc(sizeof(float) * (size_t)padded * (size_t)(widest + length + 2));
        if (!buffer) failed = 1;
#pragma omp for schedule(static)
        for (int64_t item = 0; item < batch * heads; ++item) {
            if (!buffer) continue;
            float *qt = buffer, *context = buffer, *scores = buffer + widest * padded;
            float *maxima = scores + length * padded, *sums = maxima + padded;
            const int64_t b = item / heads, h = item % heads, d = qdim[h], e = vdim[h];
            const float *x = qkv + b * batch_stride;
            const float *m = mask ? mask + b * mask_b : NULL;
            /* Q^T, scaled, queries along the lanes (padding lanes 0) */
            memset(qt, 0, sizeof(float) * (size_t)(d * padded));
            for (int64_t i = 0; i < length; ++i)
                for (int64_t c = 0; c < d; ++c) qt[c * padded + i] = x[i * row_stride + qoff[h] + c] * scale;
            for (int64_t block = 0; block < padded; block += LANES) {
                float top[LANES];
                for (int l = 0; l < LANES; ++l) top[l] = -INFINITY, sums[block + l] = 0.0f;
                int64_t j = 0;
                for (; j + TILE <= length; j += TILE)
                    score_tile(TILE, x, row_stride, cq + qoff[h], j, d, qt, padded, block, m, mask_i, mask_j, length,
                               scores, top);
                for (; j < length; ++j)
                    score_tile(1, x, row_stride, cq + qoff[h], j, d, qt, padded, block, m, mask_i, mask_j, length,
                               scores, top);
                for (int l = 0; l < LANES; ++l) maxima[block + l] = top[l];
            }
            for (int64_t j = 0; j < length; ++j) {
                float *row = scores + j * padded;
#pragma omp simd
                for (int64_t i = 0; i < padded; ++i) {
                    row[i] = exp_nonpositive(row[i] - maxima[i]);
                    sums[i] += row[i];
                }
            }
            /* Q^T is no longer needed: its space takes the context */
            for (int64_t block = 0; block < padded; block += LANES) {
                int64_t c = 0;
                for (; c + TILE <= e; c += TILE)
                    context_tile(TILE, x, row_stride, 2 * cq + voff[h], c, length, scores, padded, block, context);
                for (; c < e; ++c)
                    context_tile(1, x, row_stride, 2 * cq + voff[h], c, length, scores, padded, block, context);
            }
            for (int64_t i = 0; i < length; ++i) {
                float *o = out + (b * length + i) * cv + voff[h];
                const float inverse = 1.0f / sums[i];
                for (int64_t c = 0; c < e; ++c) o[c] = context[c * padded + i] * inverse;
            }
        }
        free(buffer);
    }
    return failed;
}
