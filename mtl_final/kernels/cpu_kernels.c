/* CPU kernels of mtl_final (built and loaded by mtl_final/kernels/__init__.py). Most of this file is
   the fused elementwise tail of one dense layer; the embedding backward is at the end.

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
