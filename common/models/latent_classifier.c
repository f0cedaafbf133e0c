// latent_classifier.c: the time-conditioned user classifier on noisy latents (latent_classifier.h):
// UNet2DModel's time embedding and encoder, GroupNorm + SiLU, global average pool, linear head.
#include "latent_classifier.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "../cli/cli.h"
#include "../io/checkpoint.h"
#include "unet_folder.h"

// ---- configuration ----
int latent_classifier_preset(const char *name, int in_channels, int sample_size, int n_users, LatentClassifierConfig *c) {
    UNetConfig u;  // the UNet preset of the same name: its encoder is the classifier's
    memset(c, 0, sizeof(*c));
    if (preset_unet(name, n_users, &u)) return -1;
    c->in_channels = in_channels, c->sample_size = sample_size, c->n_users = n_users;
    c->n_blocks = u.n_blocks;
    memcpy(c->block_out_channels, u.block_out_channels, sizeof(c->block_out_channels));
    c->layers_per_block = u.layers_per_block, c->norm_num_groups = u.norm_num_groups;
    c->norm_eps = u.norm_eps, c->freq_shift = u.freq_shift, c->flip_sin_to_cos = u.flip_sin_to_cos;
    return 0;
}

int latent_classifier_config_check(const LatentClassifierConfig *c, char *err, size_t errlen) {
    if (c->in_channels < 1 || c->in_channels > 64) return errf(err, errlen, "in_channels %d outside 1..64", c->in_channels);
    if (c->sample_size < 1 || c->sample_size > 4096) return errf(err, errlen, "sample_size %d outside 1..4096", c->sample_size);
    if (check_block_layout(c->n_blocks, c->block_out_channels, c->layers_per_block, c->norm_num_groups, err, errlen))
        return -1;
    if (c->block_out_channels[0] % 2) return errf(err, errlen, "block_out_channels[0] = %d must be even (sin/cos pairs)",
                                                  c->block_out_channels[0]);
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) return errf(err, errlen, "norm_eps %g outside (0, 1)", (double)c->norm_eps);
    if (!isfinite(c->freq_shift)) return errf(err, errlen, "freq_shift must be finite");
    if (c->n_users < 1 || c->n_users > LATENT_CLASSIFIER_MAX_USERS)
        return errf(err, errlen, "%d users (1..%d supported)", c->n_users, LATENT_CLASSIFIER_MAX_USERS);
    return 0;
}

// the architecture, users and schedule keys (what load reads and save writes)
static json_t *config_to_json(const LatentClassifier *m) {
    const LatentClassifierConfig *c = &m->cfg;
    json_t *boc = json_array();
    for (int i = 0; i < c->n_blocks; i++) json_array_append_new(boc, json_integer(c->block_out_channels[i]));
    json_t *j = json_pack("{s:s, s:s, s:i, s:i, s:o, s:i, s:i, s:o, s:b, s:o, s:i}", "_class_name",
                          LATENT_CLASSIFIER_CLASS_NAME, "_doppel_version", DOPPEL_VERSION, "in_channels", c->in_channels,
                          "sample_size", c->sample_size, "block_out_channels", boc, "layers_per_block", c->layers_per_block,
                          "norm_num_groups", c->norm_num_groups, "norm_eps", config_float(c->norm_eps), "flip_sin_to_cos",
                          c->flip_sin_to_cos, "freq_shift", config_float(c->freq_shift), "num_users", c->n_users);
    if (m->users) json_object_set(j, "users", m->users);
    schedule_to_json(j, &m->sched);
    return j;
}

