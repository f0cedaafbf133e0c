// config.c: diffusers config.json <-> VaeConfig / UNetConfig, and doppel's presets (DESIGN.md).
// Configurations doppel cannot run are refused with the key and value, never silently changed.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../check.h"
#include "models.h"

#define DIFFUSERS_VERSION "0.28.2"

json_t *config_float(float f) {
    char buf[32];
    for (int p = 6; p <= 9; p++) {
        snprintf(buf, sizeof(buf), "%.*g", p, (double)f);
        if ((float)strtod(buf, NULL) == f) break;
    }
    return json_real(strtod(buf, NULL));
}

static json_t *int_array(const int *v, int n) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

static json_t *type_array(const char *with, const char *without, const int *flags, int n, int reverse) {
    json_t *a = json_array();
    for (int i = 0; i < n; i++) json_array_append_new(a, json_string(flags[reverse ? n - 1 - i : i] ? with : without));
    return a;
}

// ---- readers that say which key is wrong ----
int config_need(const json_t *j, const char *key, char *err, size_t errlen) {
    json_t *v = json_object_get(j, key);
    return v && !json_is_null(v) ? 0 : errf(err, errlen, "config.json: '%s' is missing", key);
}

int config_int(const json_t *j, const char *key, int def, int *out, char *err, size_t errlen) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) return *out = def, 0;
    if (!json_is_integer(v) || json_integer_value(v) < -(1 << 30) || json_integer_value(v) > (1 << 30))
        return errf(err, errlen, "config.json: '%s' must be an integer", key);
    *out = (int)json_integer_value(v);
    return 0;
}

int config_num(const json_t *j, const char *key, float def, float *out, char *err, size_t errlen) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) return *out = def, 0;
    if (!json_is_number(v)) return errf(err, errlen, "config.json: '%s' must be a number", key);
    *out = (float)json_number_value(v);
    return 0;
}

static int get_bool(const json_t *j, const char *key, int def, int *out, char *err, size_t errlen) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) return *out = def, 0;
    if (!json_is_boolean(v)) return errf(err, errlen, "config.json: '%s' must be true or false", key);
    *out = json_is_true(v);
    return 0;
}

static int expect_str(const json_t *j, const char *key, const char *want, char *err, size_t errlen) {
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v) || strcmp(json_string_value(v), want))
        return errf(err, errlen, "config.json: '%s' must be \"%s\" (doppel supports only that)", key, want);
    return 0;
}

static int expect_null(const json_t *j, const char *key, char *err, size_t errlen) {
    json_t *v = json_object_get(j, key);
    if (v && !json_is_null(v)) return errf(err, errlen, "config.json: '%s' is set; doppel supports only null", key);
    return 0;
}

int config_int_list(const json_t *j, const char *key, int *out, int *n, char *err, size_t errlen) {
    json_t *a = json_object_get(j, key);
    if (!json_is_array(a) || json_array_size(a) < 1 || json_array_size(a) > MAX_BLOCKS)
        return errf(err, errlen, "config.json: '%s' must be a list of 1 to %d integers", key, MAX_BLOCKS);
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *v = json_array_get(a, i);
        if (!json_is_integer(v) || json_integer_value(v) <= 0 || json_integer_value(v) > 65536)
            return errf(err, errlen, "config.json: '%s'[%zu] must be a positive integer", key, i);
        out[i] = (int)json_integer_value(v);
    }
    *n = (int)json_array_size(a);
    return 0;
}

