/* One decode step of the LLaMA decoder for a batch of independent sequences, in one call.
 *
 * Built by shiptwo/model/kernels.py with the machine's C compiler (-O3 -march=native -fopenmp).
 * Why C: a batch-1 step streams every weight once, and torch's matrix-vector product plus the
 * dispatch of a step's ~300 small ops leave much of the machine's read bandwidth unused. Here a
 * step is one call and the weights are read in their stored (out, in) layout, so they stay
 * memory-mapped.
 *
 * Batch invariance: every output element is a dot product accumulated in one fixed order (16
 * lanes over k, then a fixed lane tree) by one thread, and a sequence's attention reads only its
 * own keys. A sequence's result thus depends neither on the other sequences of the step nor on
 * the thread count: batched greedy decoding equals single-stream greedy decoding exactly.
 *
 * Work split (chosen by the caller, kernels.py): few sequences share every op, each thread
 * taking a slice of the weight rows (the weights are streamed once; a barrier between dependent
 * ops). Many sequences are split between the threads instead, each running whole layers for its
 * own: no barrier but the final join, which keeps a batch fast on a machine where other jobs
 * preempt one of the threads.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

typedef float v16 __attribute__((vector_size(64)));
typedef float v8 __attribute__((vector_size(32)));
typedef float v4 __attribute__((vector_size(16)));

typedef struct {
    const float *input_norm, *wq, *wk, *wv, *wo, *post_norm, *wgate, *wup, *wdown;
    float *k_cache, *v_cache; /* (slots, kv_heads, capacity, head_dim) */
} Layer;

typedef struct {
    int64_t hidden, inter, heads, kv_heads, head_dim, vocab, n_layers, capacity;
    float eps;
    const float *embed, *final_norm, *lm_head; /* lm_head (vocab, hidden): the embedding when tied */
    const float *cos, *ssin;                   /* (max_positions, head_dim): rotate-half layout, signed sin */
    const Layer *layers;
} Model;

typedef struct { /* per-sequence scratch rows, allocated by the caller for every slot */
    float *x, *xn, *qkv, *att, *gate_up, *act, *scores;
} Work;

typedef struct { /* the sequences [b0, b1) this thread works on, and how it shares each op */
    int64_t b0, b1;
    int tid, nth; /* nth > 1: the team splits every op's rows and meets at barriers */
} Part;

static inline void sync(const Part *p) {
    if (p->nth > 1) {
        #pragma omp barrier
    }
}

/* This thread's share [lo, hi) of n items, in whole blocks of `unit`. */
static inline void share(const Part *p, int64_t n, int64_t unit, int64_t *lo, int64_t *hi) {
    int64_t blocks = (n + unit - 1) / unit;
    *lo = blocks * p->tid / p->nth * unit;
    *hi = blocks * (p->tid + 1) / p->nth * unit;
    if (*hi > n) *hi = n;
}

static inline v16 load16(const float *p) { v16 v; memcpy(&v, p, sizeof v); return v; }

static inline float hsum(v16 v) { /* a fixed pairwise tree: lane i + lane i+8, then +4, +2, +1 */
    v8 a = __builtin_shufflevector(v, v, 0, 1, 2, 3, 4, 5, 6, 7) + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15);
    v4 b = __builtin_shufflevector(a, a, 0, 1, 2, 3) + __builtin_shufflevector(a, a, 4, 5, 6, 7);
    return (b[0] + b[2]) + (b[1] + b[3]);
}

/* hsum of four vectors at once: the very additions hsum makes for each (lane i + i+8, + i+4,
 * + i+2, + i+1), gathered across the four so a block's epilogue costs a few instructions. */
