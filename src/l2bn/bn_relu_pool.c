/* Batch normalisation with the batch's statistics, ReLU and 2x2 max-pooling as one pass over a
   layer's activations, forward and backward (fused.py builds this file and calls it).

   Activations are float32 in channels-last order: x[p * C + c], p = (n * H + h) * W + w, H and W
   even. Every loop runs over the channels innermost, one independent lane per channel, so the
   compiler vectorises it without reordering any sum: the numbers do not depend on the vector
   width. Sums are accumulated in double, pixel by pixel. Built with -ffp-contract=off, so no
   multiply and add is fused into one rounding. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#define NO_GRAD 4 /* in idx: the window's maximum is <= 0, so the ReLU stops its gradient */

/* Each channel's mean and biased variance over the P pixels (two passes: no cancellation). The
   sums are a local array of up to LANES channels (a wider layer is summed LANES channels at a
   time); inlined with C a constant, they stay in registers, where the sums of a narrow layer went
   to memory and back at every pixel (at one model's 8 channels of 32x32, 0.35 against 0.16 ms for
   64 images). Each channel's sum takes the same additions in the same order either way. */
#define LANES 256
static inline __attribute__((always_inline)) void stats_of(const float *restrict x, int64_t P,
                                                           int64_t C, double *restrict mean,
                                                           double *restrict var) {
    for (int64_t c0 = 0; c0 < C; c0 += LANES) {
        int64_t n = C - c0 < LANES ? C - c0 : LANES;
        double m[LANES] = {0}, v[LANES] = {0};
        for (int64_t p = 0; p < P; p++)
            for (int64_t c = 0; c < n; c++) m[c] += x[p * C + c0 + c];
        for (int64_t c = 0; c < n; c++) m[c] /= (double)P;
        for (int64_t p = 0; p < P; p++)
            for (int64_t c = 0; c < n; c++) {
                double d = x[p * C + c0 + c] - m[c];
                v[c] += d * d;
            }
        for (int64_t c = 0; c < n; c++) {
            mean[c0 + c] = m[c];
            var[c0 + c] = v[c] / (double)P;
        }
    }
}

/* CALL(width) with the width a constant for the narrow layers of one model (8 to 64 channels),
   so that the inlined loops are compiled for it, and with C itself otherwise. */
#define WITH_CONSTANT_WIDTH(C, CALL)                                                              \
    switch (C) {                                                                                  \
    case 8: CALL(8); break;                                                                       \
    case 16: CALL(16); break;                                                                     \
    case 32: CALL(32); break;                                                                     \
    case 64: CALL(64); break;                                                                     \
    default: CALL(C);                                                                             \
    }

static void channel_stats(const float *x, int64_t P, int64_t C, double *mean, double *var) {
#define STATS(width) stats_of(x, P, width, mean, var)
    WITH_CONSTANT_WIDTH(C, STATS)
#undef STATS
}

/* One row of 2x2 windows (rows r0 and r1 of the input, Wo windows), every channel: y = x a + b,
   the ReLU, each window's maximum and where it is (0-3, or NO_GRAD). A NaN stays NaN through the
   ReLU and wins the window, and a tie goes to the first of the window, as in PyTorch's relu and
   max_pool2d. (This function and the two below are kept apart, noinline, so each loop is
   vectorised on its own restrict pointers; each takes a whole row, so that a call is not paid per
   window when the channels are few.) */
__attribute__((noinline)) static void pool_row(
    const float *restrict r0, const float *restrict r1, const float *restrict a,
    const float *restrict b, float *restrict out, int32_t *restrict idx, int64_t Wo, int64_t C) {
    for (int64_t j = 0; j < Wo; j++) {
        const float *x0 = r0 + 2 * j * C, *x1 = x0 + C, *x2 = r1 + 2 * j * C, *x3 = x2 + C;
        float *o = out + j * C;
        int32_t *ix = idx + j * C;
        for (int64_t c = 0; c < C; c++) {
            float y0 = x0[c] * a[c] + b[c], y1 = x1[c] * a[c] + b[c];
            float y2 = x2[c] * a[c] + b[c], y3 = x3[c] * a[c] + b[c];
            y0 = y0 < 0 ? 0 : y0; y1 = y1 < 0 ? 0 : y1; y2 = y2 < 0 ? 0 : y2; y3 = y3 < 0 ? 0 : y3;
            float m1 = (y1 > y0 || y1 != y1) ? y1 : y0;
            int32_t k = (y1 > y0 || y1 != y1) ? 1 : 0;
            float m2 = (y2 > m1 || y2 != y2) ? y2 : m1;
            k = (y2 > m1 || y2 != y2) ? 2 : k;
            float m = (y3 > m2 || y3 != y3) ? y3 : m2;
            k = (y3 > m2 || y3 != y3) ? 3 : k;
            o[c] = m;
            ix[c] = m <= 0 ? NO_GRAD : k;
        }
    }
}