// block type list -> flags (1 = the attention variant); reverse for up blocks (listed top first)
static int get_types(const json_t *j, const char *key, int n, const char *with, const char *without, int *flags,
                     int reverse, char *err, size_t errlen) {
    json_t *a = json_object_get(j, key);
    if (!json_is_array(a) || (int)json_array_size(a) != n)
        return errf(err, errlen, "config.json: '%s' must list %d block types (one per block_out_channels)", key, n);
    for (int i = 0; i < n; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        int f;
        if (s && !strcmp(s, with)) f = 1;
        else if (s && !strcmp(s, without)) f = 0;
        else return errf(err, errlen, "config.json: '%s'[%d] = %s; doppel supports %s and %s", key, i, s ? s : "?", with, without);
        int idx = reverse ? n - 1 - i : i;
        if (flags) {
            if (reverse && flags[idx] != f)
                return errf(err, errlen, "config.json: '%s'[%d] does not mirror down_block_types", key, i);
            flags[idx] = f;
        }
    }
    return 0;
}

// ---- AutoencoderKL ----
json_t *vae_config_to_json(const VaeConfig *c) {
    json_t *j = json_object();
    int none[MAX_BLOCKS] = {0};
    json_object_set_new(j, "_class_name", json_string("AutoencoderKL"));
    json_object_set_new(j, "_diffusers_version", json_string(DIFFUSERS_VERSION));
    json_object_set_new(j, "act_fn", json_string("silu"));
    json_object_set_new(j, "block_out_channels", int_array(c->block_out_channels, c->n_blocks));
    json_object_set_new(j, "down_block_types", type_array("", "DownEncoderBlock2D", none, c->n_blocks, 0));
    json_object_set_new(j, "force_upcast", json_true());
    json_object_set_new(j, "in_channels", json_integer(c->in_channels));
    json_object_set_new(j, "latent_channels", json_integer(c->latent_channels));
    json_object_set_new(j, "layers_per_block", json_integer(c->layers_per_block));
    if (!c->mid_block_add_attention)  // newer diffusers' key; its default (true) is left implicit for 0.28
        json_object_set_new(j, "mid_block_add_attention", json_false());
    json_object_set_new(j, "norm_num_groups", json_integer(c->norm_num_groups));
    json_object_set_new(j, "out_channels", json_integer(c->out_channels));
    json_object_set_new(j, "sample_size", json_integer(c->sample_size));
    json_object_set_new(j, "scaling_factor", config_float(c->scaling_factor));
    json_object_set_new(j, "up_block_types", type_array("", "UpDecoderBlock2D", none, c->n_blocks, 0));
    return j;
}

int vae_config_from_json(VaeConfig *c, const json_t *j, char *err, size_t errlen) {
    memset(c, 0, sizeof(*c));
    if (!json_is_object(j)) return errf(err, errlen, "config.json: not a JSON object");
    json_t *cls = json_object_get(j, "_class_name");
    if (cls && (!json_is_string(cls) || strcmp(json_string_value(cls), "AutoencoderKL")))
        return errf(err, errlen, "config.json: _class_name is %s, expected AutoencoderKL",
                    json_is_string(cls) ? json_string_value(cls) : "not a string");
    if (config_int_list(j, "block_out_channels", c->block_out_channels, &c->n_blocks, err, errlen) ||
        get_types(j, "down_block_types", c->n_blocks, "", "DownEncoderBlock2D", NULL, 0, err, errlen) ||
        get_types(j, "up_block_types", c->n_blocks, "", "UpDecoderBlock2D", NULL, 0, err, errlen) ||
        config_int(j, "in_channels", 3, &c->in_channels, err, errlen) ||
        config_int(j, "out_channels", 3, &c->out_channels, err, errlen) ||
        config_int(j, "latent_channels", 4, &c->latent_channels, err, errlen) ||
        config_int(j, "layers_per_block", 1, &c->layers_per_block, err, errlen) ||
        config_int(j, "norm_num_groups", 32, &c->norm_num_groups, err, errlen) ||
        config_int(j, "sample_size", 32, &c->sample_size, err, errlen) ||
        config_num(j, "scaling_factor", 0.18215f, &c->scaling_factor, err, errlen) ||
        get_bool(j, "mid_block_add_attention", 1, &c->mid_block_add_attention, err, errlen) ||
        expect_str(j, "act_fn", "silu", err, errlen) || expect_null(j, "shift_factor", err, errlen))
        return -1;
    if (c->layers_per_block < 1 || c->layers_per_block + 1 > MAX_LAYERS)
        return errf(err, errlen, "config.json: layers_per_block %d outside 1..%d", c->layers_per_block, MAX_LAYERS - 1);
    for (int i = 0; i < c->n_blocks; i++)
        if (c->block_out_channels[i] % c->norm_num_groups)
            return errf(err, errlen, "config.json: block_out_channels[%d]=%d is not a multiple of norm_num_groups %d", i,
                        c->block_out_channels[i], c->norm_num_groups);
    if (c->in_channels < 1 || c->out_channels < 1 || c->latent_channels < 1)
        return errf(err, errlen, "config.json: channel counts must be positive");
    return 0;
}