// errors say "config.json: ..." (the shared readers' style)
static int config_from_json(LatentClassifierConfig *c, NoiseSchedule *s, json_t **users, const json_t *j, char *err,
                            size_t errlen) {
    memset(c, 0, sizeof(*c));
    *users = NULL;
    if (!json_is_object(j)) return errf(err, errlen, "config.json: not a JSON object");
    json_t *cls = json_object_get(j, "_class_name");
    if (!json_is_string(cls) || strcmp(json_string_value(cls), LATENT_CLASSIFIER_CLASS_NAME))
        return errf(err, errlen, "config.json: _class_name is %s, expected %s: not a latent classifier (train one with "
                    "doppel-diffuser train-classifier)", json_is_string(cls) ? json_string_value(cls) : "missing",
                    LATENT_CLASSIFIER_CLASS_NAME);
    json_t *flip = json_object_get(j, "flip_sin_to_cos");
    if (config_int_list(j, "block_out_channels", c->block_out_channels, &c->n_blocks, err, errlen)) return -1;
    if (!json_is_boolean(flip)) return errf(err, errlen, "config.json: 'flip_sin_to_cos' must be true or false");
    c->flip_sin_to_cos = json_is_true(flip);
    const char *required[] = {"in_channels", "sample_size", "layers_per_block", "norm_num_groups", "num_users", "norm_eps",
                          "freq_shift"};
    for (int k = 0; k < 7; k++)
        if (config_need(j, required[k], err, errlen)) return -1;
    char e[512];
    if (config_int(j, "in_channels", 0, &c->in_channels, err, errlen) || config_int(j, "sample_size", 0, &c->sample_size, err, errlen) ||
        config_int(j, "layers_per_block", 0, &c->layers_per_block, err, errlen) ||
        config_int(j, "norm_num_groups", 0, &c->norm_num_groups, err, errlen) ||
        config_int(j, "num_users", 0, &c->n_users, err, errlen) || config_num(j, "norm_eps", 0, &c->norm_eps, err, errlen) ||
        config_num(j, "freq_shift", 0, &c->freq_shift, err, errlen))
        return -1;
    if (latent_classifier_config_check(c, e, sizeof(e)) || schedule_from_json(s, j, e, sizeof(e)))
        return errf(err, errlen, "config.json: %s", e);
    json_t *u = json_object_get(j, "users");
    if (u && !json_is_null(u)) {
        if (!json_is_array(u) || json_array_size(u) != (size_t)c->n_users)
            return errf(err, errlen, "config.json: 'users' must list num_users = %d names", c->n_users);
        for (size_t i = 0; i < json_array_size(u); i++)
            if (!json_is_string(json_array_get(u, i))) return errf(err, errlen, "config.json: 'users'[%zu] must be a string", i);
        *users = json_incref(u);
    }
    return 0;
}

// ---- the network ----
void latent_classifier_build(LatentClassifier *m, const LatentClassifierConfig *cfg, const NoiseSchedule *sched,
                             json_t *users) {
    char e[256], name[PARAM_NAME_MAX];
    memset(m, 0, sizeof(*m));
    CHECK(latent_classifier_config_check(cfg, e, sizeof(e)) == 0, "latent_classifier_build: %s", e);
    m->cfg = *cfg;
    m->sched = *sched;
    m->users = json_incref(users);
    const LatentClassifierConfig *c = &m->cfg;
    ParamSet *ps = &m->ps;
    int C0 = c->block_out_channels[0];
    m->time_embed_dim = 4 * C0;
    timestep_embedding_init(&m->time_embedding, ps, "time_embedding", C0, m->time_embed_dim);
    conv2d_init(&m->conv_in, ps, "conv_in", c->in_channels, C0, 3, 1, 1);
    BlockConfig bc = {.temb_channels = m->time_embed_dim, .groups = c->norm_num_groups, .eps = c->norm_eps,
                      .downsample_padding = 1, .dropout = 0.0f};
    int out = C0;
    for (int i = 0; i < c->n_blocks; i++) {
        int in = out;
        out = c->block_out_channels[i];
        snprintf(name, sizeof(name), "down_blocks.%d", i);
        down_block_init(&m->down[i], ps, name, "DownBlock2D", in, out, c->layers_per_block, i != c->n_blocks - 1, &bc);
    }
    groupnorm_init(&m->conv_norm_out, ps, "conv_norm_out", out, c->norm_num_groups, c->norm_eps);
    linear_init(&m->classifier, ps, "classifier", out, c->n_users);
    params_allocate(ps);
}

void latent_classifier_free(LatentClassifier *m) {
    if (m->ps.info) params_free(&m->ps);
    json_decref(m->users);
    json_decref(m->extra);
    memset(m, 0, sizeof(*m));
}

