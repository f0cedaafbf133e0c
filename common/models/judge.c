// judge.c: the user classifier of doppel-validator (judge.h): a conv/BatchNorm/ReLU/pool trunk (or
// the older conv_in, DownEncoderBlock2D-style down blocks, GroupNorm + SiLU), global average pool,
// dropout + linear classifier, and a linear embedding head.
#include "judge.h"

#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "../cli/cli.h"
#include "../io/checkpoint.h"
#include "models.h"

#define JUDGE_EPS 1e-6f      // GroupNorm eps, as the VAE encoder's DownEncoderBlock2D
#define JUDGE_DROPOUT 0.1f   // before the classifier, training only (a config without "dropout")
#define JUDGE_DROPOUT_DEFAULT 0.3f  // new judges

// ---- configuration ----
int judge_default_groups(const int *block_out_channels, int n_blocks) {
    int lo = block_out_channels[0];
    for (int i = 1; i < n_blocks; i++) lo = block_out_channels[i] < lo ? block_out_channels[i] : lo;
    int g = lo / 4 < 32 ? lo / 4 : 32;
    for (; g > 1; g--) {
        int ok = 1;
        for (int i = 0; i < n_blocks; i++) ok &= block_out_channels[i] % g == 0;
        if (ok) return g;
    }
    return 1;
}

void judge_config_default(JudgeConfig *c, int channels, int resolution, int n_users, char **users) {
    memset(c, 0, sizeof(*c));
    static const int chans[] = {32, 64, 128, 128};
    c->channels = channels, c->resolution = resolution;
    c->n_blocks = 4;
    memcpy(c->block_out_channels, chans, sizeof(chans));
    c->layers_per_block = 1;
    c->norm_num_groups = judge_default_groups(c->block_out_channels, c->n_blocks);
    c->norm_eps = JUDGE_EPS, c->dropout = JUDGE_DROPOUT_DEFAULT;
    c->embedding_dim = JUDGE_EMBEDDING_DIM;
    c->block_type = JUDGE_CONV_BN;
    c->n_users = n_users, c->users = users;
}

const char *judge_block_type_name(JudgeBlockType t) { return t == JUDGE_CONV_BN ? "conv_bn" : "resnet"; }

int judge_block_type_parse(const char *name, JudgeBlockType *out) {
    if (!strcmp(name, "conv_bn")) *out = JUDGE_CONV_BN;
    else if (!strcmp(name, "resnet")) *out = JUDGE_RESNET;
    else return -1;
    return 0;
}

int judge_config_check(const JudgeConfig *c, char *err, size_t errlen) {
    if (c->block_type == JUDGE_CONV_BN && c->resolution >> c->n_blocks < 1)
        return errf(err, errlen, "%d conv_bn blocks halve a %dx%d image to nothing (at most %d blocks)", c->n_blocks,
                    c->resolution, c->resolution, 31 - __builtin_clz((unsigned)(c->resolution > 0 ? c->resolution : 1)));
    if (c->channels < 1 || c->channels > 64) return errf(err, errlen, "channels %d outside 1..64", c->channels);
    if (c->resolution < 1 || c->resolution > 65536) return errf(err, errlen, "resolution %d outside 1..65536", c->resolution);
    if (check_block_layout(c->n_blocks, c->block_out_channels, c->layers_per_block, c->norm_num_groups, err, errlen))
        return -1;
    if (!(c->norm_eps > 0 && c->norm_eps < 1)) return errf(err, errlen, "norm_eps %g outside (0, 1)", (double)c->norm_eps);
    if (!(c->dropout >= 0 && c->dropout < 1)) return errf(err, errlen, "dropout %g outside [0, 1)", (double)c->dropout);
    if (c->embedding_dim < 0 || c->embedding_dim > JUDGE_EMBEDDING_MAX)
        return errf(err, errlen, "embedding_dim %d outside 0..%d", c->embedding_dim, JUDGE_EMBEDDING_MAX);
    if (c->n_users < 1 || c->n_users > JUDGE_MAX_USERS)
        return errf(err, errlen, "%d users (1..%d supported)", c->n_users, JUDGE_MAX_USERS);
    for (int u = 0; u < c->n_users; u++) {
        if (!c->users || !c->users[u] || !*c->users[u] || strlen(c->users[u]) >= JUDGE_USER_NAME_MAX)
            return errf(err, errlen, "users[%d] must be a name of 1 to %d bytes", u, JUDGE_USER_NAME_MAX - 1);
        for (int v = 0; v < u; v++)
            if (!strcmp(c->users[u], c->users[v]))
                return errf(err, errlen, "user '%s' is listed twice (users[%d] and users[%d])", c->users[u], v, u);
    }
    return 0;
}