// ---- UNet2DModel ----
json_t *unet_config_to_json(const UNetConfig *c) {
    json_t *j = json_object();
    json_object_set_new(j, "_class_name", json_string("UNet2DModel"));
    json_object_set_new(j, "_diffusers_version", json_string(DIFFUSERS_VERSION));
    json_object_set_new(j, "act_fn", json_string("silu"));
    json_object_set_new(j, "add_attention", json_boolean(c->add_attention));
    json_object_set_new(j, "attention_head_dim", c->attention_head_dim ? json_integer(c->attention_head_dim) : json_null());
    json_object_set_new(j, "attn_norm_num_groups", json_null());
    json_object_set_new(j, "block_out_channels", int_array(c->block_out_channels, c->n_blocks));
    json_object_set_new(j, "center_input_sample", json_false());
    json_object_set_new(j, "class_embed_type", json_null());
    json_object_set_new(j, "down_block_types", type_array("AttnDownBlock2D", "DownBlock2D", c->attn, c->n_blocks, 0));
    json_object_set_new(j, "downsample_padding", json_integer(1));
    json_object_set_new(j, "downsample_type", json_string("conv"));
    json_object_set_new(j, "dropout", config_float(c->dropout));
    json_object_set_new(j, "flip_sin_to_cos", json_boolean(c->flip_sin_to_cos));
    json_object_set_new(j, "freq_shift", config_float(c->freq_shift));
    json_object_set_new(j, "in_channels", json_integer(c->in_channels));
    json_object_set_new(j, "layers_per_block", json_integer(c->layers_per_block));
    json_object_set_new(j, "mid_block_scale_factor", config_float(c->mid_block_scale_factor));
    json_object_set_new(j, "norm_eps", config_float(c->norm_eps));
    json_object_set_new(j, "norm_num_groups", json_integer(c->norm_num_groups));
    json_object_set_new(j, "num_class_embeds", c->num_class_embeds ? json_integer(c->num_class_embeds) : json_null());
    json_object_set_new(j, "num_train_timesteps", json_null());
    json_object_set_new(j, "out_channels", json_integer(c->out_channels));
    json_object_set_new(j, "resnet_time_scale_shift", json_string("default"));
    json_object_set_new(j, "sample_size", json_integer(c->sample_size));
    json_object_set_new(j, "time_embedding_type", json_string("positional"));
    json_object_set_new(j, "up_block_types", type_array("AttnUpBlock2D", "UpBlock2D", c->attn, c->n_blocks, 1));
    json_object_set_new(j, "upsample_type", json_string("conv"));
    return j;
}

