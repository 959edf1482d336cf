/* CPU kernels of mtl_final (built and loaded by mtl_final/kernels/__init__.py). Most of this file is
   the fused elementwise tail of one dense layer; the embedding backward and the self-attention over
   fields follow it.

   One dense layer's elementwise tail:

       h = step(z + b)          step = identity (MLP, FINAL N=1) or [z1, z1 * z2] (FINAL N=2 "concat")
       y = BatchNorm(h)         batch statistics in training, running statistics in evaluation
       o = ReLU(y) * m          m = 0 or 1/(1-p): inverted dropout, training only

   z [B, D] is the bias-free matmul output, row-major; b, gamma, beta are [D]. For step 2, D = 2S
   and column j < S is h1 = z1, column S + j is h2 = z1 * z2 (a = z[j] + b[j], c = z[S+j] + b[S+j]).

   Autograd would make ~10 passes over [B, D] tensors forward and ~12 backward (bias broadcast,
   concat copy and product, BatchNorm statistics and transform, ReLU, dropout mask and product,
   and their backwards); these kernels make 2 forward and 2 backward. Statistics are accumulated
   in double. Dropout keeps element e (= row * D + column) of a call with key k when the top 24 bits
   of SplitMix64's finaliser of k + (e + 1) * golden are >= threshold (a counter-based hash: the mask
   depends on the key and the element, not on the thread count). Backward needs only z, b and a byte per element, 1 where
   o > 0 (ReLU passed and dropout kept): a quarter of the traffic of reading o.

   Threads: OpenMP, linked against the libgomp that PyTorch loaded, so both share one pool. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* SplitMix64's output function (Steele, Lea and Flood 2014): a bijection of 64 bits. */
static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

/* ReLU then dropout of element e: max(v, 0) * scale if kept, else 0 (threshold 0 keeps all, scale 1). */
static inline float relu_keep(float v, uint64_t e, uint64_t key, uint32_t threshold, float scale) {
    uint32_t u = (uint32_t)(splitmix64(key + (e + 1) * 0x9E3779B97F4A7C15ULL) >> 40);
    float m = u >= threshold ? scale : 0.0f;
    return (v > 0.0f ? v : 0.0f) * m;
}

static inline void rows_of(int64_t rows, int64_t *lo, int64_t *hi) {
    int n = omp_get_num_threads(), t = omp_get_thread_num();
    int64_t chunk = (rows + n - 1) / n;
    *lo = t * chunk < rows ? t * chunk : rows;
    *hi = *lo + chunk < rows ? *lo + chunk : rows;
}

/* Per-thread column sums: nt zeroed blocks of `width` doubles, then one more for their total. */
static double *alloc_sums(int nt, int64_t width) { return calloc((size_t)(nt + 1) * width, sizeof(double)); }

/* The calling thread's block (inside a parallel region). */
static double *my_sums(double *acc, int64_t width) { return acc + (size_t)omp_get_thread_num() * width; }

/* Sum of the nt blocks, written to (and returned as) the last block. */
static const double *total_sums(double *acc, int nt, int64_t width) {
    double *out = acc + (size_t)nt * width;
    for (int64_t j = 0; j < width; j++) out[j] = 0.0;
    for (int t = 0; t < nt; t++)
        for (int64_t j = 0; j < width; j++) out[j] += acc[(size_t)t * width + j];
    return out;
}

/* Training forward. Writes o, pass (1 where o > 0, else 0), and per column the batch mean, biased
   variance and 1/sqrt(var + eps).
   Returns 0, or 1 when memory for the per-thread sums could not be had. */