json_t *judge_config_to_json(const JudgeConfig *c) {
    json_t *boc = json_array(), *users = json_array();
    for (int i = 0; i < c->n_blocks; i++) json_array_append_new(boc, json_integer(c->block_out_channels[i]));
    for (int u = 0; u < c->n_users; u++) json_array_append_new(users, json_string(c->users[u]));
    return json_pack("{s:s, s:s, s:s, s:i, s:i, s:o, s:i, s:i, s:o, s:o, s:i, s:o}", "_class_name", JUDGE_CLASS_NAME,
                     "_doppel_version", DOPPEL_VERSION, "block_type", judge_block_type_name(c->block_type), "channels", c->channels, "resolution", c->resolution,
                     "block_out_channels", boc, "layers_per_block", c->layers_per_block, "norm_num_groups",
                     c->norm_num_groups, "norm_eps", config_float(c->norm_eps), "dropout", config_float(c->dropout), "embedding_dim", c->embedding_dim,
                     "users", users);
}

int judge_config_from_json(JudgeConfig *c, const json_t *j, char *err, size_t errlen) {
    memset(c, 0, sizeof(*c));
    if (!json_is_object(j)) return errf(err, errlen, "config.json: not a JSON object");
    json_t *cls = json_object_get(j, "_class_name");
    if (!json_is_string(cls) || strcmp(json_string_value(cls), JUDGE_CLASS_NAME))
        return errf(err, errlen, "config.json: _class_name is %s%s%s, expected %s: not a judge folder (train one with "
                    "doppel-validator train)", json_is_string(cls) ? "\"" : "",
                    json_is_string(cls) ? json_string_value(cls) : "missing", json_is_string(cls) ? "\"" : "",
                    JUDGE_CLASS_NAME);
    json_t *users = json_object_get(j, "users"), *bt = json_object_get(j, "block_type");
    c->block_type = JUDGE_RESNET;  // absent: older judges
    if (bt && (!json_is_string(bt) || judge_block_type_parse(json_string_value(bt), &c->block_type)))
        return errf(err, errlen, "config.json: block_type must be \"conv_bn\" or \"resnet\"");
    if (config_int_list(j, "block_out_channels", c->block_out_channels, &c->n_blocks, err, errlen) ||
        config_need(j, "channels", err, errlen) || config_int(j, "channels", 0, &c->channels, err, errlen) ||
        config_need(j, "resolution", err, errlen) || config_int(j, "resolution", 0, &c->resolution, err, errlen) ||
        config_int(j, "layers_per_block", 1, &c->layers_per_block, err, errlen) ||
        config_int(j, "norm_num_groups", judge_default_groups(c->block_out_channels, c->n_blocks), &c->norm_num_groups,
                   err, errlen) ||
        config_num(j, "norm_eps", JUDGE_EPS, &c->norm_eps, err, errlen) ||
        config_num(j, "dropout", JUDGE_DROPOUT, &c->dropout, err, errlen) ||
        config_int(j, "embedding_dim", 0, &c->embedding_dim, err, errlen))  // absent: a judge without the head
        return -1;
    if (!json_is_array(users) || json_array_size(users) < 1 || json_array_size(users) > JUDGE_MAX_USERS)
        return errf(err, errlen, "config.json: 'users' must be a list of 1 to %d user names", JUDGE_MAX_USERS);
    c->n_users = (int)json_array_size(users);
    c->users = xcalloc((size_t)c->n_users, sizeof(char *));
    for (int u = 0; u < c->n_users; u++) {
        json_t *v = json_array_get(users, (size_t)u);
        if (!json_is_string(v)) {
            judge_config_free(c);
            return errf(err, errlen, "config.json: 'users'[%d] must be a string", u);
        }
        c->users[u] = xstrdup(json_string_value(v));
    }
    char e[256];
    if (judge_config_check(c, e, sizeof(e))) {
        judge_config_free(c);
        return errf(err, errlen, "config.json: %s", e);
    }
    return 0;
}

