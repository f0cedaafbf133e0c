// unet_folder.c: UNet folders with doppel's settings (see unet_folder.h).
#include "unet_folder.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "../check.h"
#include "../io/checkpoint.h"
#include "../io/fileio.h"

json_t *unet_folder_doppel(const UNetFolder *u) {
    json_t *d = json_object_get(u->config, "doppel");
    if (!json_is_object(d)) {
        d = json_object();
        json_object_set_new(u->config, "doppel", d);
    }
    return d;
}

void schedule_to_json(json_t *o, const NoiseSchedule *s) {
    json_object_set_new(o, "beta_schedule", json_string(beta_schedule_name(s->beta_schedule)));
    json_object_set_new(o, "num_train_timesteps", json_integer(s->T));
    json_object_set_new(o, "beta_start", json_real(s->beta_start));
    json_object_set_new(o, "beta_end", json_real(s->beta_end));
}

void unet_folder_set_schedule(UNetFolder *u, const NoiseSchedule *s) {
    json_t *d = unet_folder_doppel(u);
    json_object_set_new(d, "prediction_type", json_string(prediction_type_name(s->prediction)));
    schedule_to_json(d, s);
}

static const char *str_or(const json_t *o, const char *key, const char *dflt) {
    json_t *v = o ? json_object_get(o, key) : NULL;
    return json_is_string(v) ? json_string_value(v) : dflt;
}

static double num_or(const json_t *o, const char *key, double dflt) {
    json_t *v = o ? json_object_get(o, key) : NULL;
    return json_is_number(v) ? json_number_value(v) : dflt;
}

int schedule_from_json(NoiseSchedule *s, const json_t *d, char *err, size_t errlen) {
    BetaSchedule b;
    PredictionType p;
    const char *bs = str_or(d, "beta_schedule", "linear"), *pt = str_or(d, "prediction_type", "epsilon");
    if (beta_schedule_parse(bs, &b)) return errf(err, errlen, "unknown beta_schedule '%s'", bs);
    if (prediction_type_parse(pt, &p)) return errf(err, errlen, "unknown prediction_type '%s'", pt);
    double T = num_or(d, "num_train_timesteps", 1000);
    if (T != (int)T) return errf(err, errlen, "num_train_timesteps %g is not an integer", T);
    return noise_schedule_init(s, (int)T, b, (float)num_or(d, "beta_start", 0.0001), (float)num_or(d, "beta_end", 0.02), p,
                               err, errlen);
}

int unet_folder_load(UNetFolder *u, const char *dir, int use_ema, int *used_ema, char *err, size_t errlen) {
    memset(u, 0, sizeof(*u));
    char e[512], ema[4096];
    struct stat st;
    u->config = checkpoint_load_config(dir, e, sizeof(e));
    if (!u->config) return errf(err, errlen, "UNet folder %s: %s", dir, e);
    UNetConfig c;
    json_t *d = json_object_get(u->config, "doppel");
    if (unet_config_from_json(&c, u->config, e, sizeof(e)) || schedule_from_json(&u->sched, d, e, sizeof(e))) {
        json_decref(u->config), u->config = NULL;
        return errf(err, errlen, "UNet folder %s: %s", dir, e);
    }
    json_t *users = d ? json_object_get(d, "users") : NULL;
    if (json_is_array(users)) {
        u->users = users;
        if (c.num_class_embeds != (int)json_array_size(users) + 1) {
            json_decref(u->config), u->config = NULL;
            return errf(err, errlen, "UNet folder %s: num_class_embeds is %d but doppel.users has %zu users (expected users + 1)",
                        dir, c.num_class_embeds, json_array_size(users));
        }
    }
    snprintf(ema, sizeof(ema), "%s/ema/%s", dir, CKPT_WEIGHTS);
    int from_ema = use_ema && stat(ema, &st) == 0;
    if (used_ema) *used_ema = from_ema;
    unet_build(&u->model, &c);
    int rc = from_ema ? checkpoint_load_weights(ema, &u->model.ps, u->model.ps.data, e, sizeof(e))
                      : checkpoint_load_model(dir, &u->model.ps, e, sizeof(e));
    if (rc) {
        unet_folder_free(u);
        return errf(err, errlen, "UNet folder %s: %s", dir, e);
    }
    return 0;
}

