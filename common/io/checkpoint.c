#include "io/checkpoint.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "io/fileio.h"
#include "io/safetensors.h"

#define LIST_MAX 10  // names shown per list in a key-mismatch error

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < ndim && k < n; i++) k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? ", " : "", (long long)shape[i]);
    if (k < n) snprintf(buf + k, n - k, "]");
}

// ---------------------------------------------------------------- matching a file to a ParamSet

// A group of tensors named "<prefix><param key>", one per parameter, laid out like ps->data.
typedef struct {
    const char *prefix;
    float *buf;  // destination (total floats); NULL: not loaded, and not required
} Group;

// A fixed tensor outside the groups (training state scalars).
typedef struct {
    const char *name;
    StDtype dtype;
    int64_t numel;  // 1-dim shape [numel]
    void *dst;
} Extra;

typedef struct {
    char text[1200];
    int count;
} NameList;

static void list_add(NameList *l, const char *name) {
    if (l->count++ >= LIST_MAX) return;
    size_t k = strlen(l->text);
    if (k < sizeof(l->text)) snprintf(l->text + k, sizeof(l->text) - k, "%s%s", k ? ", " : "", name);
}

static void list_close(NameList *l) {
    size_t k = strlen(l->text);
    if (l->count > LIST_MAX && k < sizeof(l->text)) snprintf(l->text + k, sizeof(l->text) - k, ", ... and %d more", l->count - LIST_MAX);
}

// Which group a file tensor belongs to (-1: none), and its parameter id.
static int group_of(const char *name, const Group *g, int ng, const ParamSet *ps, int *param) {
    for (int i = 0; i < ng; i++) {
        size_t n = strlen(g[i].prefix);
        if (strncmp(name, g[i].prefix, n) == 0 && (*param = params_find(ps, name + n)) >= 0) return i;
    }
    return -1;
}

// The file must hold every required tensor and nothing that is not one of ours.
static int match_keys(const SafeTensors *st, const ParamSet *ps, const Group *g, int ng, const Extra *ex, int nex,
                      const char *path, char *err, size_t errlen) {
    NameList missing = {0}, unexpected = {0};
    char name[PARAM_NAME_MAX + 32];
    for (int i = 0; i < ng; i++) {
        if (!g[i].buf) continue;
        for (int p = 0; p < ps->count; p++) {
            snprintf(name, sizeof(name), "%s%s", g[i].prefix, ps->info[p].name);
            if (!st_find(st, name)) list_add(&missing, name);
        }
    }
    for (int i = 0; i < nex; i++)
        if (!st_find(st, ex[i].name)) list_add(&missing, ex[i].name);
    for (int t = 0; t < st->count; t++) {
        const char *n = st->tensors[t].name;
        int param, known = group_of(n, g, ng, ps, &param) >= 0;
        for (int i = 0; i < nex && !known; i++) known = strcmp(n, ex[i].name) == 0;
        if (!known) list_add(&unexpected, n);
    }
    if (!missing.count && !unexpected.count) return 0;
    list_close(&missing);
    list_close(&unexpected);
    return errf(err, errlen, "file %s: tensors do not match this model (a different preset or config?): %d missing [%s], %d unexpected [%s]",
                path, missing.count, missing.text, unexpected.count, unexpected.text);
}

static int check_tensor(const StTensor *t, int ndim, const int64_t *shape, int allow_half, const char *path, char *err, size_t errlen) {
    if (t->dtype != ST_F32 && !(allow_half && (t->dtype == ST_F16 || t->dtype == ST_BF16)))
        return errf(err, errlen, "file %s: tensor '%s' has dtype %s; expected %s", path, t->name, st_dtype_name(t->dtype),
                    allow_half ? "F32, F16 or BF16" : "F32 (training state is saved exactly)");
    int same = t->ndim == ndim;
    for (int d = 0; same && d < ndim; d++) same = t->shape[d] == shape[d];
    if (!same) {
        char a[160], b[160];
        shape_str(a, sizeof(a), t->ndim, t->shape);
        shape_str(b, sizeof(b), ndim, shape);
        return errf(err, errlen, "file %s: tensor '%s' has shape %s but the model expects %s (a different preset or config?)", path, t->name, a, b);
    }
    return 0;
}