int dense_tail_forward_train(const float *restrict z, const float *restrict b, const float *restrict gamma,
                             const float *restrict beta, int64_t B, int64_t D, int steps, double eps,
                             uint32_t threshold, float scale, uint64_t key, float *restrict o, uint8_t *restrict pass,
                             float *restrict mean_out, float *restrict var_out, float *restrict invstd_out,
                             int nt) {
    const int64_t S = steps == 2 ? D / 2 : D;
    double *acc = alloc_sums(nt, 2 * D);  /* [sum | sum of squares] per thread */
    float *coef = malloc(2 * D * sizeof(float));
    if (!acc || !coef) { free(acc); free(coef); return 1; }
    #pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
        rows_of(B, &lo, &hi);
        double *s1 = my_sums(acc, 2 * D), *s2 = s1 + D;
        for (int64_t r = lo; r < hi; r++) {
            const float *zr = z + r * D;
            if (steps == 2) {
                #pragma omp simd
                for (int64_t j = 0; j < S; j++) {
                    float a = zr[j] + b[j], c = zr[S + j] + b[S + j], h2 = a * c;
                    s1[j] += a; s2[j] += (double)a * a;
                    s1[S + j] += h2; s2[S + j] += (double)h2 * h2;
                }
            } else {
                #pragma omp simd
                for (int64_t j = 0; j < D; j++) {
                    float a = zr[j] + b[j];
                    s1[j] += a; s2[j] += (double)a * a;
                }
            }
        }
    }
    const double *tot = total_sums(acc, nt, 2 * D);
    float *sc = coef, *sh = coef + D;
    for (int64_t j = 0; j < D; j++) {
        double m = tot[j] / B, v = tot[D + j] / B - m * m;
        if (v < 0) v = 0;
        double inv = 1.0 / sqrt(v + eps);
        mean_out[j] = (float)m; var_out[j] = (float)v; invstd_out[j] = (float)inv;
        sc[j] = (float)(gamma[j] * inv);
        sh[j] = (float)(beta[j] - m * gamma[j] * inv);
    }
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < B; r++) {
        const float *zr = z + r * D;
        float *orow = o + r * D;
        uint8_t *prow = pass + r * D;
        const uint64_t e0 = (uint64_t)(r * D), e1 = e0 + (uint64_t)S;
        if (steps == 2) {
            #pragma omp simd
            for (int64_t j = 0; j < S; j++) {
                float a = zr[j] + b[j], c = zr[S + j] + b[S + j];
                float y1 = a * sc[j] + sh[j], y2 = a * c * sc[S + j] + sh[S + j];
                float o1 = relu_keep(y1, e0 + (uint64_t)j, key, threshold, scale);
                float o2 = relu_keep(y2, e1 + (uint64_t)j, key, threshold, scale);
                orow[j] = o1; orow[S + j] = o2;
                prow[j] = o1 > 0.0f; prow[S + j] = o2 > 0.0f;
            }
        } else {
            #pragma omp simd
            for (int64_t j = 0; j < D; j++) {
                float y = (zr[j] + b[j]) * sc[j] + sh[j];
                float v = relu_keep(y, e0 + (uint64_t)j, key, threshold, scale);
                orow[j] = v;
                prow[j] = v > 0.0f;
            }
        }
    }
    free(acc); free(coef);
    return 0;
}

/* Evaluation forward with per-column scale and shift (running statistics folded in): one pass.
   o may be z itself (each element is read before it is written, by the same iteration). */
void dense_tail_forward_eval(const float *z, const float *b, const float *sc, const float *sh, int64_t B,
                             int64_t D, int steps, float *o, int nt) {
    const int64_t S = steps == 2 ? D / 2 : D;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t r = 0; r < B; r++) {
        const float *zr = z + r * D;
        float *orow = o + r * D;
        if (steps == 2) {
            #pragma omp simd
            for (int64_t j = 0; j < S; j++) {
                float a = zr[j] + b[j], c = zr[S + j] + b[S + j];
                float y1 = a * sc[j] + sh[j], y2 = a * c * sc[S + j] + sh[S + j];
                orow[j] = y1 > 0.0f ? y1 : 0.0f;
                orow[S + j] = y2 > 0.0f ? y2 : 0.0f;
            }
        } else {
            #pragma omp simd
            for (int64_t j = 0; j < D; j++) {
                float y = (zr[j] + b[j]) * sc[j] + sh[j];
                orow[j] = y > 0.0f ? y : 0.0f;
            }
        }
    }
}

