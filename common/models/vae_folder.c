#include "vae_folder.h"

#include <string.h>

#include "../check.h"
#include "../io/checkpoint.h"

json_t *vae_folder_doppel(const VaeFolder *v) {
    json_t *d = v->config ? json_object_get(v->config, "doppel") : NULL;
    return json_is_object(d) ? d : NULL;
}

int vae_folder_load(VaeFolder *v, const char *dir, char *err, size_t errlen) {
    memset(v, 0, sizeof(*v));
    char e[512];
    v->config = checkpoint_load_config(dir, e, sizeof(e));
    if (!v->config) return errf(err, errlen, "VAE folder %s: %s", dir, e);
    VaeConfig c;
    if (vae_config_from_json(&c, v->config, e, sizeof(e))) {
        json_decref(v->config);
        v->config = NULL;
        return errf(err, errlen, "VAE folder %s: %s", dir, e);
    }
    vae_build(&v->model, &c);
    if (checkpoint_load_model(dir, &v->model.ps, e, sizeof(e))) {
        vae_folder_free(v);
        return errf(err, errlen, "VAE folder %s: %s", dir, e);
    }
    v->cmap = CMAP_JET;
    json_t *d = vae_folder_doppel(v);
    if (d) {
        json_t *cm = json_object_get(d, "colormap");
        if (json_is_string(cm) && colormap_parse(json_string_value(cm), &v->cmap)) v->cmap = CMAP_JET;
        json_t *u = json_object_get(d, "users");
        v->users = json_is_array(u) ? u : NULL;
    }
    return 0;
}

int vae_folder_save(const VaeFolder *v, const char *dir, int use_ema, char *err, size_t errlen) {
    json_t *cfg = vae_config_to_json(&v->model.cfg);
    json_t *d = vae_folder_doppel(v);
    if (d) json_object_set(cfg, "doppel", d);
    const ParamSet *ps = &v->model.ps;
    int rc = checkpoint_save_model(dir, ps, use_ema && ps->ema ? ps->ema : ps->data, cfg, err, errlen);
    json_decref(cfg);
    return rc;
}

void vae_folder_free(VaeFolder *v) {
    if (v->config) vae_free(&v->model);
    json_decref(v->config);
    memset(v, 0, sizeof(*v));
}