void judge_config_free(JudgeConfig *c) {
    for (int u = 0; c->users && u < c->n_users; u++) free(c->users[u]);
    free(c->users);
    c->users = NULL;
    c->n_users = 0;
}

// ---- the network ----
void judge_build(JudgeNet *net, const JudgeConfig *cfg) {
    char e[256], name[PARAM_NAME_MAX];
    memset(net, 0, sizeof(*net));
    CHECK(judge_config_check(cfg, e, sizeof(e)) == 0, "judge_build: %s", e);
    net->cfg = *cfg;
    net->cfg.users = xcalloc((size_t)cfg->n_users, sizeof(char *));
    for (int u = 0; u < cfg->n_users; u++) net->cfg.users[u] = xstrdup(cfg->users[u]);
    const JudgeConfig *c = &net->cfg;
    ParamSet *ps = &net->ps;
    BlockConfig bc = {.temb_channels = 0, .groups = c->norm_num_groups, .eps = c->norm_eps,
                      .downsample_padding = JUDGE_DOWNSAMPLE_PADDING, .dropout = 0.0f};
    int out = c->block_out_channels[0];
    if (c->block_type == JUDGE_CONV_BN) {
        for (int i = 0, in = c->channels; i < c->n_blocks; i++, in = out) {
            out = c->block_out_channels[i];
            snprintf(name, sizeof(name), "blocks.%d.conv", i);
            conv2d_init(&net->blocks[i].conv, ps, name, in, out, 3, 1, 1);
            snprintf(name, sizeof(name), "blocks.%d.norm", i);
            batchnorm_init(&net->blocks[i].norm, ps, name, out);
        }
    } else {
        conv2d_init(&net->conv_in, ps, "conv_in", c->channels, c->block_out_channels[0], 3, 1, 1);
        for (int i = 0; i < c->n_blocks; i++) {
            int in = out;
            out = c->block_out_channels[i];
            snprintf(name, sizeof(name), "down_blocks.%d", i);
            down_block_init(&net->down[i], ps, name, "DownEncoderBlock2D", in, out, c->layers_per_block,
                            i != c->n_blocks - 1, &bc);
        }
        groupnorm_init(&net->conv_norm_out, ps, "conv_norm_out", out, c->norm_num_groups, c->norm_eps);
    }
    linear_init(&net->classifier, ps, "classifier", out, c->n_users);
    if (c->embedding_dim) linear_init(&net->embedding, ps, "embedding", out, c->embedding_dim);
    params_allocate(ps);
}

void judge_init(JudgeNet *net, Rng *rng) { params_init(&net->ps, rng); }

void judge_free(JudgeNet *net) {
    if (net->ps.info) params_free(&net->ps);
    judge_config_free(&net->cfg);
    json_decref(net->extra);
    memset(net, 0, sizeof(*net));
}

int judge_user_index(const JudgeNet *net, const char *name) {
    for (int u = 0; u < net->cfg.n_users; u++)
        if (!strcmp(net->cfg.users[u], name)) return u;
    return -1;
}