/* Every window of x (N, H, W, C) through pool_row into out and idx (N, H/2, W/2, C). */
static void pool_rows(const float *x, int64_t N, int64_t H, int64_t W, int64_t C, const float *a,
                      const float *b, float *out, int32_t *idx) {
    int64_t Ho = H / 2, Wo = W / 2;
    for (int64_t r = 0; r < N * Ho; r++) {  /* r = n Ho + i: input rows 2r and 2r + 1 */
        const float *r0 = x + 2 * r * W * C;
        pool_row(r0, r0 + W * C, a, b, out + r * Wo * C, idx + r * Wo * C, Wo, C);
    }
}

/* Each channel's y = x a + b for the mean and variance given: a = gamma / sqrt(var + eps),
   b = beta - mean a, computed in double and rounded once to float. */
static void affine_terms(const double *mean, const double *var, const float *gamma,
                         const float *beta, double eps, int64_t C, float *a, float *b) {
    for (int64_t c = 0; c < C; c++) {
        double invstd = 1.0 / sqrt(var[c] + eps);
        a[c] = (float)(gamma[c] * invstd);
        b[c] = (float)(beta[c] - mean[c] * gamma[c] * invstd);
    }
}

/* out, idx: (N, H/2, W/2, C); mean_out, var_out: the batch's mean and biased variance (C). */
void bn_relu_pool_forward(const float *x, int64_t N, int64_t H, int64_t W, int64_t C,
                          const float *gamma, const float *beta, double eps, float *out,
                          int32_t *idx, float *mean_out, float *var_out) {
    double *mean = malloc(C * sizeof(double)), *var = malloc(C * sizeof(double));
    float *a = malloc(C * sizeof(float)), *b = malloc(C * sizeof(float));
    channel_stats(x, N * H * W, C, mean, var);
    affine_terms(mean, var, gamma, beta, eps, C, a, b);
    for (int64_t c = 0; c < C; c++) {
        mean_out[c] = (float)mean[c];
        var_out[c] = (float)var[c];
    }
    pool_rows(x, N, H, W, C, a, b, out, idx);
    free(mean); free(var); free(a); free(b);
}

/* Evaluation: the same with the running mean and variance in place of the batch's (idx is only
   scratch). */
void bn_relu_pool_eval(const float *x, int64_t N, int64_t H, int64_t W, int64_t C,
                       const float *gamma, const float *beta, const float *running_mean,
                       const float *running_var, double eps, float *out, int32_t *idx) {
    double *mean = malloc(C * sizeof(double)), *var = malloc(C * sizeof(double));
    float *a = malloc(C * sizeof(float)), *b = malloc(C * sizeof(float));
    for (int64_t c = 0; c < C; c++) {
        mean[c] = running_mean[c];
        var[c] = running_var[c];
    }
    affine_terms(mean, var, gamma, beta, eps, C, a, b);
    pool_rows(x, N, H, W, C, a, b, out, idx);
    free(mean); free(var); free(a); free(b);
}

/* One row of windows' share of the sums of dy and of dy * xhat, dy being the pooled gradient at
   each window's maximum (zero where the ReLU stopped it). */
__attribute__((noinline, optimize("no-trapping-math"))) static void row_sums(
    const float *restrict r0, const float *restrict r1, const float *restrict grad,
    const int32_t *restrict idx, const float *restrict mean, const float *restrict invstd,
    double *restrict sdy, double *restrict sdyx, int64_t Wo, int64_t C) {
    for (int64_t j = 0; j < Wo; j++) {
        const float *x0 = r0 + 2 * j * C, *x1 = x0 + C, *x2 = r1 + 2 * j * C, *x3 = x2 + C;
        const float *gj = grad + j * C;
        const int32_t *ij = idx + j * C;
        for (int64_t c = 0; c < C; c++) {
            int32_t k = ij[c];
            float g = gj[c], v0 = x0[c], v1 = x1[c], v2 = x2[c], v3 = x3[c];
            g = k == NO_GRAD ? 0.0f : g;
            float xv = k == 0 ? v0 : k == 1 ? v1 : k == 2 ? v2 : v3;
            sdy[c] += g;
            sdyx[c] += (double)(g * ((xv - mean[c]) * invstd[c]));
        }
    }
}

