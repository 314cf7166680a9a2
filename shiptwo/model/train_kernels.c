/* The CPU training step's kernels: causal grouped-query attention over whole sequences (forward
 * and backward), the MLP fused by blocks of rows (forward and backward), the token embedding, and
 * the LM head's softmax cross-entropy with its gradient.
 *
 * Built by shiptwo/model/kernels.py like the decode step, bound in train_kernels.py. Why C: at a
 * small head_dim (32 at the default profile) torch's CPU flash attention spends most of its time
 * outside arithmetic; here one sequence's key/value head is one task whose blocks of scores stay
 * in L1/L2, the causal half above the diagonal is skipped, and every product runs through one
 * register-blocked kernel. The cross-entropy turns a cache-sized block of logits into its
 * gradient in place, so the (tokens, vocab) logits never travel through memory whole.
 *
 * Layouts are token-major, as the projections produce them (no transposes):
 *   q, o, dq: (B, T, H, hd)   k, v, dk, dv: (B, T, KV, hd)   lse: (B, H, T), natural log.
 *   cs, sn: (T, hd) rotary cos and signed sin of positions 0..T-1: q and k come unrotated and the
 *   kernels rotate them on the way into their blocks (so the rotated copies never reach memory),
 *   and the backward rotates dq and dk back.
 * The forward saves each row's log-sum-exp; the backward recomputes the probabilities from it
 * (flash attention's recomputation) instead of storing (T, T) per head.
 *
 * Determinism: a task is one sequence's key/value head with the query heads that read it; it
 * alone writes their rows of o/dq and its dk/dv, each element accumulated in one fixed order,
 * so results do not depend on the thread count.
 */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef float v16 __attribute__((vector_size(64)));

#define R 8 /* query rows per block: 8 rows x 32 columns = 16 vector accumulators */
#define QB 256 /* the backward's most query rows per block (P and dS of a block: 2 x QB x T floats):
                 * dV and dK accumulate over all of them in registers, from the diagonal down */

#define LOG2E 1.44269504088896341f
#define LN2 0.693147180559945309f