static int check_shapes(const SafeTensors *st, const ParamSet *ps, const Group *g, int ng, const Extra *ex, int nex, int allow_half,
                        const char *path, char *err, size_t errlen) {
    char name[PARAM_NAME_MAX + 32];
    for (int i = 0; i < ng; i++) {
        if (!g[i].buf) continue;
        for (int p = 0; p < ps->count; p++) {
            snprintf(name, sizeof(name), "%s%s", g[i].prefix, ps->info[p].name);
            if (check_tensor(st_find(st, name), ps->info[p].ndim, ps->info[p].shape, allow_half, path, err, errlen)) return -1;
        }
    }
    for (int i = 0; i < nex; i++) {
        const StTensor *t = st_find(st, ex[i].name);
        if (t->dtype != ex[i].dtype || t->ndim != 1 || t->shape[0] != ex[i].numel)
            return errf(err, errlen, "file %s: tensor '%s' must be %s [%lld]", path, ex[i].name, st_dtype_name(ex[i].dtype), (long long)ex[i].numel);
    }
    return 0;
}

// One read per tensor straight into its view (through a scratch buffer for F16/BF16).
static int read_groups(const SafeTensors *st, const ParamSet *ps, const Group *g, int ng, const Extra *ex, int nex,
                       char *err, size_t errlen) {
    void *scratch = NULL;
    size_t scratch_n = 0;
    int rc = 0;
    for (int t = 0; t < st->count && rc == 0; t++) {
        const StTensor *ti = &st->tensors[t];
        for (int i = 0; i < nex; i++)
            if (strcmp(ti->name, ex[i].name) == 0) rc = st_read_tensor(st, ti, ex[i].dst, err, errlen);
        int param, gi = group_of(ti->name, g, ng, ps, &param);
        if (rc != 0 || gi < 0 || !g[gi].buf) continue;
        float *view = g[gi].buf + ps->info[param].offset;
        if (ti->dtype == ST_F32) {
            rc = st_read_tensor(st, ti, view, err, errlen);
            continue;
        }
        if (ti->nbytes > scratch_n) scratch = xrealloc(scratch, scratch_n = ti->nbytes);
        rc = st_read_tensor(st, ti, scratch, err, errlen);
        if (rc == 0) st_bytes_to_f32(view, scratch, ti->dtype, ti->numel);
    }
    free(scratch);
    return rc;
}

static int load_groups(const char *path, const ParamSet *ps, const Group *g, int ng, const Extra *ex, int nex, int allow_half,
                       char *err, size_t errlen) {
    SafeTensors st;
    if (st_open(&st, path, err, errlen) != 0) return -1;
    int rc = match_keys(&st, ps, g, ng, ex, nex, path, err, errlen);
    if (rc == 0) rc = check_shapes(&st, ps, g, ng, ex, nex, allow_half, path, err, errlen);
    if (rc == 0) rc = read_groups(&st, ps, g, ng, ex, nex, err, errlen);
    st_free(&st);
    return rc;
}

// ---------------------------------------------------------------- model folders

static int save_groups(const char *path, const ParamSet *ps, const Group *g, int ng, const StEntry *extra, int nex,
                       const char *const *meta_kv, int n_meta, char *err, size_t errlen) {
    int n = 0;
    for (int i = 0; i < ng; i++) n += g[i].buf ? ps->count : 0;
    StEntry *e = xcalloc((size_t)(n + nex), sizeof(StEntry));
    char **names = xcalloc((size_t)(n ? n : 1), sizeof(char *));
    int k = 0;
    for (int i = 0; i < ng; i++) {
        if (!g[i].buf) continue;
        for (int p = 0; p < ps->count; p++, k++) {
            const ParamInfo *pi = &ps->info[p];
            size_t len = strlen(g[i].prefix) + strlen(pi->name) + 1;
            names[k] = xmalloc(len);
            snprintf(names[k], len, "%s%s", g[i].prefix, pi->name);
            e[k] = (StEntry){.name = names[k], .dtype = ST_F32, .ndim = pi->ndim, .data = g[i].buf + pi->offset};
            memcpy(e[k].shape, pi->shape, sizeof(pi->shape));
        }
    }
    for (int i = 0; i < nex; i++) e[n + i] = extra[i];
    int rc = st_save(path, e, n + nex, meta_kv, n_meta, err, errlen);
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
    free(e);
    return rc;
}

int checkpoint_save_model(const char *dir, const ParamSet *ps, const float *weights, const json_t *config, char *err, size_t errlen) {
    if (!json_is_object(config)) return errf(err, errlen, "folder %s: model config must be a JSON object", dir);
    CHECK(weights, "checkpoint_save_model(%s): no weights buffer", dir);
    if (mkdir_p(dir, err, errlen) != 0) return -1;
    char *wpath = path_join(dir, CKPT_WEIGHTS), *cpath = path_join(dir, CKPT_CONFIG);
    static const char *const meta[] = {"format", "pt"};
    Group g = {"", (float *)weights};
    int rc = save_groups(wpath, ps, &g, 1, NULL, 0, meta, 1, err, errlen);
    // diffusers writes json.dumps(config, indent=2, sort_keys=True) + "\n"
    // 9 significant digits round-trip float32 (jansson would print 0.18215000000000001)
    char *s = rc == 0 ? json_dumps(config, JSON_INDENT(2) | JSON_SORT_KEYS | JSON_REAL_PRECISION(9)) : NULL;
    if (rc == 0 && !s) rc = errf(err, errlen, "file %s: could not encode the config as JSON", cpath);
    if (rc == 0) {
        size_t n = strlen(s);
        s = xrealloc(s, n + 2);
        s[n] = '\n';
        rc = write_file_atomic(cpath, s, n + 1, err, errlen);
    }
    free(s);
    free(wpath);
    free(cpath);
    return rc;
}