static inline v4 hsum4(v16 a, v16 b, v16 c, v16 d) {
    v16 ab = __builtin_shufflevector(a, b, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
           + __builtin_shufflevector(a, b, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    v16 cd = __builtin_shufflevector(c, d, 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
           + __builtin_shufflevector(c, d, 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    v16 q = __builtin_shufflevector(ab, cd, 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)
          + __builtin_shufflevector(ab, cd, 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    v8 e = __builtin_shufflevector(q, q, 0, 1, 4, 5, 8, 9, 12, 13) + __builtin_shufflevector(q, q, 2, 3, 6, 7, 10, 11, 14, 15);
    return __builtin_shufflevector(e, e, 0, 2, 4, 6) + __builtin_shufflevector(e, e, 1, 3, 5, 7);
}

static inline float dot(const float *a, const float *b, int64_t n) {
    v16 acc = {0};
    int64_t k = 0;
    for (; k + 16 <= n; k += 16) acc += load16(a + k) * load16(b + k);
    float s = hsum(acc);
    for (; k < n; k++) s += a[k] * b[k];
    return s;
}

/* Rows of w ahead of the block being computed that its loop prefetches (into L2: a hint, which
 * never faults past the matrix's end). Issued one line per row per 16 k, spread over the whole
 * block's work, so the memory system stays busy while a batch computes from cache: prefetching
 * the next block in a burst left the reads idle for most of a 16-sequence block (measured on a
 * Zen 4 core: 33 -> 50 GFLOP/s at 16 sequences, 22 -> 27 GB/s at one). */
#define PREFETCH_ROWS 16

/* out[m][j] (+)= x[m] . w[j] for NB rows of w (nb of them real) and MB rows of x: each W vector
 * is loaded once for every x row, which makes a batch cost little more than one sequence. The
 * npf rows of w at pf are prefetched on the way. */
static inline __attribute__((always_inline)) void dot_block(
    const float *x, int64_t ldx, const int MB, const float *w, int64_t K, const int NB, int nb, float *out, int64_t ldo,
    int accumulate, const float *pf, int npf) {
    v16 acc[4][8];
    const float *wr[8];
    for (int j = 0; j < NB; j++) wr[j] = w + (j < nb ? j : 0) * K;
    for (int m = 0; m < MB; m++)
        for (int j = 0; j < NB; j++) acc[m][j] = (v16){0};
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        v16 wv[8];
        for (int j = 0; j < NB; j++) wv[j] = load16(wr[j] + k);
        for (int j = 0; j < npf; j++) __builtin_prefetch(pf + j * K + k, 0, 1);
        for (int m = 0; m < MB; m++) {
            v16 xv = load16(x + m * ldx + k);
            for (int j = 0; j < NB; j++) acc[m][j] += wv[j] * xv;
        }
    }
    for (int m = 0; m < MB; m++)
        for (int j0 = 0; j0 < NB; j0 += 4) {
            v4 sums = hsum4(acc[m][j0], acc[m][j0 + 1], acc[m][j0 + 2], acc[m][j0 + 3]);
            for (int j = j0; j < j0 + 4 && j < nb; j++) {
                float s = sums[j - j0];
                for (int64_t t = k; t < K; t++) s += x[m * ldx + t] * wr[j][t];
                float *o = out + m * ldo + j;
                *o = accumulate ? *o + s : s;
            }
        }
}

/* out rows b0..b1, columns [0, N) (+)= x (rows of K) @ w (N, K)^T, this thread's share of N. */
static void linear(const Part *p, const float *x, int64_t K, const float *w, int64_t N, float *out, int64_t ldo, int accumulate) {
    int64_t M = p->b1 - p->b0, lo, hi;
    x += p->b0 * K;
    out += p->b0 * ldo;
    if (M == 1) {
        share(p, N, 8, &lo, &hi);
        for (int64_t r = lo; r < hi; r += 8)
            dot_block(x, K, 1, w + r * K, K, 8, hi - r < 8 ? (int)(hi - r) : 8, out + r, ldo, accumulate,
                      w + (r + PREFETCH_ROWS) * K, 8);
        return;
    }
    share(p, N, 4, &lo, &hi);
    const int64_t per = (4 + (M + 3) / 4 - 1) / ((M + 3) / 4); /* rows each group of 4 sequences prefetches */
    for (int64_t r = lo; r < hi; r += 4) {
        int nb = hi - r < 4 ? (int)(hi - r) : 4;
        for (int64_t m = 0; m < M; m += 4) {
            const float *xm = x + m * K, *wr = w + r * K;
            int64_t first = m / 4 * per;
            const float *pf = w + (r + PREFETCH_ROWS + first) * K;
            int npf = first >= 4 ? 0 : (int)(first + per > 4 ? 4 - first : per);
            float *o = out + m * ldo + r;
            switch (M - m < 4 ? M - m : 4) {
                case 1: dot_block(xm, K, 1, wr, K, 4, nb, o, ldo, accumulate, pf, npf); break;
                case 2: dot_block(xm, K, 2, wr, K, 4, nb, o, ldo, accumulate, pf, npf); break;
                case 3: dot_block(xm, K, 3, wr, K, 4, nb, o, ldo, accumulate, pf, npf); break;
                default: dot_block(xm, K, 4, wr, K, 4, nb, o, ldo, accumulate, pf, npf); break;
            }
        }
    }
}

/* Rows of the sequences this thread owns: all of them when it works alone, a share in a team. */
static inline void my_rows(const Part *p, int64_t *lo, int64_t *hi) {
    if (p->nth == 1) {
        *lo = p->b0, *hi = p->b1;
    } else {
        share(p, p->b1 - p->b0, 1, lo, hi);
        *lo += p->b0, *hi += p->b0;
    }
}

static void rmsnorm(const Part *p, const float *x, const float *w, float eps, int64_t D, float *out) {
    int64_t lo, hi;
    my_rows(p, &lo, &hi);
    for (int64_t m = lo; m < hi; m++) {
        const float *xm = x + m * D;
        float r = 1.0f / sqrtf(dot(xm, xm, D) / (float)D + eps);
        for (int64_t d = 0; d < D; d++) out[m * D + d] = w[d] * (xm[d] * r);
    }
}

/* e^x, Cephes' single-precision polynomial (~1 ulp), branch-free so loops of it vectorize. */
static inline float exp_approx(float x) {
    x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    float n = rintf(x * 1.44269504088896341f);
    float r = x - n * 0.693359375f + n * 2.12194440e-4f;
    float q = 1.9875691500e-4f;
    q = q * r + 1.3981999507e-3f;
    q = q * r + 8.3334519073e-3f;
    q = q * r + 4.1665795894e-2f;
    q = q * r + 1.6666665459e-1f;
    q = q * r + 5.0000001201e-1f;
    q = q * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return q * scale;
}

static inline void rope(const float *x, const float *cos, const float *ssin, int64_t hd, float *out) {
    int64_t half = hd / 2;
    for (int64_t i = 0; i < hd; i++) out[i] = x[i] * cos[i] + x[(i + half) % hd] * ssin[i];
}

/* Rotary embedding on the new token's q and k, its k and v stored at its position, then
 * softmax(q k^T / sqrt(hd)) v over that sequence's keys 0..pos, grouped-query heads. */
static void attend(const Part *p, const Model *md, const Layer *ly, const Work *wk, const int64_t *pos, const int64_t *slot) {
    int64_t H = md->heads, KV = md->kv_heads, hd = md->head_dim, G = H / KV, cap = md->capacity;
    int64_t width = (H + 2 * KV) * hd, lo, hi;
    float scale = 1.0f / sqrtf((float)hd);
    if (p->nth == 1) {
        lo = p->b0 * KV, hi = p->b1 * KV;
    } else {
        share(p, (p->b1 - p->b0) * KV, 1, &lo, &hi);
        lo += p->b0 * KV, hi += p->b0 * KV;
    }
    for (int64_t task = lo; task < hi; task++) {
        int64_t b = task / KV, g = task % KV, at = pos[b];
        const float *cs = md->cos + at * hd, *sn = md->ssin + at * hd, *row = wk->qkv + b * width;
        float *kc = ly->k_cache + (slot[b] * KV + g) * cap * hd;
        float *vc = ly->v_cache + (slot[b] * KV + g) * cap * hd;
        rope(row + (H + g) * hd, cs, sn, hd, kc + at * hd);
        memcpy(vc + at * hd, row + (H + KV + g) * hd, hd * sizeof(float));
        for (int64_t h = g * G; h < (g + 1) * G; h++) {
            float q[512];
            rope(row + h * hd, cs, sn, hd, q);
            float *s = wk->scores + (b * H + h) * cap, top = -INFINITY, total = 0.0f;
            for (int64_t j = 0; j <= at; j++) {
                s[j] = dot(q, kc + j * hd, hd) * scale;
                top = s[j] > top ? s[j] : top;
            }
            for (int64_t j = 0; j <= at; j++) s[j] = exp_approx(s[j] - top);
            for (int64_t j = 0; j <= at; j++) total += s[j];
            float *o = wk->att + (b * H + h) * hd;
            for (int64_t d = 0; d < hd; d++) o[d] = 0.0f;
            for (int64_t j = 0; j <= at; j++)
                for (int64_t d = 0; d < hd; d++) o[d] += s[j] * vc[j * hd + d];
            for (int64_t d = 0; d < hd; d++) o[d] /= total;
        }
    }
}

static void silu_mul(const Part *p, const float *gate_up, int64_t I, float *out) {
    int64_t lo, hi;
    my_rows(p, &lo, &hi);
    for (int64_t b = lo; b < hi; b++)
        for (int64_t i = 0; i < I; i++) {
            float g = gate_up[b * 2 * I + i];
            out[b * I + i] = g / (1.0f + exp_approx(-g)) * gate_up[b * 2 * I + I + i];
        }
}

/* The whole step for the sequences of part p. */
static void forward(const Part *p, const Model *md, const Work *wk, const int64_t *token, const int64_t *pos,
                    const int64_t *slot, float *logits) {
    int64_t h = md->hidden, I = md->inter, H = md->heads, KV = md->kv_heads, hd = md->head_dim;
    int64_t width = (H + 2 * KV) * hd, lo, hi;
    my_rows(p, &lo, &hi);
    for (int64_t b = lo; b < hi; b++) memcpy(wk->x + b * h, md->embed + token[b] * h, h * sizeof(float));
    sync(p);
    for (int64_t l = 0; l < md->n_layers; l++) {
        const Layer *ly = md->layers + l;
        rmsnorm(p, wk->x, ly->input_norm, md->eps, h, wk->xn);
        sync(p);
        linear(p, wk->xn, h, ly->wq, H * hd, wk->qkv, width, 0);
        linear(p, wk->xn, h, ly->wk, KV * hd, wk->qkv + H * hd, width, 0);
        linear(p, wk->xn, h, ly->wv, KV * hd, wk->qkv + (H + KV) * hd, width, 0);
        sync(p);
        attend(p, md, ly, wk, pos, slot);
        sync(p);
        linear(p, wk->att, H * hd, ly->wo, h, wk->x, h, 1);
        sync(p);
        rmsnorm(p, wk->x, ly->post_norm, md->eps, h, wk->xn);
        sync(p);
        linear(p, wk->xn, h, ly->wgate, I, wk->gate_up, 2 * I, 0);
        linear(p, wk->xn, h, ly->wup, I, wk->gate_up + I, 2 * I, 0);
        sync(p);
        silu_mul(p, wk->gate_up, I, wk->act);
        sync(p);
        linear(p, wk->act, I, ly->wdown, h, wk->x, h, 1);
        sync(p);
    }
    rmsnorm(p, wk->x, md->final_norm, md->eps, h, wk->xn);
    sync(p);
    linear(p, wk->xn, h, md->lm_head, md->vocab, logits, md->vocab, 0);
}

/* Logits (n, vocab) for one new token of each of n sequences: token[b] at position pos[b] of
 * the sequence held in cache slot slot[b] (whose keys 0..pos[b]-1 are already cached), on
 * `threads` threads that split the sequences between them (by_sequence) or share every op. */
int shiptwo_decode_step(const Model *md, const Work *wk, int64_t n, const int64_t *token, const int64_t *pos,
                        const int64_t *slot, float *logits, int threads, int by_sequence) {
    if (md->head_dim > 512) return -1;
    if (by_sequence && n < threads) return -2;
    #pragma omp parallel num_threads(threads)
    {
        Part p = {0, n, 0, 1};
        #ifdef _OPENMP
        int tid = omp_get_thread_num(), nth = omp_get_num_threads();
        if (by_sequence)
            p.b0 = n * tid / nth, p.b1 = n * (tid + 1) / nth;
        else
            p.tid = tid, p.nth = nth;
        #endif
        forward(&p, md, wk, token, pos, slot, logits);
    }
    return 0;
}