/* Backward of the training forward. g = dL/do [B, D]. Writes dz [B, D] (= dL/d(z + b)), and per
   column dgamma, dbeta, dbias. Returns 0, or 1 when memory could not be had. */
int dense_tail_backward(const float *restrict g, const uint8_t *restrict pass, const float *restrict z,
                        const float *restrict b, const float *restrict gamma, const float *restrict mean,
                        const float *restrict invstd, int64_t B, int64_t D, int steps, float scale,
                        float *restrict dz, float *restrict dgamma, float *restrict dbeta,
                        float *restrict dbias, int nt) {
    const int64_t S = steps == 2 ? D / 2 : D;
    double *acc = alloc_sums(nt, 2 * D), *dsum = alloc_sums(nt, D);
    float *coef = malloc(3 * D * sizeof(float));
    if (!acc || !dsum || !coef) { free(acc); free(dsum); free(coef); return 1; }
    /* pass A: sum(dy) and sum(dy * xhat) per column, dy = g * scale where pass, else 0 */
    #pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
        rows_of(B, &lo, &hi);
        double *sa = my_sums(acc, 2 * D), *sb = sa + D;
        for (int64_t r = lo; r < hi; r++) {
            const float *zr = z + r * D, *gr = g + r * D;
            const uint8_t *prow = pass + r * D;
            if (steps == 2) {
                #pragma omp simd
                for (int64_t j = 0; j < S; j++) {
                    float a = zr[j] + b[j], c = zr[S + j] + b[S + j];
                    float d1 = gr[j] * scale * (float)prow[j];
                    float d2 = gr[S + j] * scale * (float)prow[S + j];
                    sa[j] += d1; sb[j] += d1 * ((a - mean[j]) * invstd[j]);
                    sa[S + j] += d2; sb[S + j] += d2 * ((a * c - mean[S + j]) * invstd[S + j]);
                }
            } else {
                #pragma omp simd
                for (int64_t j = 0; j < D; j++) {
                    float d = gr[j] * scale * (float)prow[j];
                    sa[j] += d; sb[j] += d * ((zr[j] + b[j] - mean[j]) * invstd[j]);
                }
            }
        }
    }
    const double *tot = total_sums(acc, nt, 2 * D);
    float *k = coef, *ma = coef + D, *mb = coef + 2 * D;
    for (int64_t j = 0; j < D; j++) {
        dbeta[j] = (float)tot[j];
        dgamma[j] = (float)tot[D + j];
        k[j] = gamma[j] * invstd[j];
        ma[j] = (float)(tot[j] / B);
        mb[j] = (float)(tot[D + j] / B);
    }
    /* pass B: dh = k * (dy - mean(dy) - xhat * mean(dy * xhat)), then through the step; dbias = sum(dz) */
    #pragma omp parallel num_threads(nt)
    {
        int64_t lo, hi;
        rows_of(B, &lo, &hi);
        double *sd = my_sums(dsum, D);
        for (int64_t r = lo; r < hi; r++) {
            const float *zr = z + r * D, *gr = g + r * D;
            const uint8_t *prow = pass + r * D;
            float *dzr = dz + r * D;
            if (steps == 2) {
                #pragma omp simd
                for (int64_t j = 0; j < S; j++) {
                    const int64_t u = S + j;
                    float a = zr[j] + b[j], c = zr[u] + b[u];
                    float d1 = gr[j] * scale * (float)prow[j];
                    float d2 = gr[u] * scale * (float)prow[u];
                    float h1 = k[j] * (d1 - ma[j] - (a - mean[j]) * invstd[j] * mb[j]);
                    float h2 = k[u] * (d2 - ma[u] - (a * c - mean[u]) * invstd[u] * mb[u]);
                    float q1 = h1 + h2 * c, q2 = h2 * a;
                    dzr[j] = q1; dzr[u] = q2;
                    sd[j] += q1; sd[u] += q2;
                }
            } else {
                #pragma omp simd
                for (int64_t j = 0; j < D; j++) {
                    float d = gr[j] * scale * (float)prow[j];
                    float h = k[j] * (d - ma[j] - (zr[j] + b[j] - mean[j]) * invstd[j] * mb[j]);
                    dzr[j] = h;
                    sd[j] += h;
                }
            }
        }
    }
    const double *bias_sum = total_sums(dsum, nt, D);
    for (int64_t j = 0; j < D; j++) dbias[j] = (float)bias_sum[j];
    free(acc); free(dsum); free(coef);
    return 0;
}