int unet_config_from_json(UNetConfig *c, const json_t *j, char *err, size_t errlen) {
    memset(c, 0, sizeof(*c));
    if (!json_is_object(j)) return errf(err, errlen, "config.json: not a JSON object");
    json_t *cls = json_object_get(j, "_class_name");
    if (cls && (!json_is_string(cls) || strcmp(json_string_value(cls), "UNet2DModel")))
        return errf(err, errlen, "config.json: _class_name is %s, expected UNet2DModel",
                    json_is_string(cls) ? json_string_value(cls) : "not a string");
    json_t *hd = json_object_get(j, "attention_head_dim");
    if (config_int_list(j, "block_out_channels", c->block_out_channels, &c->n_blocks, err, errlen) ||
        get_types(j, "down_block_types", c->n_blocks, "AttnDownBlock2D", "DownBlock2D", c->attn, 0, err, errlen) ||
        get_types(j, "up_block_types", c->n_blocks, "AttnUpBlock2D", "UpBlock2D", c->attn, 1, err, errlen) ||
        config_int(j, "sample_size", 0, &c->sample_size, err, errlen) ||
        config_int(j, "in_channels", 3, &c->in_channels, err, errlen) ||
        config_int(j, "out_channels", 3, &c->out_channels, err, errlen) ||
        config_int(j, "layers_per_block", 2, &c->layers_per_block, err, errlen) ||
        config_int(j, "norm_num_groups", 32, &c->norm_num_groups, err, errlen) ||
        config_int(j, "attention_head_dim", 8, &c->attention_head_dim, err, errlen) ||
        config_int(j, "num_class_embeds", 0, &c->num_class_embeds, err, errlen) ||
        config_int(j, "downsample_padding", 1, &(int){0}, err, errlen) ||
        config_num(j, "norm_eps", 1e-5f, &c->norm_eps, err, errlen) ||
        config_num(j, "freq_shift", 0.0f, &c->freq_shift, err, errlen) ||
        config_num(j, "mid_block_scale_factor", 1.0f, &c->mid_block_scale_factor, err, errlen) ||
        config_num(j, "dropout", 0.0f, &c->dropout, err, errlen) ||
        get_bool(j, "flip_sin_to_cos", 1, &c->flip_sin_to_cos, err, errlen) ||
        get_bool(j, "add_attention", 1, &c->add_attention, err, errlen) ||
        expect_str(j, "act_fn", "silu", err, errlen) ||
        expect_str(j, "time_embedding_type", "positional", err, errlen) ||
        expect_str(j, "resnet_time_scale_shift", "default", err, errlen) ||
        expect_str(j, "downsample_type", "conv", err, errlen) ||
        expect_str(j, "upsample_type", "conv", err, errlen) ||
        expect_null(j, "class_embed_type", err, errlen) || expect_null(j, "attn_norm_num_groups", err, errlen))
        return -1;
    if (hd && json_is_null(hd)) c->attention_head_dim = 0;  // None: one head per block
    json_t *center = json_object_get(j, "center_input_sample");
    if (center && json_is_true(center)) return errf(err, errlen, "config.json: center_input_sample true is not supported");
    json_t *pad = json_object_get(j, "downsample_padding");
    if (pad && json_integer_value(pad) != 1) return errf(err, errlen, "config.json: downsample_padding must be 1");
    if (c->layers_per_block < 1 || c->layers_per_block + 1 > MAX_LAYERS)
        return errf(err, errlen, "config.json: layers_per_block %d outside 1..%d", c->layers_per_block, MAX_LAYERS - 1);
    if (c->dropout < 0 || c->dropout >= 1) return errf(err, errlen, "config.json: dropout %g outside [0, 1)", c->dropout);
    for (int i = 0; i < c->n_blocks; i++) {
        if (c->block_out_channels[i] % c->norm_num_groups)
            return errf(err, errlen, "config.json: block_out_channels[%d]=%d is not a multiple of norm_num_groups %d", i,
                        c->block_out_channels[i], c->norm_num_groups);
        if (c->attn[i] && c->attention_head_dim && c->block_out_channels[i] % c->attention_head_dim)
            return errf(err, errlen, "config.json: block_out_channels[%d]=%d is not a multiple of attention_head_dim %d",
                        i, c->block_out_channels[i], c->attention_head_dim);
    }
    return 0;
}