float *latent_classifier_forward(Ctx *ctx, LatentClassifier *m, Tensor x, const float *timesteps) {
    const LatentClassifierConfig *c = &m->cfg;
    CHECK(ctx->ps == &m->ps, "latent_classifier_forward: the context's ParamSet is not the classifier's");
    CHECK(x.C == c->in_channels, "latent classifier: input has %d channels, the model takes %d", x.C, c->in_channels);
    int N = x.N, C0 = c->block_out_channels[0];
    float *t_emb = arena_floats(ctx->arena, (size_t)N * C0);                               // (N, C0)
    timestep_embedding_forward(t_emb, timesteps, N, C0, c->flip_sin_to_cos, c->freq_shift, 1.0f, 10000.0f);
    m->emb = timestep_embedding_block_forward(ctx, &m->time_embedding, t_emb, N);          // (N, 4 C0)
    Tensor h = conv2d_layer_forward(ctx, &m->conv_in, x);                                  // [N, C0, h, w]
    for (int i = 0; i < c->n_blocks; i++) h = down_block_forward(ctx, &m->down[i], h, m->emb, NULL);  // [N, Ci, ..]
    m->n_out = groupnorm_layer_forward(ctx, &m->conv_norm_out, h);                         // [N, F, h', w']
    m->act = silu_tensor_forward(ctx, m->n_out);                                           // [N, F, h', w']
    m->N = N;
    m->pooled = arena_floats(ctx->arena, (size_t)N * h.C);                                 // (N, F)
    avgpool_forward(m->pooled, m->act.d, N, h.C, h.H * h.W);
    return linear_layer_forward(ctx, &m->classifier, m->pooled, N);                        // (N, K)
}

Tensor latent_classifier_backward(Ctx *ctx, LatentClassifier *m, const float *dlogits) {
    CHECK(ctx->ps == &m->ps, "latent_classifier_backward: the context's ParamSet is not the classifier's");
    Tensor a = m->act;
    int N = m->N;
    float *dpooled = linear_layer_backward(ctx, &m->classifier, dlogits);  // (N, F)
    Tensor da = ctx_zeros(ctx, a.N, a.C, a.H, a.W);                        // [N, F, h', w']
    avgpool_backward(da.d, dpooled, N, a.C, a.H * a.W);
    Tensor g = silu_tensor_backward(ctx, da, m->n_out);
    g = groupnorm_layer_backward(ctx, &m->conv_norm_out, g);
    float *demb = arena_zeros(ctx->arena, (size_t)N * m->time_embed_dim);  // (N, 4 C0), from every resnet
    for (int i = m->cfg.n_blocks - 1; i >= 0; i--) g = down_block_backward(ctx, &m->down[i], g, NULL, demb);
    Tensor dx = conv2d_layer_backward(ctx, &m->conv_in, g);               // [N, C, h, w]
    timestep_embedding_block_backward(ctx, &m->time_embedding, demb);    // timesteps take no gradient
    return dx;
}

// softmax of one row of K logits into p (max subtracted, sum in double)
static void softmax_row(float *p, const float *z, int K) {
    float mx = z[0];
    for (int k = 1; k < K; k++) mx = z[k] > mx ? z[k] : mx;
    double sum = 0;
    for (int k = 0; k < K; k++) sum += p[k] = expf(z[k] - mx);
    for (int k = 0; k < K; k++) p[k] = (float)(p[k] / sum);
}

static int argmax(const float *z, int K) {
    int best = 0;
    for (int k = 1; k < K; k++) best = z[k] > z[best] ? k : best;
    return best;
}