/* Embedding backward for one table shared by F fields: out[index[b, f]] += grad[b, f, :] for every
   b in order, the fields in parallel. Field f owns rows [lo[f], hi[f]), so no two threads touch one
   row, and each row sums its contributions in the order index_add_ does (bit-identical to it).
   out [rows, dim] must hold zeros. Returns -1, or the flat position b * F + f of the first index
   outside its field's rows (nothing is written for it). */
int64_t embedding_backward(const float *restrict grad, const int64_t *restrict index, int64_t B, int64_t F,
                           int64_t dim, const int64_t *restrict lo, const int64_t *restrict hi,
                           float *restrict out, int nt) {
    int64_t bad = -1;
    #pragma omp parallel for num_threads(nt) schedule(static)
    for (int64_t f = 0; f < F; f++) {
        for (int64_t b = 0; b < B; b++) {
            const int64_t row = index[b * F + f];
            if (row < lo[f] || row >= hi[f]) {
                #pragma omp critical
                if (bad < 0 || b * F + f < bad) bad = b * F + f;
                break;
            }
            const float *g = grad + (b * F + f) * dim;
            float *o = out + row * dim;
            for (int64_t d = 0; d < dim; d++) o[d] += g[d];
        }
    }
    return bad;
}

/* Multi-head self-attention over fields (AutoInt's interacting layer). For sample b and head h, with
   Q, K, V, R the [F, d] blocks of columns h*d .. h*d+d-1 of q, k, v, r [B, F, H*d] (row stride H*d):

       S = scale * Q K^T        [F, F]
       A = softmax of each row of S
       out = ReLU(A V + R)      R absent (NULL): out = ReLU(A V)

   att [B, H, F, F] receives A. Autograd's path copies q, k, v into head-major layout and runs batched
   matmuls of 8192 tiny [F, d] matrices, whose loops are too short to vectorise. Here the SIMD lanes
   are samples: a thread copies one head of LANES consecutive samples into [rows][cols][LANES]
   scratch, so every product above is a fixed-width vector operation across the LANES samples, and
   copies the results back. Lanes past the batch's end hold zeros and are not written back. Each
   sample's sums run in a fixed order, so results depend neither on the thread count nor on which
   samples share a chunk. */

#define LANES 16

/* rows x cols floats of each lane (lane l at src + l * lane_stride, row stride row_stride) into
   dst[(i * cols + c) * LANES + l]; lanes l >= n are zeroed. */
static void to_lanes(const float *restrict src, int64_t lane_stride, int64_t row_stride, int64_t rows,
                     int64_t cols, int64_t n, float *restrict dst) {
    if (n < LANES) {
        memset(dst, 0, (size_t)rows * cols * LANES * sizeof(float));
        for (int64_t l = 0; l < n; l++)
            for (int64_t i = 0; i < rows; i++)
                for (int64_t c = 0; c < cols; c++) dst[(i * cols + c) * LANES + l] = src[l * lane_stride + i * row_stride + c];
        return;
    }
    for (int64_t i = 0; i < rows; i++)
        for (int64_t c = 0; c < cols; c++) {
            float *t = dst + (i * cols + c) * LANES;
            const float *s = src + i * row_stride + c;
            for (int l = 0; l < LANES; l++) t[l] = s[l * lane_stride];
        }
}