// ---- presets (DESIGN.md) ----
int preset_vae(const char *name, VaeConfig *c) {
    memset(c, 0, sizeof(*c));
    c->in_channels = c->out_channels = 1;
    c->latent_channels = 4;
    c->layers_per_block = 1;
    c->mid_block_add_attention = 1;
    c->scaling_factor = 1.0f;  // measured on the data after training
    if (!strcmp(name, "tiny")) {
        *c = (VaeConfig){1, 1, 4, 2, {16, 32}, 1, 8, 32, 1, 1.0f};
    } else if (!strcmp(name, "small")) {
        *c = (VaeConfig){1, 1, 4, 3, {32, 64, 128}, 1, 32, 64, 1, 1.0f};
    } else if (!strcmp(name, "seed")) {
        *c = (VaeConfig){1, 1, 4, 3, {128, 256, 512}, 1, 32, 128, 1, 1.0f};
    } else {
        return -1;
    }
    return 0;
}

int preset_unet(const char *name, int num_users, UNetConfig *c) {
    memset(c, 0, sizeof(*c));
    c->in_channels = c->out_channels = 4;
    c->norm_eps = 1e-5f;
    c->flip_sin_to_cos = 1;
    c->mid_block_scale_factor = 1.0f;
    c->add_attention = 1;
    c->num_class_embeds = num_users + 1;  // the last class is the learned "no user" for guidance
    if (!strcmp(name, "tiny")) {
        c->sample_size = 16, c->n_blocks = 2, c->layers_per_block = 1, c->norm_num_groups = 8, c->attention_head_dim = 8;
        memcpy(c->block_out_channels, (int[]){32, 64}, 2 * sizeof(int));
        memcpy(c->attn, (int[]){0, 1}, 2 * sizeof(int));
    } else if (!strcmp(name, "small")) {
        c->sample_size = 16, c->n_blocks = 3, c->layers_per_block = 2, c->norm_num_groups = 32, c->attention_head_dim = 32;
        memcpy(c->block_out_channels, (int[]){64, 128, 256}, 3 * sizeof(int));
        memcpy(c->attn, (int[]){0, 1, 1}, 3 * sizeof(int));
    } else if (!strcmp(name, "seed")) {
        c->sample_size = 32, c->n_blocks = 4, c->layers_per_block = 2, c->norm_num_groups = 32, c->attention_head_dim = 32;
        memcpy(c->block_out_channels, (int[]){128, 256, 512, 512}, 4 * sizeof(int));
        memcpy(c->attn, (int[]){0, 1, 1, 1}, 4 * sizeof(int));
    } else {
        return -1;
    }
    return 0;
}

int check_block_layout(int n_blocks, const int *block_out_channels, int layers_per_block, int norm_num_groups, char *err,
                       size_t errlen) {
    if (n_blocks < 1 || n_blocks > MAX_BLOCKS)
        return errf(err, errlen, "block_out_channels must list 1 to %d channel counts, not %d", MAX_BLOCKS, n_blocks);
    if (layers_per_block < 1 || layers_per_block > MAX_LAYERS)
        return errf(err, errlen, "layers_per_block %d outside 1..%d", layers_per_block, MAX_LAYERS);
    if (norm_num_groups < 1) return errf(err, errlen, "norm_num_groups %d must be positive", norm_num_groups);
    for (int i = 0; i < n_blocks; i++) {
        if (block_out_channels[i] < 1 || block_out_channels[i] > 65536)
            return errf(err, errlen, "block_out_channels[%d] = %d outside 1..65536", i, block_out_channels[i]);
        if (block_out_channels[i] % norm_num_groups)
            return errf(err, errlen, "block_out_channels[%d] = %d is not a multiple of norm_num_groups %d", i,
                        block_out_channels[i], norm_num_groups);
    }
    return 0;
}