void latent_classifier_log_prob_grad(Ctx *ctx, LatentClassifier *m, Tensor x, const float *timesteps, const int32_t *y,
                                     float *grad, float *p_y) {
    int N = x.N, K = m->cfg.n_users;
    float *logits = latent_classifier_forward(ctx, m, x, timesteps);  // (N, K)
    float *p = arena_floats(ctx->arena, (size_t)K);                   // (K)
    float *dlogits = arena_zeros(ctx->arena, (size_t)N * K);          // (N, K)
    // log softmax(z)[y] = z_y - logsumexp(z), so d/dz_k = [k == y] - softmax(z)_k
    for (int n = 0; n < N; n++) {
        int known = y[n] >= 0 && y[n] < K;
        softmax_row(p, logits + (size_t)n * K, K);
        for (int k = 0; known && k < K; k++) dlogits[(size_t)n * K + k] = (k == y[n]) - p[k];
        if (p_y) p_y[n] = known ? p[y[n]] : 0.0f;
    }
    Tensor g = latent_classifier_backward(ctx, m, dlogits);
    memcpy(grad, g.d, tensor_numel(g) * sizeof(float));
}

float latent_classifier_train_step(Ctx *ctx, LatentClassifier *m, Tensor x0, const int32_t *labels, float scale,
                                   int *correct) {
    const NoiseSchedule *s = &m->sched;
    int N = x0.N, K = m->cfg.n_users;
    size_t per = (size_t)x0.C * x0.H * x0.W;
    int32_t *t = arena_alloc(ctx->arena, (size_t)N * sizeof(int32_t));  // (N)
    float *tf = arena_floats(ctx->arena, (size_t)N);                    // (N)
    for (int n = 0; n < N; n++) {
        CHECK(labels[n] >= 0 && labels[n] < K, "latent classifier: label %d outside 0..%d", labels[n], K - 1);
        t[n] = (int32_t)rng_below(ctx->rng, (uint32_t)s->T);
        tf[n] = (float)t[n];
    }
    Tensor noise = ctx_tensor(ctx, x0.N, x0.C, x0.H, x0.W), xt = ctx_tensor(ctx, x0.N, x0.C, x0.H, x0.W);
    rng_fill_normal(ctx->rng, noise.d, (long)tensor_numel(noise), 0, 1);
    schedule_add_noise(s, xt.d, x0.d, noise.d, t, N, per);              // x_t = sqrt(ac) x0 + sqrt(1-ac) eps
    float *logits = latent_classifier_forward(ctx, m, xt, tf);          // (N, K)
    float *probs = arena_floats(ctx->arena, (size_t)N * K);             // (N, K)
    float loss = cross_entropy_forward(probs, logits, labels, N, K);
    *correct = 0;
    for (int n = 0; n < N; n++) *correct += argmax(logits + (size_t)n * K, K) == labels[n];
    float *dlogits = arena_zeros(ctx->arena, (size_t)N * K);            // (N, K)
    cross_entropy_backward(dlogits, probs, labels, N, K, scale);
    latent_classifier_backward(ctx, m, dlogits);
    return loss;
}

double latent_classifier_accuracy(Ctx *ctx, LatentClassifier *m, const float *x0, const int32_t *labels, int64_t n, int t,
                                  int B, uint64_t seed) {
    const LatentClassifierConfig *c = &m->cfg;
    int C = c->in_channels, H = c->sample_size, K = c->n_users;
    size_t per = (size_t)C * H * H;
    Rng r;
    rng_seed(&r, seed);
    int train = ctx->train;
    ctx->train = 0;
    int64_t hits = 0;
    for (int64_t n0 = 0; n0 < n; n0 += B) {
        int b = (int)(n - n0 < B ? n - n0 : B);
        arena_reset(ctx->arena);
        Tensor noise = ctx_tensor(ctx, b, C, H, H), xt = ctx_tensor(ctx, b, C, H, H);  // [b, C, H, H]
        int32_t *ts = arena_alloc(ctx->arena, (size_t)b * sizeof(int32_t));
        float *tf = arena_floats(ctx->arena, (size_t)b);
        for (int i = 0; i < b; i++) ts[i] = t, tf[i] = (float)t;
        rng_fill_normal(&r, noise.d, (long)tensor_numel(noise), 0, 1);
        schedule_add_noise(&m->sched, xt.d, x0 + n0 * per, noise.d, ts, b, per);
        float *logits = latent_classifier_forward(ctx, m, xt, tf);                     // (b, K)
        for (int i = 0; i < b; i++) hits += argmax(logits + (size_t)i * K, K) == labels[n0 + i];
    }
    ctx->train = train;
    return n > 0 ? (double)hits / (double)n : 0.0;
}