/* One input row: its pixels are positions q and q + 1 (q = 0 on a window's top row, 2 on its
   bottom row) of the windows; dx = k1 (dy - k2 - xhat k3). Inlined with C a constant where the
   layer is narrow (row_grad): with C known only at run time, gcc ran one model's 8 channels as
   scalar code that branched on every window's winner (64 images of 32x32: 2.0 ms, against
   0.23 ms now and 0.11 ms for 16 channels of 16x16). The same operations on each element either
   way, so the same numbers bit for bit. (The sums above, inlined the same way, were 3-5x slower:
   gcc unrolled them into scalar code.) */
static inline __attribute__((always_inline)) void row_grad_of(
    const float *restrict x, const float *restrict grad, const int32_t *restrict idx, int32_t q,
    const float *restrict mean, const float *restrict invstd, const float *restrict k1,
    const float *restrict k2, const float *restrict k3, float *restrict dx, int64_t Wo, int64_t C) {
    for (int64_t j = 0; j < Wo; j++) {
        const float *xl = x + 2 * j * C, *xr = xl + C, *gj = grad + j * C;
        const int32_t *ij = idx + j * C;
        float *dl = dx + 2 * j * C, *dr = dl + C;
        for (int64_t c = 0; c < C; c++) {
            float g = gj[c];
            float gl = ij[c] == q ? g : 0.0f, gr = ij[c] == q + 1 ? g : 0.0f;
            float hl = (xl[c] - mean[c]) * invstd[c], hr = (xr[c] - mean[c]) * invstd[c];
            dl[c] = k1[c] * (gl - k2[c] - hl * k3[c]);
            dr[c] = k1[c] * (gr - k2[c] - hr * k3[c]);
        }
    }
}

__attribute__((noinline, optimize("no-trapping-math"))) static void row_grad(
    const float *restrict x, const float *restrict grad, const int32_t *restrict idx, int32_t q,
    const float *restrict mean, const float *restrict invstd, const float *restrict k1,
    const float *restrict k2, const float *restrict k3, float *restrict dx, int64_t Wo, int64_t C) {
#define ROW_GRAD(width) row_grad_of(x, grad, idx, q, mean, invstd, k1, k2, k3, dx, Wo, width)
    WITH_CONSTANT_WIDTH(C, ROW_GRAD)
#undef ROW_GRAD
}

/* The gradients of the forward pass's output given grad (N, H/2, W/2, C): dx (N, H, W, C) and
   dgamma, dbeta (C), from the batch's mean and biased variance the forward pass returned. With
   xhat = (x - mean) / sqrt(var + eps) and n = N H W pixels:
   dx = gamma / sqrt(var + eps) * (dy - sum(dy) / n - xhat * sum(dy xhat) / n). */
void bn_relu_pool_backward(const float *x, const float *grad, const int32_t *idx, int64_t N,
                           int64_t H, int64_t W, int64_t C, const float *gamma, const float *mean,
                           const float *var, double eps, float *dx, float *dgamma, float *dbeta) {
    double *sdy = calloc(C, sizeof(double)), *sdyx = calloc(C, sizeof(double));
    float *invstd = malloc(C * sizeof(float)), *k1 = malloc(C * sizeof(float));
    float *k2 = malloc(C * sizeof(float)), *k3 = malloc(C * sizeof(float));
    for (int64_t c = 0; c < C; c++) invstd[c] = (float)(1.0 / sqrt((double)var[c] + eps));
    int64_t Ho = H / 2, Wo = W / 2, P = N * H * W, row = W * C;
    for (int64_t r = 0; r < N * Ho; r++)  /* r = n Ho + i: input rows 2r and 2r + 1 */
        row_sums(x + 2 * r * row, x + (2 * r + 1) * row, grad + r * Wo * C, idx + r * Wo * C, mean,
                 invstd, sdy, sdyx, Wo, C);
    for (int64_t c = 0; c < C; c++) {
        dgamma[c] = (float)sdyx[c];
        dbeta[c] = (float)sdy[c];
        k1[c] = gamma[c] * invstd[c];
        k2[c] = (float)(sdy[c] / P);
        k3[c] = (float)(sdyx[c] / P);
    }
    for (int64_t r = 0; r < N * H; r++)  /* input row r is row r % 2 of its windows */
        row_grad(x + r * row, grad + r / 2 * Wo * C, idx + r / 2 * Wo * C, 2 * (int32_t)(r % 2), mean,
                 invstd, k1, k2, k3, dx + r * row, Wo, C);
    free(sdy); free(sdyx); free(invstd); free(k1); free(k2); free(k3);
}