/* The inverse of to_lanes for lanes l < n. */
static void from_lanes(const float *restrict src, int64_t rows, int64_t cols, int64_t n, float *restrict dst,
                       int64_t lane_stride, int64_t row_stride) {
    for (int64_t l = 0; l < n; l++) {
        float *t = dst + l * lane_stride;
        for (int64_t i = 0; i < rows; i++)
            for (int64_t c = 0; c < cols; c++) t[i * row_stride + c] = src[(i * cols + c) * LANES + l];
    }
}

/* Output columns per pass of the lane matmuls: independent accumulators hide the FMA latency. */
#define COLS 4

/* out[i][j] = sum over m < inner, in order, of a[i][m] * b[m][j] per lane, with a's element (i, m) at
   a[(i * a_row + m * a_col) * LANES] (a_row, a_col = inner, 1 for a, = 1, rows for its transpose) and
   b [inner][cols]; all [..][LANES]. */
static void lane_matmul(const float *restrict a, int64_t a_row, int64_t a_col, const float *restrict b,
                        int64_t rows, int64_t inner, int64_t cols, float *restrict out) {
    for (int64_t i = 0; i < rows; i++) {
        int64_t j = 0;
        for (; j + COLS <= cols; j += COLS) {
            float acc[COLS][LANES] = {{0.0f}};
            for (int64_t m = 0; m < inner; m++) {
                const float *am = a + (i * a_row + m * a_col) * LANES, *bm = b + (m * cols + j) * LANES;
                for (int t = 0; t < COLS; t++)
                    for (int l = 0; l < LANES; l++) acc[t][l] += am[l] * bm[t * LANES + l];
            }
            for (int t = 0; t < COLS; t++)
                for (int l = 0; l < LANES; l++) out[(i * cols + j + t) * LANES + l] = acc[t][l];
        }
        for (; j < cols; j++) {
            float acc[LANES] = {0.0f};
            for (int64_t m = 0; m < inner; m++) {
                const float *am = a + (i * a_row + m * a_col) * LANES, *bm = b + (m * cols + j) * LANES;
                for (int l = 0; l < LANES; l++) acc[l] += am[l] * bm[l];
            }
            for (int l = 0; l < LANES; l++) out[(i * cols + j) * LANES + l] = acc[l];
        }
    }
}

/* out[i][j] = scale * sum over m < inner, in order, of a[i][m] * b[j][m] per lane (a [rows][inner],
   b [cols][inner]). */
static void lane_matmul_bt(const float *restrict a, const float *restrict b, int64_t rows, int64_t inner,
                           int64_t cols, float scale, float *restrict out) {
    for (int64_t i = 0; i < rows; i++) {
        int64_t j = 0;
        for (; j + COLS <= cols; j += COLS) {
            float acc[COLS][LANES] = {{0.0f}};
            for (int64_t m = 0; m < inner; m++) {
                const float *am = a + (i * inner + m) * LANES;
                for (int t = 0; t < COLS; t++) {
                    const float *bm = b + ((j + t) * inner + m) * LANES;
                    for (int l = 0; l < LANES; l++) acc[t][l] += am[l] * bm[l];
                }
            }
            for (int t = 0; t < COLS; t++)
                for (int l = 0; l < LANES; l++) out[(i * cols + j + t) * LANES + l] = scale * acc[t][l];
        }
        for (; j < cols; j++) {
            float acc[LANES] = {0.0f};
            for (int64_t m = 0; m < inner; m++) {
                const float *am = a + (i * inner + m) * LANES, *bm = b + (j * inner + m) * LANES;
                for (int l = 0; l < LANES; l++) acc[l] += am[l] * bm[l];
            }
            for (int l = 0; l < LANES; l++) out[(i * cols + j) * LANES + l] = scale * acc[l];
        }
    }
}