// ---- folders ----
int latent_classifier_load(LatentClassifier *m, const char *dir, char *err, size_t errlen) {
    memset(m, 0, sizeof(*m));
    char e[1024];
    json_t *j = checkpoint_load_config(dir, e, sizeof(e));
    if (!j) return errf(err, errlen, "cannot load the latent classifier: %s", e);
    LatentClassifierConfig c;
    NoiseSchedule *s = xmalloc(sizeof(NoiseSchedule));  // 32 KB: not on the stack
    json_t *users;
    if (config_from_json(&c, s, &users, j, e, sizeof(e))) {
        json_decref(j), free(s);
        return errf(err, errlen, "cannot load the latent classifier %s: %s", dir, e);
    }
    latent_classifier_build(m, &c, s, users);
    json_decref(users), free(s);
    if (checkpoint_load_model(dir, &m->ps, e, sizeof(e))) {
        json_decref(j);
        latent_classifier_free(m);
        return errf(err, errlen, "cannot load the latent classifier: %s", e);
    }
    json_t *arch = config_to_json(m);  // whatever is not the architecture is kept for the next save
    const char *key;
    json_t *v;
    json_object_foreach(arch, key, v) json_object_del(j, key);
    json_decref(arch);
    m->extra = j;
    return 0;
}

int latent_classifier_save(const LatentClassifier *m, const char *dir, char *err, size_t errlen) {
    json_t *cfg = json_object();
    if (m->extra) json_object_update(cfg, m->extra);
    json_t *arch = config_to_json(m);
    json_object_update(cfg, arch);  // the architecture wins over extra keys
    json_decref(arch);
    int rc = checkpoint_save_model(dir, &m->ps, m->ps.data, cfg, err, errlen);
    json_decref(cfg);
    return rc;
}

static void schedule_text(char *buf, size_t n, const NoiseSchedule *s) {
    if (s->beta_schedule == BETA_SQUAREDCOS_CAP_V2) snprintf(buf, n, "%s, T = %d", beta_schedule_name(s->beta_schedule), s->T);
    else snprintf(buf, n, "%s %g..%g, T = %d", beta_schedule_name(s->beta_schedule), (double)s->beta_start, (double)s->beta_end, s->T);
}

int latent_classifier_fits_unet(const LatentClassifier *m, const UNetConfig *uc, const json_t *unet_users,
                                const NoiseSchedule *unet_sched, char *err, size_t errlen) {
    const LatentClassifierConfig *c = &m->cfg;
    int U = uc->num_class_embeds - 1;
    if (c->in_channels != uc->in_channels)
        return errf(err, errlen, "the classifier takes %d latent channels but the UNet makes %d", c->in_channels, uc->in_channels);
    if (c->sample_size != uc->sample_size)
        return errf(err, errlen, "the classifier was trained on %dx%d latents but the UNet makes %dx%d", c->sample_size,
                    c->sample_size, uc->sample_size, uc->sample_size);
    if (c->n_users != U)
        return errf(err, errlen, "the classifier knows %d users but the UNet has %d", c->n_users, U);
    for (int i = 0; json_is_array(m->users) && json_is_array(unet_users) && i < U; i++) {
        const char *a = json_string_value(json_array_get(m->users, (size_t)i));
        const char *b = json_string_value(json_array_get(unet_users, (size_t)i));
        if (a && b && strcmp(a, b)) return errf(err, errlen, "user %d is '%s' for the classifier but '%s' for the UNet", i, a, b);
    }
    const NoiseSchedule *s = &m->sched;
    if (s->T != unet_sched->T || memcmp(s->alphas_cumprod, unet_sched->alphas_cumprod, (size_t)s->T * sizeof(float))) {
        char a[128], b[128];
        schedule_text(a, sizeof(a), s), schedule_text(b, sizeof(b), unet_sched);
        return errf(err, errlen, "the classifier was trained under the noise schedule %s but the UNet's is %s (train it "
                    "with --unet)", a, b);
    }
    return 0;
}