// conv -> BatchNorm -> ReLU -> 2x2 average pool: [N, C, H, W] -> [N, OC, H/2, W/2]
static Tensor conv_bn_forward(Ctx *ctx, ConvBnBlock *b, Tensor x) {
    Tensor h = conv2d_layer_forward(ctx, &b->conv, x);                   // [N, OC, H, W]
    b->n_out = batchnorm_layer_forward(ctx, &b->norm, h);
    b->act = ctx_tensor(ctx, h.N, h.C, h.H, h.W);
    OP(ctx, leaky_relu_forward, b->act.d, b->n_out.d, tensor_numel(h), 0.0f);  // ReLU
    Tensor y = ctx_tensor(ctx, h.N, h.C, h.H / 2, h.W / 2);              // [N, OC, H/2, W/2]
    OP(ctx, avgpool2x2_forward, y.d, b->act.d, h.N, h.C, h.H, h.W);
    return y;
}

static Tensor conv_bn_backward(Ctx *ctx, ConvBnBlock *b, Tensor dy) {
    Tensor a = b->act, da = ctx_zeros(ctx, a.N, a.C, a.H, a.W), dn = ctx_zeros(ctx, a.N, a.C, a.H, a.W);
    OP(ctx, avgpool2x2_backward, da.d, dy.d, a.N, a.C, a.H, a.W);
    OP(ctx, leaky_relu_backward, dn.d, da.d, b->n_out.d, tensor_numel(a), 0.0f);
    return conv2d_layer_backward(ctx, &b->conv, batchnorm_layer_backward(ctx, &b->norm, dn));
}

float *judge_forward(Ctx *ctx, JudgeNet *net, Tensor x) {
    CHECK(ctx->ps->info == net->ps.info, "judge_forward: the context's ParamSet is not the judge's (or its mirror)");
    const JudgeConfig *c = &net->cfg;
    Tensor h;
    if (c->block_type == JUDGE_CONV_BN) {
        Tensor outs[MAX_BLOCKS];                                            // [N, Ci, H/2^(i+1), ..]
        net->pooled_in = h = outs[judge_block_outputs(ctx, net, x, outs) - 1];  // [N, F, h, w]
    } else {
        h = conv2d_layer_forward(ctx, &net->conv_in, x);                    // [N, C0, H, W]
        for (int i = 0; i < c->n_blocks; i++)
            h = down_block_forward(ctx, &net->down[i], h, NULL, NULL);      // [N, Ci, H/2^(i+1), ..] (last: no halving)
        net->n_out = groupnorm_layer_forward(ctx, &net->conv_norm_out, h);  // [N, F, h, w]
        net->pooled_in = silu_tensor_forward(ctx, net->n_out);              // [N, F, h, w]
    }
    int N = x.N, F = h.C;
    size_t NF = (size_t)N * F;
    net->N = N;
    net->features = arena_floats(ctx->arena, NF);                       // (N, F)
    OP(ctx, avgpool_forward, net->features, net->pooled_in.d, N, F, h.H * h.W);
    net->dropped = arena_floats(ctx->arena, NF);                        // (N, F)
    net->drop_mask = arena_floats(ctx->arena, NF);
    OP(ctx, dropout_forward, net->dropped, net->drop_mask, net->features, NF, ctx->train ? c->dropout : 0.0f, ctx->rng);
    net->emb = c->embedding_dim ? linear_layer_forward(ctx, &net->embedding, net->features, N) : NULL;  // (N, D)
    return linear_layer_forward(ctx, &net->classifier, net->dropped, N);  // (N, K)
}