static inline v16 ld(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void st(float *p, v16 v) { memcpy(p, &v, sizeof v); }

typedef int32_t vi16 __attribute__((vector_size(64)));

#ifdef __AVX512F__
#include <immintrin.h>
#endif

/* The steps exp16 and exp2_16 share. On AVX-512 each is one instruction; elsewhere written on
 * vectors: a select for the clamp, the 1.5 * 2^23 trick for rounding, 2^n built in the exponent bits. */
static inline v16 clamp16(v16 x, float lo, float hi) {
#ifdef __AVX512F__
    return (v16)_mm512_min_ps(_mm512_max_ps((__m512)x, _mm512_set1_ps(lo)), _mm512_set1_ps(hi));
#else
    const v16 l = (v16){0} + lo, h = (v16){0} + hi;
    vi16 below = x < l, above = x > h;
    x = (v16)(((vi16)l & below) | ((vi16)x & ~below));
    return (v16)(((vi16)h & above) | ((vi16)x & ~above));
#endif
}

static inline v16 round16(v16 x) { /* to the nearest integer */
#ifdef __AVX512F__
    return (v16)_mm512_roundscale_ps((__m512)x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#else
    const v16 magic = (v16){0} + 12582912.0f;
    return (x + magic) - magic;
#endif
}

static inline v16 times_2n(v16 p, v16 n) { /* p * 2^n, n integral and within the exponent's range */
#ifdef __AVX512F__
    return (v16)_mm512_scalef_ps((__m512)p, (__m512)n);
#else
    vi16 bits = (__builtin_convertvector(n, vi16) + 127) << 23;
    return p * (v16)bits;
#endif
}

/* e^x on 16 lanes: Cephes' single-precision polynomial (~1 ulp) on r = x - n ln2, times 2^n.
 * x is clamped to [-87, 88] (so -inf gives ~1.6e-38, which callers zero where it is masked). */
static inline v16 exp16(v16 x) {
    v16 v = clamp16(x, -87.0f, 88.0f), nv = round16(v * 1.44269504088896341f);
    v16 r = v - nv * 0.693359375f + nv * 2.12194440e-4f;
    v16 q = r * 1.9875691500e-4f + 1.3981999507e-3f;
    q = q * r + 8.3334519073e-3f;
    q = q * r + 4.1665795894e-2f;
    q = q * r + 1.6666665459e-1f;
    q = q * r + 5.0000001201e-1f;
    q = q * r * r + r + 1.0f;
    return times_2n(q, nv);
}

/* 2^x on 16 lanes for the attention's probabilities, whose scores come pre-scaled by log2(e)
 * (folded into K^T): one rounding, a degree-6 polynomial for 2^r on [-0.5, 0.5] (fitted, ~1 ulp)
 * and the 2^n scaling, a third fewer operations than exp16. x is clamped to [-126, 126], so a
 * masked -inf gives ~1e-38 (zeroed by the caller). */
static inline v16 exp2_16(v16 x) {
    v16 v = clamp16(x, -126.0f, 126.0f), nv = round16(v), r = v - nv;
    v16 p = r * 1.5345810970757157e-4f + 1.3399930903688073e-3f;
    p = p * r + 9.618489071726799e-3f;
    p = p * r + 5.550328642129898e-2f;
    p = p * r + 2.4022646248340607e-1f;
    p = p * r + 6.931471824645996e-1f;
    p = p * r + 1.0f;
    return times_2n(p, nv);
}

/* out[r][c] (+)= sum_k a[r*ar + k*ak] * b[k*bs + c] for rows r < nr, columns c < width (a
 * multiple of 32), k < kn. Reads R rows of `a` (callers pad); writes only rows < nr. With ar = 1
 * and ak = a row stride, `a` is read transposed (dV and dK take P^T and dS^T without a copy). */
static void gemm_rows(const float *a, int64_t ar, int64_t ak, int64_t nr, int64_t kn, const float *b, int64_t bs,
                      int64_t width, float *out, int64_t os, int accumulate) {
    for (int64_t c = 0; c < width; c += 32) {
        v16 x0[R], x1[R];
#pragma GCC unroll 8
        for (int r = 0; r < R; r++) {
            if (accumulate && r < nr) {
                x0[r] = ld(out + r * os + c);
                x1[r] = ld(out + r * os + c + 16);
            } else {
                x0[r] = (v16){0};
                x1[r] = (v16){0};
            }
        }
        for (int64_t k = 0; k < kn; k++) {
            v16 b0 = ld(b + k * bs + c), b1 = ld(b + k * bs + c + 16);
            const float *ak_ = a + k * ak;
#pragma GCC unroll 8
            for (int r = 0; r < R; r++) {
                float s = ak_[r * ar];
                x0[r] += s * b0;
                x1[r] += s * b1;
            }
        }
        for (int r = 0; r < nr; r++) {
            st(out + r * os + c, x0[r]);
            st(out + r * os + c + 16, x1[r]);
        }
    }
}

static inline float hsum(v16 v) {
#ifdef __AVX512F__
    return _mm512_reduce_add_ps((__m512)v);
#else
    float t = 0.0f;
    for (int l = 0; l < 16; l++) t += v[l];
    return t;
#endif
}

static inline v16 vmax(v16 a, v16 b) {
    vi16 gt = a > b; /* lane-wise max, written as a select so it stays one vector op */
    return (v16)(((vi16)a & gt) | ((vi16)b & ~gt));
}

static inline float hmax(v16 v) {
#ifdef __AVX512F__
    return _mm512_reduce_max_ps((__m512)v);
#else
    float t = v[0];
    for (int l = 1; l < 16; l++) t = v[l] > t ? v[l] : t;
    return t;
#endif
}

static inline int64_t up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

static inline v16 select16(vi16 m, v16 a, v16 b) { return (v16)(((vi16)a & m) | ((vi16)b & ~m)); }

/* All bits set in the lanes of the 16 columns from j0 at or left of row i's diagonal (key j <= i). */
static inline vi16 causal_lanes(int64_t j0, int64_t i) {
    const vi16 lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
    return lane <= (vi16){0} + (int32_t)(i - j0);
}

static inline float row_max(const float *s, int64_t n) { /* n a multiple of 16 */
    v16 m = (v16){0} - INFINITY;
    for (int64_t j = 0; j < n; j += 16) m = vmax(ld(s + j), m);
    return hmax(m);
}

/* The largest of row i's scores s[0..i]. */
static inline float causal_max(const float *s, int64_t i) {
    const int64_t last = up(i + 1, 16) - 16;
    v16 m = select16(causal_lanes(last, i), ld(s + last), (v16){0} - INFINITY);
    for (int64_t j = 0; j < last; j += 16) m = vmax(ld(s + j), m);
    return hmax(m);
}

/* Row i's scores (base-2 units) -> 2^(s - shift) in place for columns [0, up(i + 1, 16)), zero past
 * the diagonal; returns their sum. Columns from up(i + 1, 16) on are left as they are. */
static inline float exp2_causal(float *s, int64_t i, float shift) {
    const int64_t last = up(i + 1, 16) - 16;
    v16 total = {0};
    for (int64_t j = 0; j < last; j += 16) {
        v16 e = exp2_16(ld(s + j) - shift);
        st(s + j, e);
        total += e;
    }
    v16 e = select16(causal_lanes(last, i), exp2_16(ld(s + last) - shift), (v16){0});
    st(s + last, e);
    return hsum(total + e);
}

/* x (T rows at stride xs, hd columns) times c -> xt (hd rows of tp columns), zero beyond T. */
static void transpose_in(const float *x, int64_t xs, int64_t T, int64_t hd, int64_t tp, float c, float *xt) {
    int64_t j0 = 0;
#ifdef __AVX512F__
    const __m512i rows = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                            _mm512_set1_epi32((int)xs));
    for (; j0 + 16 <= T; j0 += 16) /* 16 rows' element d in one gather */
        for (int64_t d = 0; d < hd; d++)
            st(xt + d * tp + j0, (v16)_mm512_i32gather_ps(rows, x + j0 * xs + d, 4) * c);
#endif
    for (int64_t d = 0; d < hd; d++) {
        for (int64_t j = j0; j < T; j++) xt[d * tp + j] = x[j * xs + d] * c;
        for (int64_t j = T; j < tp; j++) xt[d * tp + j] = 0.0f;
    }
}

/* Rotary embedding of one row x (hd floats) at the position whose tables are cs, sn (cos and signed
 * sin, Hugging Face's rotate-half layout): out = x * cos + swap_halves(x) * ssin. With `back` set,
 * its transpose (the gradient's way): out = x * cos + swap_halves(x * ssin). out may be x: each
 * vector of one half is loaded with its partner in the other before either is stored. */
static inline void rope_row(const float *x, const float *cs, const float *sn, int64_t hd, int back, float *out) {
    const int64_t half = hd / 2; /* a multiple of 16: the kernels take head_dim % 32 == 0 */
    for (int64_t d = 0; d < half; d += 16) {
        v16 x1 = ld(x + d), x2 = ld(x + d + half), s1 = ld(sn + d), s2 = ld(sn + d + half);
        st(out + d, x1 * ld(cs + d) + x2 * (back ? s2 : s1));
        st(out + d + half, x2 * ld(cs + d + half) + x1 * (back ? s1 : s2));
    }
}

/* `rows` rows of x (stride xs) starting at row i0, nr of them real, into a zero-padded rows x hd
 * block; rotated by their positions' angles where cs/sn are given. */
static void block_in(const float *x, int64_t xs, int64_t i0, int64_t nr, int64_t hd, float *blk, int64_t rows,
                     const float *cs, const float *sn) {
    memset(blk, 0, sizeof(float) * rows * hd);
    for (int64_t r = 0; r < nr; r++) {
        if (cs != NULL)
            rope_row(x + (i0 + r) * xs, cs + (i0 + r) * hd, sn + (i0 + r) * hd, hd, 0, blk + r * hd);
        else
            memcpy(blk + r * hd, x + (i0 + r) * xs, sizeof(float) * hd);
    }
}

/* Scores of a block's rows against keys [0, i0 + nr) -> probabilities in p (R rows at stride tp):
 * row i < i0 + nr in columns [0, up(i + 1, 16)), zero past its diagonal; rows >= nr zero over
 * `width` columns. No product reads a row past up(i + 1, 16) (>= the block's keys, as blocks start at
 * multiples of R = 8), so the rest of a row is not written. Scores are in base-2 units (K^T
 * carries scale * log2(e)). With `lse` NULL (the forward) the rows are left unnormalized: each row's
 * 1/sum goes to inv[r] (the caller scales the row's output once instead of every probability) and its
 * natural log-sum-exp to lse_out; otherwise the saved log-sum-exp gives normalized probabilities
 * (the backward). */
static void probabilities(float *p, int64_t tp, int64_t width, int64_t i0, int64_t nr, const float *lse,
                          float *lse_out, float *inv) {
    for (int64_t r = 0; r < R; r++) {
        float *row = p + r * tp;
        const int64_t i = i0 + r;
        if (r >= nr) {
            memset(row, 0, sizeof(float) * width);
        } else if (lse == NULL) {
            const float top = causal_max(row, i), total = exp2_causal(row, i, top);
            inv[r] = 1.0f / total;
            lse_out[i] = top * LN2 + logf(total);
        } else {
            exp2_causal(row, i, lse[i] * LOG2E);
        }
    }
}

int shiptwo_attention_forward(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hd, float scale, const float *q,
                              const float *k, const float *v, const float *cs, const float *sn, float *o, float *lse,
                              int nthreads) {
    if (hd % 32 || H % KV || T < 1) return 1;
    const int64_t G = H / KV, tp = up(T, 32);
    int failed = 0;
#pragma omp parallel for schedule(dynamic) num_threads(nthreads) reduction(| : failed)
    for (int64_t task = 0; task < B * KV; task++) { /* a key/value head and the G query heads reading it */
        const int64_t b = task / KV, kvh = task % KV;
        float *kt = aligned_alloc(64, sizeof(float) * (hd * tp + R * tp + R * hd + T * hd));
        if (kt == NULL) { failed = 1; continue; }
        float *s = kt + hd * tp, *qb = s + R * tp, *kr = qb + R * hd;
        const float *kb = k + (b * T * KV + kvh) * hd, *vb = v + (b * T * KV + kvh) * hd;
        block_in(kb, KV * hd, 0, T, hd, kr, T, cs, sn);
        transpose_in(kr, hd, T, hd, tp, scale * LOG2E, kt);
        for (int64_t h = kvh * G; h < (kvh + 1) * G; h++) {
            for (int64_t i0 = 0; i0 < T; i0 += R) {
                const int64_t nr = T - i0 < R ? T - i0 : R, keys = i0 + nr, width = up(keys, 32);
                block_in(q + (b * T * H + h) * hd, H * hd, i0, nr, hd, qb, R, cs, sn);
                gemm_rows(qb, hd, 1, R, hd, kt, tp, width, s, tp, 0);
                float inv[R];
                float *ob = o + ((b * T + i0) * H + h) * hd;
                probabilities(s, tp, width, i0, nr, NULL, lse + (b * H + h) * T, inv);
                gemm_rows(s, tp, 1, nr, keys, vb, KV * hd, hd, ob, H * hd, 0);
                for (int64_t r = 0; r < nr; r++)
                    for (int64_t d = 0; d < hd; d++) ob[r * H * hd + d] *= inv[r];
            }
        }
        free(kt);
    }
    return failed ? 2 : 0;
}

int shiptwo_attention_backward(int64_t B, int64_t T, int64_t H, int64_t KV, int64_t hd, float scale, const float *q,
                               const float *k, const float *v, const float *cs, const float *sn, const float *o,
                               const float *lse, const float *dout, float *dq, float *dk, float *dv, int nthreads) {
    if (hd % 32 || H % KV || T < 1) return 1;
    const int64_t G = H / KV, tp = up(T, 32);
    int failed = 0;
#pragma omp parallel for schedule(dynamic) num_threads(nthreads) reduction(| : failed)
    for (int64_t task = 0; task < B * KV; task++) {
        const int64_t b = task / KV, kvh = task % KV;
        const int64_t qbr = up(T < QB ? T : QB, R); /* query rows per block */
        float *kt = aligned_alloc(64, sizeof(float) * (2 * hd * tp + 2 * qbr * tp + 3 * qbr * hd + T * hd));
        if (kt == NULL) { failed = 1; continue; }
        float *vt = kt + hd * tp, *p = vt + hd * tp, *ds = p + qbr * tp;
        float *qb = ds + qbr * tp, *dob = qb + qbr * hd, *ob = dob + qbr * hd, *kr = ob + qbr * hd;
        const int64_t ks = KV * hd, qs = H * hd;
        const float *kb = k + (b * T * KV + kvh) * hd, *vb = v + (b * T * KV + kvh) * hd;
        float *dkb = dk + (b * T * KV + kvh) * hd, *dvb = dv + (b * T * KV + kvh) * hd;
        block_in(kb, ks, 0, T, hd, kr, T, cs, sn); /* the rotated keys, rows for dQ = dS K */
        transpose_in(kr, hd, T, hd, tp, scale * LOG2E, kt);
        transpose_in(vb, ks, T, hd, tp, 1.0f, vt);
        for (int64_t j = 0; j < T; j++) {
            memset(dkb + j * ks, 0, sizeof(float) * hd);
            memset(dvb + j * ks, 0, sizeof(float) * hd);
        }
        for (int64_t h = kvh * G; h < (kvh + 1) * G; h++) {
            const float *qh = q + (b * T * H + h) * hd, *oh = o + (b * T * H + h) * hd, *doh = dout + (b * T * H + h) * hd;
            const float *lh = lse + (b * H + h) * T;
            for (int64_t i0 = 0; i0 < T; i0 += qbr) {
                const int64_t nq = T - i0 < qbr ? T - i0 : qbr, keys = i0 + nq, width = up(keys, 32);
                block_in(qh, qs, i0, nq, hd, qb, qbr, cs, sn);
                block_in(doh, qs, i0, nq, hd, dob, qbr, NULL, NULL);
                block_in(oh, qs, i0, nq, hd, ob, qbr, NULL, NULL);
                for (int64_t s0 = 0; s0 < qbr; s0 += R) { /* P, dS and dQ for R rows at a time */
                    float *ps = p + s0 * tp, *dss = ds + s0 * tp;
                    if (s0 >= nq) break; /* the last block's rows past T: dV and dK read rows < nq only */
                    const int64_t nr = nq - s0 < R ? nq - s0 : R;
                    const int64_t sub_keys = i0 + s0 + nr, sub_width = up(sub_keys, 32);
                    gemm_rows(qb + s0 * hd, hd, 1, R, hd, kt, tp, sub_width, ps, tp, 0);
                    probabilities(ps, tp, width, i0 + s0, nr, lh, NULL, NULL);
                    gemm_rows(dob + s0 * hd, hd, 1, R, hd, vt, tp, sub_width, dss, tp, 0); /* dP = dO V^T */
                    for (int64_t r = 0; r < nr; r++) { /* dS as P: to up(i + 1, 16), zero past the diagonal */
                        const float *dor = dob + (s0 + r) * hd, *orow = ob + (s0 + r) * hd;
                        v16 acc = {0}; /* D_i = dO_i . O_i: the softmax's Jacobian term */
                        for (int64_t d = 0; d < hd; d += 16) acc += ld(dor + d) * ld(orow + d);
                        const float dd = hsum(acc);
                        float *pr = ps + r * tp, *dr = dss + r * tp;
                        for (int64_t j = 0, n = up(i0 + s0 + r + 1, 16); j < n; j += 16)
                            st(dr + j, ld(pr + j) * (ld(dr + j) - dd) * scale);
                    }
                    float *dqb = dq + ((b * T + i0 + s0) * H + h) * hd;
                    gemm_rows(dss, tp, 1, nr, sub_keys, kr, hd, hd, dqb, qs, 0);
                    for (int64_t r = 0; r < nr; r++) { /* the gradient of the rotated query -> of q */
                        const int64_t i = i0 + s0 + r;
                        rope_row(dqb + r * qs, cs + i * hd, sn + i * hd, hd, 1, dqb + r * qs);
                    }
                }
                for (int64_t j0 = 0; j0 < keys; j0 += R) { /* dV += P^T dO, dK += dS^T Q over the block's rows */
                    const int64_t nj = keys - j0 < R ? keys - j0 : R;
                    const int64_t k0 = j0 > i0 ? j0 - i0 : 0; /* rows above key j0 see none of these keys: P, dS = 0 */
                    gemm_rows(p + k0 * tp + j0, 1, tp, nj, nq - k0, dob + k0 * hd, hd, hd, dvb + j0 * ks, ks, 1);
                    gemm_rows(ds + k0 * tp + j0, 1, tp, nj, nq - k0, qb + k0 * hd, hd, hd, dkb + j0 * ks, ks, 1);
                }
            }
        }
        for (int64_t j = 0; j < T; j++) /* the gradient of the rotated keys -> of k */
            rope_row(dkb + j * ks, cs + j * hd, sn + j * hd, hd, 1, dkb + j * ks);
        free(kt);
    }
    return failed ? 2 : 0;
}

/* Softmax cross-entropy of one row of V logits, in place: returns the row's loss times its
 * weight w, and the row becomes the gradient of w * loss with respect to it,
 * w * (softmax - onehot(target)). V need not be a multiple of 16 (a scalar tail). */
static float xent_row(int64_t V, float *row, int64_t target, float w) {
    const int64_t vv = V / 16 * 16;
    float top = vv ? row_max(row, vv) : -INFINITY;
    for (int64_t j = vv; j < V; j++) top = row[j] > top ? row[j] : top;
    const float picked = row[target];
    v16 acc = {0};
    for (int64_t j = 0; j < vv; j += 16) {
        v16 e = exp16(ld(row + j) - top);
        st(row + j, e);
        acc += e;
    }
    float total = hsum(acc);
    for (int64_t j = vv; j < V; j++) {
        float tail[16] = {0};
        tail[0] = row[j] - top;
        row[j] = exp16(ld(tail))[0];
        total += row[j];
    }
    const float lse = top + logf(total), scale = w / total;
    for (int64_t j = 0; j < vv; j += 16) st(row + j, ld(row + j) * scale);
    for (int64_t j = vv; j < V; j++) row[j] *= scale;
    row[target] -= w;
    return w * (lse - picked);
}

/* The MLP, down(silu(gate(x)) * up(x)), fused by blocks of MLP_ROWS tokens: each thread runs a
 * block's products through the BLAS torch uses (MKL's sgemm, one thread a call) and gates it while
 * the block is in its cache, so the (tokens, intermediate) activations are written once (g and u,
 * which the backward needs, streamed past the cache) instead of travelling through memory between
 * separate ops.
 * Row-major throughout: x, y, dx (n, d); g, u (n, I); weights as nn.Linear stores them: wg, wu
 * (I, d), wd (d, I). */
#define MLP_ROWS 128 /* a backward block's buffers, its slab's sums and the weights: ~1.8 MB at d = 128,
                      * I = 352, within a core's 2 MB L2 (256 rows measured ~8 % slower there) */
#define SLAB_ROWS 1024 /* weight gradients sum per slab of rows, then slabs in order */
#define XENT_ROWS 128 /* the head's block: its logits, 1 MiB at vocab 2048 (64 to 256 measured within 3 %) */

typedef void (*sgemm_fn)(const char *, const char *, const int *, const int *, const int *, const float *,
                         const float *, const int *, const float *, const int *, const float *, float *, const int *);
static sgemm_fn blas_sgemm;
static int (*blas_local_threads)(int);

/* Given by the caller (train_kernels.py, from torch's own library): Fortran sgemm_ and MKL's
 * per-thread thread count, set to 1 inside our threads so calls do not nest thread pools. */
void shiptwo_set_blas(void *sgemm, void *local_threads) {
    blas_sgemm = (sgemm_fn)sgemm;
    blas_local_threads = (int (*)(int))local_threads;
}

/* Row-major C (m x n) = beta C + op(A) op(B), op(A) (m x k), op(B) (k x n); ta: A is stored
 * (k x m), tb: B is stored (n x k). Fortran's column-major sgemm sees each row-major matrix as its
 * transpose, so it computes C^T = op(B)^T op(A)^T: the operands swap. */
static void mm(int ta, int tb, int m, int n, int k, const float *A, int lda, const float *B, int ldb, float beta,
               float *C, int ldc) {
    const float one = 1.0f;
    blas_sgemm(tb ? "T" : "N", ta ? "T" : "N", &n, &m, &k, &one, B, &ldb, A, &lda, &beta, C, &ldc);
}

/* 1 / (1 + e^-x) on 16 lanes. On AVX-512 the reciprocal is rcp14 refined by one Newton step
 * (~1 ulp, as the exp), a third of a division's cost; elsewhere a division. */
static inline v16 sigmoid16(v16 x) {
    v16 d = exp16(-x) + 1.0f;
#ifdef __AVX512F__
    v16 r = (v16)_mm512_rcp14_ps((__m512)d);
    return r * (2.0f - d * r);
#else
    return 1.0f / d;
#endif
}

/* h = silu(g) * u = g * sigmoid(g) * u over n elements (a scalar tail past the last 16). */
static void swiglu(int64_t n, const float *g, const float *u, float *h) {
    const int64_t nv = n / 16 * 16;
    for (int64_t i = 0; i < nv; i += 16) {
        v16 x = ld(g + i);
        st(h + i, x * sigmoid16(x) * ld(u + i));
    }
    for (int64_t i = nv; i < n; i++) h[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

/* Its backward, recomputing the gating on the way (one exp an element for both): with
 * s = sigmoid(g), h = g * s * u (the down product's input, for its weight gradient),
 * du = dh * g * s, dg = dh * u * s * (1 + g * (1 - s)). */
static void swiglu_backward(int64_t n, const float *g, const float *u, const float *dh, float *h, float *dg,
                            float *du) {
    const int64_t nv = n / 16 * 16;
    for (int64_t i = 0; i < nv; i += 16) {
        v16 x = ld(g + i), up = ld(u + i), d = ld(dh + i), s = sigmoid16(x), xs = x * s;
        st(h + i, xs * up);
        st(du + i, d * xs);
        st(dg + i, d * up * s * (1.0f + x * (1.0f - s)));
    }
    for (int64_t i = nv; i < n; i++) {
        float s = 1.0f / (1.0f + expf(-g[i]));
        h[i] = g[i] * s * u[i];
        du[i] = dh[i] * g[i] * s;
        dg[i] = dh[i] * u[i] * s * (1.0f + g[i] * (1.0f - s));
    }
}

/* dst[0..n) = src, bypassing the cache where dst is 64-byte aligned (it is read back only by the
 * backward, long after): no read-for-ownership of dst's lines, no eviction of the block. */
static void stream_row(float *dst, const float *src, int64_t n) {
    int64_t i = 0;
#ifdef __AVX512F__
    for (; i < n && ((uintptr_t)(dst + i) & 63); i++) dst[i] = src[i];
    for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_loadu_ps(src + i));
#endif
    for (; i < n; i++) dst[i] = src[i];
}

/* out[e] = the sum over slabs s, in slab order, of part[s * stride + e] for e < count: the
 * slabs' weight gradients, summed in one order whatever the thread count. Its loop is shared by
 * the threads of the enclosing parallel region. */
static void sum_slabs(const float *part, int64_t slabs, int64_t stride, int64_t count, float *out) {
#pragma omp for schedule(static)
    for (int64_t e = 0; e < count; e++) {
        float t = 0.0f;
        for (int64_t s = 0; s < slabs; s++) t += part[s * stride + e];
        out[e] = t;
    }
}

static int blas_shape_ok(int64_t n, int64_t d, int64_t I) {
    return blas_sgemm && blas_local_threads && n > 0 && d > 0 && I > 0 && n <= INT32_MAX && 2 * I <= INT32_MAX
           && d <= INT32_MAX;
}

/* 1 / sqrt(mean(x^2) + eps) of a row of d floats (RMSNorm's scale). */
static float row_rstd(const float *x, int64_t d, float eps) {
    v16 acc = {0};
    int64_t j = 0;
    for (; j + 16 <= d; j += 16) {
        v16 v = ld(x + j);
        acc += v * v;
    }
    float ss = hsum(acc);
    for (; j < d; j++) ss += x[j] * x[j];
    return 1.0f / sqrtf(ss / (float)d + eps);
}

/* xn = x * rstd * wn (RMSNorm) for `rows` rows of d floats, each row's rstd given (the forward
 * computes it with row_rstd; the backward recomputes xn from the forward's). */
static void normalize_rows(int rows, int64_t d, const float *x, const float *wn, const float *rstd, float *xn) {
    for (int r = 0; r < rows; r++)
        for (int64_t j = 0; j < d; j++) xn[r * d + j] = wn[j] * (x[r * d + j] * rstd[r]);
}

/* RMSNorm's backward for one row (and the residual's gradient dy, NULL if none): with xh = x * rs,
 * dxh = dxn * wn, dx = dy + rs * (dxh - xh * mean(dxh * xh)); sn (the weight's gradient) += dxn * xh. */
static void norm_backward(int64_t d, float rs, const float *x, const float *wn, const float *dxn, const float *dy,
                          float *dx, float *sn) {
    const int64_t dv = d / 16 * 16;
    v16 acc = {0};
    for (int64_t j = 0; j < dv; j += 16) {
        v16 xh = ld(x + j) * rs, dn = ld(dxn + j);
        st(sn + j, ld(sn + j) + dn * xh);
        acc += dn * ld(wn + j) * xh;
    }
    float dot = hsum(acc);
    for (int64_t j = dv; j < d; j++) {
        sn[j] += dxn[j] * (x[j] * rs);
        dot += dxn[j] * wn[j] * (x[j] * rs);
    }
    const float mean = dot / (float)d;
    for (int64_t j = 0; j < dv; j += 16)
        st(dx + j, (dy ? ld(dy + j) : (v16){0}) + rs * (ld(dxn + j) * ld(wn + j) - ld(x + j) * rs * mean));
    for (int64_t j = dv; j < d; j++) dx[j] = (dy ? dy[j] : 0.0f) + rs * (dxn[j] * wn[j] - x[j] * rs * mean);
}

/* [wg; wu] (2I x d), the gate's and up's weights stacked, so that the forward's gate and up are one
 * product of twice the width (~2 % faster a forward, interleaved calls). NULL when out of memory. */
static float *gate_up(int64_t I, int64_t d, const float *wg, const float *wu) {
    float *w = malloc(sizeof(float) * 2 * I * d);
    if (w) {
        memcpy(w, wg, sizeof(float) * I * d);
        memcpy(w + I * d, wu, sizeof(float) * I * d);
    }
    return w;
}

/* The residual MLP half of a decoder layer: y = x1 + down(silu(gate(xn)) * up(xn)), xn =
 * rmsnorm(x1) * wn, where x1 = x + o wo^T (the attention's output projection and residual, o (n, dO),
 * wo (d, dO)) when o is given, else x1 = x. Kept for the backward: x1 (when o is given), g = gate(xn),
 * u = up(xn) and each row's rstd (xn itself is recomputed from x1, a tenth of g and u's size). */
int shiptwo_mlp_forward(int64_t n, int64_t d, int64_t I, int64_t dO, float eps, const float *x, const float *o,
                        const float *wo, const float *wn, const float *wg, const float *wu, const float *wd,
                        float *x1, float *g, float *u, float *rstd, float *y, int nthreads) {
    if (!blas_shape_ok(n, d, I) || (o != NULL && !blas_shape_ok(n, d, dO))) return 1;
    const int64_t blocks = (n + MLP_ROWS - 1) / MLP_ROWS, I2 = 2 * I;
    float *wgu = gate_up(I, d, wg, wu);
    if (!wgu) return 2;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *h = malloc(sizeof(float) * MLP_ROWS * I), *gu = malloc(sizeof(float) * MLP_ROWS * I2),
              *xn = malloc(sizeof(float) * MLP_ROWS * d);
        const int before = blas_local_threads(1);
#pragma omp for schedule(dynamic) /* blocks are independent: whichever thread is free takes the next */
        for (int64_t b = 0; b < blocks; b++) {
            if (!h || !gu || !xn) { failed = 1; continue; }
            const int64_t r0 = b * MLP_ROWS;
            const int rows = (int)(n - r0 < MLP_ROWS ? n - r0 : MLP_ROWS);
            const float *xb = x + r0 * d;
            if (o != NULL) { /* x1 = x + o wo^T, this block's rows, then the MLP reads them from cache */
                memcpy(x1 + r0 * d, xb, sizeof(float) * rows * d);
                mm(0, 1, rows, d, dO, o + r0 * dO, dO, wo, dO, 1.0f, x1 + r0 * d, d);
                xb = x1 + r0 * d;
            }
            for (int r = 0; r < rows; r++) rstd[r0 + r] = row_rstd(xb + r * d, d, eps);
            normalize_rows(rows, d, xb, wn, rstd + r0, xn);
            memcpy(y + r0 * d, xb, sizeof(float) * rows * d); /* the residual, which the down product adds to */
            mm(0, 1, rows, I2, d, xn, d, wgu, d, 0.0f, gu, I2); /* a row of gu: its gate, then its up */
            for (int r = 0; r < rows; r++) {
                const float *gr = gu + r * I2, *ur = gr + I;
                swiglu(I, gr, ur, h + r * I);
                stream_row(g + (r0 + r) * I, gr, I);
                stream_row(u + (r0 + r) * I, ur, I);
            }
            mm(0, 1, rows, d, I, h, I, wd, I, 1.0f, y + r0 * d, d);
        }
        blas_local_threads(before);
        free(h);
        free(gu);
        free(xn);
#ifdef __AVX512F__
        _mm_sfence(); /* this thread's streamed stores are visible before the region ends */
#endif
    }
    free(wgu);
    return failed ? 2 : 0;
}

/* The gradients from dy: dx, and the weights' dwn, dwg, dwu, dwd; with o given, also the output
 * projection's: do = dx wo and dwo = dx^T o (dx, the gradient of x1, is also x's: x1 = x + o wo^T).
 * x1 is the MLP's input (x when no o). A slab of SLAB_ROWS rows is one task, its blocks in order;
 * the slabs' weight gradients are then summed in slab order, so the result does not depend on the
 * thread count. RMSNorm's backward, per row, with xh = x1 * rstd: dxh = dxn * wn,
 * dx = dy + rstd * (dxh - xh * mean(dxh * xh)); dwn = sum over rows of dxn * xh. */
int shiptwo_mlp_backward(int64_t n, int64_t d, int64_t I, int64_t dO, const float *x1, const float *o,
                         const float *wo, const float *wn, const float *rstd, const float *g, const float *u,
                         const float *dy, const float *wg, const float *wu, const float *wd, float *dx, float *d_o,
                         float *dwo, float *dwn, float *dwg, float *dwu, float *dwd, int nthreads) {
    if (!blas_shape_ok(n, d, I) || (o != NULL && !blas_shape_ok(n, d, dO))) return 1;
    const int64_t I2 = 2 * I, slabs = (n + SLAB_ROWS - 1) / SLAB_ROWS, no = o != NULL ? d * dO : 0;
    float *pgu = malloc(sizeof(float) * slabs * I2 * d), *pd = malloc(sizeof(float) * slabs * d * I),
          *pn = malloc(sizeof(float) * slabs * d),
          *po = malloc(sizeof(float) * (slabs * no + 1)); /* + 1: never malloc(0), whose NULL reads as out of memory */
    int failed = 0; /* shared: every thread reads it after the barrier */
    if (!pgu || !pd || !pn || !po) {
        free(pgu);
        free(pd);
        free(pn);
        free(po);
        return 2;
    }
#pragma omp parallel num_threads(nthreads)
    {
        float *h = malloc(sizeof(float) * MLP_ROWS * I), *dh = malloc(sizeof(float) * MLP_ROWS * I),
              *dgu = malloc(sizeof(float) * MLP_ROWS * I2), /* a row: dg then du */
            *xn = malloc(sizeof(float) * MLP_ROWS * d), *dxn = malloc(sizeof(float) * MLP_ROWS * d);
        const int before = blas_local_threads(1);
#pragma omp for schedule(dynamic)
        for (int64_t s = 0; s < slabs; s++) {
            if (!h || !dh || !dgu || !xn || !dxn) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            /* this slab's sums */
            float *sgu = pgu + s * I2 * d, *sd = pd + s * d * I, *sn = pn + s * d, *so = po + s * no;
            memset(sn, 0, sizeof(float) * d);
            const int64_t end = (s + 1) * SLAB_ROWS < n ? (s + 1) * SLAB_ROWS : n;
            for (int64_t r0 = s * SLAB_ROWS; r0 < end; r0 += MLP_ROWS) {
                const int rows = (int)(end - r0 < MLP_ROWS ? end - r0 : MLP_ROWS);
                const float beta = r0 == s * SLAB_ROWS ? 0.0f : 1.0f; /* a slab's first block starts its sums */
                normalize_rows(rows, d, x1 + r0 * d, wn, rstd + r0, xn);
                mm(0, 0, rows, I, d, dy + r0 * d, d, wd, I, 0.0f, dh, I);
                for (int r = 0; r < rows; r++)
                    swiglu_backward(I, g + (r0 + r) * I, u + (r0 + r) * I, dh + r * I, h + r * I, dgu + r * I2,
                                    dgu + r * I2 + I);
                mm(1, 0, d, I, rows, dy + r0 * d, d, h, I, beta, sd, I); /* dwd += dy^T h */
                mm(1, 0, I2, d, rows, dgu, I2, xn, d, beta, sgu, d); /* [dwg; dwu] += [dg du]^T xn */
                /* dxn = dg wg + du wu, two products: one of depth 2I over the stacked weights measured ~2 % slower here */
                mm(0, 0, rows, d, I, dgu, I2, wg, d, 0.0f, dxn, d);
                mm(0, 0, rows, d, I, dgu + I, I2, wu, d, 1.0f, dxn, d);
                for (int r = 0; r < rows; r++)
                    norm_backward(d, rstd[r0 + r], x1 + (r0 + r) * d, wn, dxn + r * d, dy + (r0 + r) * d,
                                  dx + (r0 + r) * d, sn);
                if (o != NULL) { /* the block's dx, still in cache, through the output projection */
                    mm(0, 0, rows, dO, d, dx + r0 * d, d, wo, dO, 0.0f, d_o + r0 * dO, dO); /* do = dx wo */
                    mm(1, 0, d, dO, rows, dx + r0 * d, d, o + r0 * dO, dO, beta, so, dO); /* dwo += dx^T o */
                }
            }
        }
        blas_local_threads(before);
        free(h);
        free(dh);
        free(dgu);
        free(xn);
        free(dxn);
#pragma omp barrier
        if (!failed) {
            sum_slabs(pgu, slabs, I2 * d, I * d, dwg);
            sum_slabs(pgu + I * d, slabs, I2 * d, I * d, dwu);
            sum_slabs(pd, slabs, d * I, d * I, dwd);
            sum_slabs(pn, slabs, d, d, dwn);
            if (o != NULL) sum_slabs(po, slabs, no, no, dwo);
        }
    }
    free(pgu);
    free(pd);
    free(pn);
    free(po);
    return failed ? 2 : 0;
}

/* A decoder layer's first half up to its attention: xn = rmsnorm(x) * wn, then the projections
 * q = xn wq^T (n, nq), k = xn wk^T and v = xn wv^T (n, nk), by blocks of MLP_ROWS tokens as the MLP
 * (xn stays in cache; the backward recomputes it from x and each row's rstd, kept here). */
int shiptwo_norm_qkv_forward(int64_t n, int64_t d, int64_t nq, int64_t nk, float eps, const float *x, const float *wn,
                             const float *wq, const float *wk, const float *wv, float *q, float *k, float *v,
                             float *rstd, int nthreads) {
    if (!blas_shape_ok(n, d, nq) || !blas_shape_ok(n, d, nk)) return 1;
    const int64_t blocks = (n + MLP_ROWS - 1) / MLP_ROWS;
    int failed = 0;
#pragma omp parallel num_threads(nthreads) reduction(| : failed)
    {
        float *xn = malloc(sizeof(float) * MLP_ROWS * d);
        const int before = blas_local_threads(1);
#pragma omp for schedule(dynamic) /* blocks are independent: whichever thread is free takes the next */
        for (int64_t b = 0; b < blocks; b++) {
            if (!xn) { failed = 1; continue; }
            const int64_t r0 = b * MLP_ROWS;
            const int rows = (int)(n - r0 < MLP_ROWS ? n - r0 : MLP_ROWS);
            for (int r = 0; r < rows; r++) rstd[r0 + r] = row_rstd(x + (r0 + r) * d, d, eps);
            normalize_rows(rows, d, x + r0 * d, wn, rstd + r0, xn);
            mm(0, 1, rows, nq, d, xn, d, wq, d, 0.0f, q + r0 * nq, nq);
            mm(0, 1, rows, nk, d, xn, d, wk, d, 0.0f, k + r0 * nk, nk);
            mm(0, 1, rows, nk, d, xn, d, wv, d, 0.0f, v + r0 * nk, nk);
        }
        blas_local_threads(before);
        free(xn);
    }
    return failed ? 2 : 0;
}

/* Its gradients from dq, dk, dv: dx, dwn, dwq, dwk, dwv (weight gradients per slab, then slabs in
 * order, as the MLP's). */
int shiptwo_norm_qkv_backward(int64_t n, int64_t d, int64_t nq, int64_t nk, const float *x, const float *wn,
                              const float *rstd, const float *dq, const float *dk, const float *dv, const float *wq,
                              const float *wk, const float *wv, float *dx, float *dwn, float *dwq, float *dwk,
                              float *dwv, int nthreads) {
    if (!blas_shape_ok(n, d, nq) || !blas_shape_ok(n, d, nk)) return 1;
    const int64_t slabs = (n + SLAB_ROWS - 1) / SLAB_ROWS, per = (nq + 2 * nk + 1) * d; /* a slab's sums */
    float *part = malloc(sizeof(float) * slabs * per);
    if (!part) return 2;
    int failed = 0; /* shared: every thread reads it after the barrier */
#pragma omp parallel num_threads(nthreads)
    {
        float *xn = malloc(sizeof(float) * MLP_ROWS * d), *dxn = malloc(sizeof(float) * MLP_ROWS * d);
        const int before = blas_local_threads(1);
#pragma omp for schedule(dynamic)
        for (int64_t s = 0; s < slabs; s++) {
            if (!xn || !dxn) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            float *pq = part + s * per, *pk = pq + nq * d, *pv = pk + nk * d, *pn = pv + nk * d;
            memset(pn, 0, sizeof(float) * d);
            const int64_t end = (s + 1) * SLAB_ROWS < n ? (s + 1) * SLAB_ROWS : n;
            for (int64_t r0 = s * SLAB_ROWS; r0 < end; r0 += MLP_ROWS) {
                const int rows = (int)(end - r0 < MLP_ROWS ? end - r0 : MLP_ROWS);
                const float beta = r0 == s * SLAB_ROWS ? 0.0f : 1.0f;
                normalize_rows(rows, d, x + r0 * d, wn, rstd + r0, xn);
                mm(0, 0, rows, d, nq, dq + r0 * nq, nq, wq, d, 0.0f, dxn, d); /* dxn = dq wq + dk wk + dv wv */
                mm(0, 0, rows, d, nk, dk + r0 * nk, nk, wk, d, 1.0f, dxn, d);
                mm(0, 0, rows, d, nk, dv + r0 * nk, nk, wv, d, 1.0f, dxn, d);
                mm(1, 0, nq, d, rows, dq + r0 * nq, nq, xn, d, beta, pq, d); /* dwq += dq^T xn, ... */
                mm(1, 0, nk, d, rows, dk + r0 * nk, nk, xn, d, beta, pk, d);
                mm(1, 0, nk, d, rows, dv + r0 * nk, nk, xn, d, beta, pv, d);
                for (int r = 0; r < rows; r++)
                    norm_backward(d, rstd[r0 + r], x + (r0 + r) * d, wn, dxn + r * d, NULL, dx + (r0 + r) * d, pn);
            }
        }
        blas_local_threads(before);
        free(xn);
        free(dxn);
#pragma omp barrier
        if (!failed) {
            sum_slabs(part, slabs, per, nq * d, dwq);
            sum_slabs(part + nq * d, slabs, per, nk * d, dwk);
            sum_slabs(part + (nq + nk) * d, slabs, per, nk * d, dwv);
            sum_slabs(part + (nq + 2 * nk) * d, slabs, per, d, dwn);
        }
    }
    free(part);
    return failed ? 2 : 0;
}

/* The LM head with its softmax cross-entropy and both gradients, by blocks of XENT_ROWS tokens
 * as the MLP: logits = h W^T (a block's stay in cache), l[r] = w[r] * cross_entropy(logits[r],
 * target[r]), turned in place into G = d(sum l)/d logits; dh = G W; dW = sum over blocks of
 * G^T h, per slab of SLAB_ROWS rows, then slabs in order; *loss = sum l. h (n, d), W (V, d). */
int shiptwo_linear_xent(int64_t n, int64_t d, int64_t V, const float *h, const float *W, const int64_t *target,
                        const float *w, float *loss, float *dh, float *dW, int nthreads) {
    if (!blas_shape_ok(n, d, V)) return 1;
    for (int64_t r = 0; r < n; r++)
        if (target[r] < 0 || target[r] >= V) return 1;
    const int64_t slabs = (n + SLAB_ROWS - 1) / SLAB_ROWS;
    float *pw = malloc(sizeof(float) * slabs * V * d), *rows_loss = malloc(sizeof(float) * n);
    if (!pw || !rows_loss) {
        free(pw);
        free(rows_loss);
        return 2;
    }
    int failed = 0; /* shared: every thread reads it after the barrier */
#pragma omp parallel num_threads(nthreads)
    {
        float *logits = malloc(sizeof(float) * XENT_ROWS * V);
        const int before = blas_local_threads(1);
#pragma omp for schedule(dynamic)
        for (int64_t s = 0; s < slabs; s++) {
            if (!logits) {
#pragma omp atomic write
                failed = 1;
                continue;
            }
            const int64_t end = (s + 1) * SLAB_ROWS < n ? (s + 1) * SLAB_ROWS : n;
            for (int64_t r0 = s * SLAB_ROWS; r0 < end; r0 += XENT_ROWS) {
                const int rows = (int)(end - r0 < XENT_ROWS ? end - r0 : XENT_ROWS);
                mm(0, 1, rows, V, d, h + r0 * d, d, W, d, 0.0f, logits, V);
                for (int r = 0; r < rows; r++)
                    rows_loss[r0 + r] = xent_row(V, logits + r * V, target[r0 + r], w[r0 + r]);
                mm(0, 0, rows, d, V, logits, V, W, d, 0.0f, dh + r0 * d, d);
                mm(1, 0, V, d, rows, logits, V, h + r0 * d, d, r0 == s * SLAB_ROWS ? 0.0f : 1.0f, pw + s * V * d, d);
            }
        }
        blas_local_threads(before);
        free(logits);
#pragma omp barrier
        if (!failed) sum_slabs(pw, slabs, V * d, V * d, dW);
    }
    double total = 0.0; /* the rows' weighted losses in row order, in double: one scalar, no extra op */
    for (int64_t r = 0; r < n; r++) total += rows_loss[r];
    *loss = (float)total;
    free(pw);
    free(rows_loss);
    return failed ? 2 : 0;
}

/* The embedding: y[t] = w[idx[t]] for n tokens of d floats. An out-of-range id returns 1. */
int shiptwo_embedding_forward(int64_t n, int64_t d, int64_t V, const int64_t *idx, const float *w, float *y,
                              int nthreads) {
    for (int64_t t = 0; t < n; t++)
        if (idx[t] < 0 || idx[t] >= V) return 1;
#pragma omp parallel for schedule(static) num_threads(nthreads)
    for (int64_t t = 0; t < n; t++) memcpy(y + t * d, w + idx[t] * d, sizeof(float) * d);
    return 0;
}

/* Its weight gradient: dw (V x d) = sum over tokens t of onehot(idx[t]) dy[t], without
 * atomics: each thread owns a range of vocabulary rows and scans every token for its own, so each
 * row sums its tokens in token order whatever the thread count. An out-of-range id returns 1. */
int shiptwo_embedding_backward(int64_t n, int64_t d, int64_t V, const int64_t *idx, const float *dy, float *dw,
                               int nthreads) {
    for (int64_t t = 0; t < n; t++)
        if (idx[t] < 0 || idx[t] >= V) return 1;
#pragma omp parallel num_threads(nthreads)
    {
        const int64_t parts = omp_get_num_threads(), me = omp_get_thread_num();
        const int64_t lo = V * me / parts, hi = V * (me + 1) / parts;
        memset(dw + lo * d, 0, sizeof(float) * (hi - lo) * d);
        for (int64_t t = 0; t < n; t++) {
            const int64_t row = idx[t];
            if (row < lo || row >= hi) continue;
            float *out = dw + row * d;
            const float *g = dy + t * d;
            for (int64_t j = 0; j < d; j++) out[j] += g[j];
        }
    }
    return 0;
}

/* 1 when built with AVX-512: without it the 16-lane vectors are emulated and these kernels lose to
 * torch's, so the caller does not use them. */
int shiptwo_train_kernels_avx512(void) {
#ifdef __AVX512F__
    return 1;
#else
    return 0;
#endif
}