// diffusers' DDPMScheduler config for the same schedule, so a diffusers pipeline can be assembled
static int save_scheduler_config(const UNetFolder *u, const char *dir, char *err, size_t errlen) {
    const NoiseSchedule *s = &u->sched;
    json_t *j = json_pack("{s:s, s:s, s:i, s:f, s:f, s:s, s:s, s:b, s:s, s:i}", "_class_name", "DDPMScheduler",
                          "_diffusers_version", "0.28.2", "num_train_timesteps", s->T, "beta_start", (double)s->beta_start,
                          "beta_end", (double)s->beta_end, "beta_schedule", beta_schedule_name(s->beta_schedule),
                          "prediction_type", prediction_type_name(s->prediction), "clip_sample", 0,
                          "variance_type", "fixed_small", "steps_offset", 0);
    char path[4096], *text = json_dumps(j, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9));
    snprintf(path, sizeof(path), "%s/scheduler_config.json", dir);
    int rc = write_file_atomic(path, text, strlen(text), err, errlen);
    free(text), json_decref(j);
    return rc;
}

int unet_folder_save(const UNetFolder *u, const char *dir, int use_ema, char *err, size_t errlen) {
    json_t *cfg = unet_config_to_json(&u->model.cfg);
    json_t *d = json_object_get(u->config, "doppel");
    if (json_is_object(d)) json_object_set(cfg, "doppel", d);
    const ParamSet *ps = &u->model.ps;
    int rc = checkpoint_save_model(dir, ps, use_ema && ps->ema ? ps->ema : ps->data, cfg, err, errlen);
    if (!rc) rc = save_scheduler_config(u, dir, err, errlen);
    json_decref(cfg);
    return rc;
}

void unet_folder_free(UNetFolder *u) {
    if (u->config) unet_free(&u->model);
    json_decref(u->config);
    memset(u, 0, sizeof(*u));
}

int unet_vae_compatible(const UNetConfig *uc, const json_t *unet_users, const VaeConfig *vc, const json_t *vae_users,
                        char *err, size_t errlen) {
    int f = 1 << (vc->n_blocks - 1), lat = vc->sample_size / f;
    if (uc->in_channels != vc->latent_channels)
        return errf(err, errlen, "the UNet takes %d latent channels but the VAE makes %d", uc->in_channels,
                    vc->latent_channels);
    if (uc->sample_size != lat)
        return errf(err, errlen, "the UNet works on %dx%d latents but the VAE makes %dx%d (%dx%d images / %d)", uc->sample_size,
                    uc->sample_size, lat, lat, vc->sample_size, vc->sample_size, f);
    if (json_is_array(unet_users) && json_is_array(vae_users)) {
        size_t nu = json_array_size(unet_users), nv = json_array_size(vae_users);
        if (nu != nv)
            return errf(err, errlen, "the UNet knows %zu users but the VAE was trained on %zu", nu, nv);
        for (size_t i = 0; i < nu; i++) {
            const char *a = json_string_value(json_array_get(unet_users, i)), *b = json_string_value(json_array_get(vae_users, i));
            if (a && b && strcmp(a, b))
                return errf(err, errlen, "user %zu is '%s' for the UNet but '%s' for the VAE", i, a, b);
        }
    } else if (uc->num_class_embeds > 0 && json_is_array(vae_users) &&
               (size_t)uc->num_class_embeds != json_array_size(vae_users) + 1) {
        return errf(err, errlen, "the UNet has %d class embeddings (users + 1) but the VAE was trained on %zu users",
                    uc->num_class_embeds, json_array_size(vae_users));
    }
    return 0;
}