/* exp(x) for x <= 0 (a softmax's shifted scores), within ~2 ulp of expf: x = n ln2 + r with
   n = round(x / ln2) (by adding 1.5 * 2^23, whose float's low mantissa bits then hold n), exp(r) by
   Cephes' degree-7 polynomial, 2^n built in the exponent bits. x < -87 gives 0 (expf gives a
   denormal or 0 there). No calls, branches or int conversions, so the compiler vectorises it. */
static void lane_exp(float *restrict x) {
    for (int l = 0; l < LANES; l++) {
        const float v = x[l] > -87.0f ? x[l] : -87.0f;
        union { float f; int32_t i; } t = { .f = v * 1.44269504088896341f + 12582912.0f };
        const float n = t.f - 12582912.0f;
        const float r = (v - n * 0.693359375f) + n * 2.12194440e-4f;
        float p = 1.9875691500e-4f;
        p = p * r + 1.3981999507e-3f;
        p = p * r + 8.3334519073e-3f;
        p = p * r + 4.1665795894e-2f;
        p = p * r + 1.6666665459e-1f;
        p = p * r + 5.0000001201e-1f;
        union { int32_t i; float f; } two_n = { .i = (t.i - 0x4B400000 + 127) * (1 << 23) };
        x[l] = x[l] < -87.0f ? 0.0f : (p * r * r + r + 1.0f) * two_n.f;
    }
}

/* Softmax over g of s[(f * F + g) * LANES + l] for every row f and lane l, in place. */
static void lane_softmax_rows(float *restrict s, int64_t F) {
    for (int64_t f = 0; f < F; f++) {
        float *row = s + f * F * LANES, top[LANES], sum[LANES] = {0.0f};
        for (int l = 0; l < LANES; l++) top[l] = row[l];
        for (int64_t g = 1; g < F; g++)
            for (int l = 0; l < LANES; l++) top[l] = row[g * LANES + l] > top[l] ? row[g * LANES + l] : top[l];
        for (int64_t g = 0; g < F; g++) {
            float *e = row + g * LANES;
            for (int l = 0; l < LANES; l++) e[l] -= top[l];
            lane_exp(e);
            for (int l = 0; l < LANES; l++) sum[l] += e[l];
        }
        for (int l = 0; l < LANES; l++) sum[l] = 1.0f / sum[l];
        for (int64_t g = 0; g < F; g++)
            for (int l = 0; l < LANES; l++) row[g * LANES + l] *= sum[l];
    }
}

/* Returns 0, or 1 when scratch memory could not be had. */
int field_attention_forward(const float *restrict q, const float *restrict k, const float *restrict v,
                            const float *restrict r, int64_t B, int64_t F, int64_t H, int64_t d, float scale,
                            float *restrict out, float *restrict att, int nt) {
    const int64_t HD = H * d, block = F * d * LANES, chunks = (B + LANES - 1) / LANES;
    const int64_t per_thread = 4 * block + F * F * LANES;
    float *scratch = malloc((size_t)nt * per_thread * sizeof(float));
    if (!scratch) return 1;
    #pragma omp parallel num_threads(nt)
    {
        float *Q = scratch + (size_t)omp_get_thread_num() * per_thread, *K = Q + block, *V = K + block;
        float *O = V + block, *A = O + block;
        #pragma omp for schedule(static)
        for (int64_t c = 0; c < chunks * H; c++) {
            const int64_t b0 = (c / H) * LANES, h = c % H, n = B - b0 < LANES ? B - b0 : LANES;
            const int64_t base = b0 * F * HD + h * d;
            to_lanes(q + base, F * HD, HD, F, d, n, Q);
            to_lanes(k + base, F * HD, HD, F, d, n, K);
            to_lanes(v + base, F * HD, HD, F, d, n, V);
            lane_matmul_bt(Q, K, F, d, F, scale, A);
            lane_softmax_rows(A, F);
            lane_matmul(A, F, 1, V, F, F, d, O);
            from_lanes(A, F, F, n, att + (b0 * H + h) * F * F, H * F * F, F);
            for (int64_t l = 0; l < n; l++)
                for (int64_t f = 0; f < F; f++) {
                    const int64_t at = base + l * F * HD + f * HD;
                    for (int64_t j = 0; j < d; j++) {
                        const float y = O[(f * d + j) * LANES + l] + (r ? r[at + j] : 0.0f);
                        out[at + j] = y > 0.0f ? y : 0.0f;
                    }
                }
        }
    }
    free(scratch);
    return 0;
}