Tensor judge_backward(Ctx *ctx, JudgeNet *net, const float *dlogits, const float *demb) {
    CHECK(ctx->ps->info == net->ps.info, "judge_backward: the context's ParamSet is not the judge's (or its mirror)");
    Tensor a = net->pooled_in;
    int N = net->N, F = a.C;
    size_t NF = (size_t)N * F;
    float *ddrop = linear_layer_backward(ctx, &net->classifier, dlogits);  // (N, F)
    float *dfeat = arena_zeros(ctx->arena, NF);                            // (N, F)
    OP(ctx, dropout_backward, dfeat, ddrop, net->drop_mask, NF, ctx->train ? net->cfg.dropout : 0.0f);
    if (demb && net->cfg.embedding_dim) OP(ctx, accumulate, dfeat, linear_layer_backward(ctx, &net->embedding, demb), NF);
    Tensor da = ctx_zeros(ctx, a.N, a.C, a.H, a.W);                        // [N, F, h, w]
    OP(ctx, avgpool_backward, da.d, dfeat, N, F, a.H * a.W);
    if (net->cfg.block_type == JUDGE_CONV_BN) {
        for (int i = net->cfg.n_blocks - 1; i >= 0; i--) da = conv_bn_backward(ctx, &net->blocks[i], da);
        return da;                                                         // [N, C, H, W]
    }
    Tensor g = silu_tensor_backward(ctx, da, net->n_out);
    g = groupnorm_layer_backward(ctx, &net->conv_norm_out, g);
    for (int i = net->cfg.n_blocks - 1; i >= 0; i--) g = down_block_backward(ctx, &net->down[i], g, NULL, NULL);
    return conv2d_layer_backward(ctx, &net->conv_in, g);                   // [N, C, H, W]
}

int judge_block_outputs(Ctx *ctx, JudgeNet *net, Tensor x, Tensor *outs) {
    CHECK(net->cfg.block_type == JUDGE_CONV_BN, "judge_block_outputs: a conv_bn judge is needed (this one is resnet)");
    CHECK(ctx->ps->info == net->ps.info, "judge_block_outputs: the context's ParamSet is not the judge's (or its mirror)");
    Tensor h = x;
    for (int i = 0; i < net->cfg.n_blocks; i++) outs[i] = h = conv_bn_forward(ctx, &net->blocks[i], h);
    return net->cfg.n_blocks;
}

Tensor judge_block_outputs_backward(Ctx *ctx, JudgeNet *net, const Tensor *douts) {
    CHECK(ctx->ps->info == net->ps.info, "judge_block_outputs_backward: the context's ParamSet is not the judge's");
    int L = net->cfg.n_blocks;
    Tensor last = net->blocks[L - 1].act, g = ctx_zeros(ctx, last.N, last.C, last.H / 2, last.W / 2);
    for (int i = L - 1; i >= 0; i--) {
        if (douts[i].d) OP(ctx, accumulate, g.d, douts[i].d, tensor_numel(g));
        g = conv_bn_backward(ctx, &net->blocks[i], g);  // block i's input gradient = block i-1's output gradient
    }
    return g;
}

// ---- folders ----
int judge_folder_load(JudgeNet *net, const char *dir, char *err, size_t errlen) {
    memset(net, 0, sizeof(*net));
    char e[1024];
    json_t *j = checkpoint_load_config(dir, e, sizeof(e));
    if (!j) return errf(err, errlen, "cannot load the judge: %s", e);
    JudgeConfig c;
    if (judge_config_from_json(&c, j, e, sizeof(e))) {
        json_decref(j);
        return errf(err, errlen, "cannot load the judge %s: %s", dir, e);
    }
    judge_build(net, &c);
    judge_config_free(&c);
    if (checkpoint_load_model(dir, &net->ps, e, sizeof(e))) {
        json_decref(j);
        judge_free(net);
        return errf(err, errlen, "cannot load the judge: %s", e);
    }
    // whatever is not the architecture is kept for the next save
    json_t *arch = judge_config_to_json(&net->cfg);
    const char *key;
    json_t *v;
    json_object_foreach(arch, key, v) json_object_del(j, key);
    json_decref(arch);
    net->extra = j;
    return 0;
}

int judge_folder_save(const JudgeNet *net, const char *dir, char *err, size_t errlen) {
    json_t *cfg = json_object();
    if (net->extra) json_object_update(cfg, net->extra);
    json_t *arch = judge_config_to_json(&net->cfg);
    json_object_update(cfg, arch);  // the architecture wins over extra keys
    json_decref(arch);
    int rc = checkpoint_save_model(dir, &net->ps, net->ps.data, cfg, err, errlen);
    json_decref(cfg);
    return rc;
}