int checkpoint_load_weights(const char *path, const ParamSet *ps, float *weights, char *err, size_t errlen) {
    CHECK(weights, "checkpoint_load_weights(%s): no destination buffer (call params_allocate first)", path);
    Group g = {"", weights};
    return load_groups(path, ps, &g, 1, NULL, 0, 1, err, errlen);
}

json_t *checkpoint_load_config(const char *dir, char *err, size_t errlen) {
    char *path = path_join(dir, CKPT_CONFIG);
    struct stat sb;
    json_t *j = NULL;
    if (stat(path, &sb) != 0) {
        errf(err, errlen, "folder %s: no %s (%s); is it a diffusers model folder written by a training run?", dir, CKPT_CONFIG, strerror(errno));
    } else {
        json_error_t e;
        j = json_load_file(path, JSON_REJECT_DUPLICATES, &e);
        if (!j) {
            errf(err, errlen, "file %s: not valid JSON: %s (line %d, column %d)", path, e.text, e.line, e.column);
        } else if (!json_is_object(j)) {
            errf(err, errlen, "file %s: the config is not a JSON object", path);
            json_decref(j);
            j = NULL;
        }
    }
    free(path);
    return j;
}

int checkpoint_load_model(const char *dir, ParamSet *ps, char *err, size_t errlen) {
    char *path = path_join(dir, CKPT_WEIGHTS);
    int rc = checkpoint_load_weights(path, ps, ps->data, err, errlen);
    free(path);
    return rc;
}

// ---------------------------------------------------------------- training state

int checkpoint_save_state(const char *dir, const ParamSet *ps, const TrainMeta *meta, char *err, size_t errlen) {
    if (mkdir_p(dir, err, errlen) != 0) return -1;
    Group g[3] = {{"exp_avg.", ps->m}, {"exp_avg_sq.", ps->v}, {"ema.", ps->ema}};
    float spare[2] = {meta->rng.has_spare ? 1.0f : 0.0f, meta->rng.spare};  // (2) [has_spare, spare]
    StEntry ex[3] = {
        {.name = "step", .dtype = ST_I64, .ndim = 1, .shape = {1}, .data = &meta->step},
        {.name = "rng", .dtype = ST_I64, .ndim = 1, .shape = {4}, .data = meta->rng.s},  // raw uint64 bits
        {.name = "rng_spare", .dtype = ST_F32, .ndim = 1, .shape = {2}, .data = spare},
    };
    static const char *const kv[] = {"format", "doppel-training-state"};
    char *path = path_join(dir, CKPT_STATE);
    int rc = save_groups(path, ps, g, 3, ex, 3, kv, 1, err, errlen);
    free(path);
    return rc;
}

int checkpoint_load_state(const char *dir, ParamSet *ps, TrainMeta *meta, char *err, size_t errlen) {
    Group g[3] = {{"exp_avg.", ps->m}, {"exp_avg_sq.", ps->v}, {"ema.", ps->ema}};
    TrainMeta m = {0};
    float spare[2];
    Extra ex[3] = {{"step", ST_I64, 1, &m.step}, {"rng", ST_I64, 4, m.rng.s}, {"rng_spare", ST_F32, 2, spare}};
    char *path = path_join(dir, CKPT_STATE);
    int rc = load_groups(path, ps, g, 3, ex, 3, 0, err, errlen);
    if (rc == 0 && m.step < 0) rc = errf(err, errlen, "file %s: negative step %lld", path, (long long)m.step);
    if (rc == 0 && !(m.rng.s[0] | m.rng.s[1] | m.rng.s[2] | m.rng.s[3]))
        rc = errf(err, errlen, "file %s: rng state is all zeros (not a state rng_seed can produce)", path);
    if (rc == 0 && spare[0] != 0.0f && spare[0] != 1.0f)
        rc = errf(err, errlen, "file %s: rng_spare[0] (has_spare) is %g, not 0 or 1", path, (double)spare[0]);
    if (rc == 0) {
        m.rng.has_spare = spare[0] == 1.0f;
        m.rng.spare = spare[1];
        *meta = m;
    }
    free(path);
    return rc;
}