/* Backward of field_attention_forward, given grad = dL/d(out). With G = grad masked by out > 0:
   dR = G, dV = A^T G, dA = G V^T, dS = A * (dA - rowsum(A * dA)), dQ = scale * dS K,
   dK = scale * dS^T Q. dr may be NULL (no residual). Returns 0, or 1 when scratch memory could not
   be had. */
int field_attention_backward(const float *restrict grad, const float *restrict out, const float *restrict att,
                             const float *restrict q, const float *restrict k, const float *restrict v,
                             int64_t B, int64_t F, int64_t H, int64_t d, float scale, float *restrict dq,
                             float *restrict dk, float *restrict dv, float *restrict dr, int nt) {
    const int64_t HD = H * d, block = F * d * LANES, square = F * F * LANES, chunks = (B + LANES - 1) / LANES;
    const int64_t per_thread = 5 * block + 3 * square;
    float *scratch = malloc((size_t)nt * per_thread * sizeof(float));
    if (!scratch) return 1;
    #pragma omp parallel num_threads(nt)
    {
        float *Q = scratch + (size_t)omp_get_thread_num() * per_thread, *K = Q + block, *V = K + block;
        float *G = V + block, *D = G + block, *A = D + block, *dA = A + square, *dS = dA + square;
        #pragma omp for schedule(static)
        for (int64_t c = 0; c < chunks * H; c++) {
            const int64_t b0 = (c / H) * LANES, h = c % H, n = B - b0 < LANES ? B - b0 : LANES;
            const int64_t base = b0 * F * HD + h * d;
            for (int64_t l = 0; l < LANES; l++)
                for (int64_t f = 0; f < F; f++) {
                    const int64_t at = base + l * F * HD + f * HD;
                    for (int64_t j = 0; j < d; j++) {
                        const float gm = l < n && out[at + j] > 0.0f ? grad[at + j] : 0.0f;
                        G[(f * d + j) * LANES + l] = gm;
                        if (dr && l < n) dr[at + j] = gm;
                    }
                }
            to_lanes(q + base, F * HD, HD, F, d, n, Q);
            to_lanes(k + base, F * HD, HD, F, d, n, K);
            to_lanes(v + base, F * HD, HD, F, d, n, V);
            to_lanes(att + (b0 * H + h) * F * F, H * F * F, F, F, F, n, A);
            lane_matmul(A, 1, F, G, F, F, d, D);  /* dV = A^T G */
            from_lanes(D, F, d, n, dv + base, F * HD, HD);
            lane_matmul_bt(G, V, F, d, F, 1.0f, dA);  /* dA = G V^T */
            for (int64_t f = 0; f < F; f++) {
                float s[LANES] = {0.0f};
                for (int64_t g = 0; g < F; g++)
                    for (int l = 0; l < LANES; l++) s[l] += A[(f * F + g) * LANES + l] * dA[(f * F + g) * LANES + l];
                for (int64_t g = 0; g < F; g++)
                    for (int l = 0; l < LANES; l++) {
                        const int64_t e = (f * F + g) * LANES + l;
                        dS[e] = scale * A[e] * (dA[e] - s[l]);
                    }
            }
            lane_matmul(dS, F, 1, K, F, F, d, D);  /* dQ = dS K */
            from_lanes(D, F, d, n, dq + base, F * HD, HD);
            lane_matmul(dS, 1, F, Q, F, F, d, D);  /* dK = dS^T Q */
            from_lanes(D, F, d, n, dk + base, F * HD, HD);
        }
    }
    free(scratch);
    return 0;
}
