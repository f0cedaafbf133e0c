// colormap.c: colour maps forward (magnitude -> RGB) and inverse (RGB -> magnitude).
//   jet      matplotlib's segment data (piecewise linear per channel), evaluated exactly
//   viridis  matplotlib's 256-entry table, linearly interpolated between entries (entry i at i/255)
//   gray     r = g = b = v
// matplotlib's own colormap object quantises to 256 entries at i/255; colormap_apply agrees with
// those entries exactly and is continuous between them.
//
// The inverse maps a colour to the v whose colour is nearest (squared RGB distance), exactly: each
// map is piecewise linear in RGB between its breakpoints (jet: every channel's breakpoints, 12 in
// all; viridis: its 256 entries; gray: 0 and 1), so it is a polyline, and a pixel is projected onto
// its nearest segment, v read off there. Off-map colours (JPEG ringing, chroma blur) go to the
// nearest point of the map. jet is constant (pure blue) for v in [0.11, 0.125]; that flat stretch
// inverts to its middle. (This replaces a table of sampled colours with refinement: it is exact,
// has no sampling error at jet's bends, and searches 11 segments instead of ~1000 samples.)
// The search is fast through a lookup grid: the RGB cube split into GRID^3 cells, each listing the
// only segments that can be nearest to some point inside it. For a cell of centre c and
// half-diagonal h, with d* the distance from c to its nearest segment, any point p of the cell has
// a segment within d* + h, and every segment within that of p lies within d* + 2h of c (distance
// to a set is 1-Lipschitz); so the list holds the segments within d* + 2h of c. Lists are built
// once per map (a few ms for jet, tens for viridis), first on a coarse grid, then each fine cell filters its coarse parent's
// list (the same argument applies).
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "image/image.h"

#define GRID 32    // fine lookup cells per RGB axis
#define COARSE 8   // coarse cells per axis while building (divides GRID)
#define NCMAP 3

// matplotlib's jet segment data: (x, y) breakpoints per channel
typedef struct {
    int n;
    double p[6][2];
} Segments;
static const Segments jet_segments[3] = {
    {5, {{0, 0}, {0.35, 0}, {0.66, 1}, {0.89, 1}, {1, 0.5}}},
    {6, {{0, 0}, {0.125, 0}, {0.375, 1}, {0.64, 1}, {0.91, 0}, {1, 0}}},
    {5, {{0, 0.5}, {0.11, 1}, {0.34, 1}, {0.65, 0}, {1, 0}}},
};

// matplotlib's _viridis_data (matplotlib/_cm_listed.py), entry i at v = i / 255
static const float viridis_table[256][3] = {
    {0.267004, 0.004874, 0.329415}, {0.268510, 0.009605, 0.335427}, {0.269944, 0.014625, 0.341379}, {0.271305, 0.019942, 0.347269},
    {0.272594, 0.025563, 0.353093}, {0.273809, 0.031497, 0.358853}, {0.274952, 0.037752, 0.364543}, {0.276022, 0.044167, 0.370164},
    {0.277018, 0.050344, 0.375715}, {0.277941, 0.056324, 0.381191}, {0.278791, 0.062145, 0.386592}, {0.279566, 0.067836, 0.391917},
    {0.280267, 0.073417, 0.397163}, {0.280894, 0.078907, 0.402329}, {0.281446, 0.084320, 0.407414}, {0.281924, 0.089666, 0.412415},
    {0.282327, 0.094955, 0.417331}, {0.282656, 0.100196, 0.422160}, {0.282910, 0.105393, 0.426902}, {0.283091, 0.110553, 0.431554},
    {0.283197, 0.115680, 0.436115}, {0.283229, 0.120777, 0.440584}, {0.283187, 0.125848, 0.444960}, {0.283072, 0.130895, 0.449241},
    {0.282884, 0.135920, 0.453427}, {0.282623, 0.140926, 0.457517}, {0.282290, 0.145912, 0.461510}, {0.281887, 0.150881, 0.465405},
    {0.281412, 0.155834, 0.469201}, {0.280868, 0.160771, 0.472899}, {0.280255, 0.165693, 0.476498}, {0.279574, 0.170599, 0.479997},
    {0.278826, 0.175490, 0.483397}, {0.278012, 0.180367, 0.486697}, {0.277134, 0.185228, 0.489898}, {0.276194, 0.190074, 0.493001},
    {0.275191, 0.194905, 0.496005}, {0.274128, 0.199721, 0.498911}, {0.273006, 0.204520, 0.501721}, {0.271828, 0.209303, 0.504434},
    {0.270595, 0.214069, 0.507052}, {0.269308, 0.218818, 0.509577}, {0.267968, 0.223549, 0.512008}, {0.266580, 0.228262, 0.514349},
    {0.265145, 0.232956, 0.516599}, {0.263663, 0.237631, 0.518762}, {0.262138, 0.242286, 0.520837}, {0.260571, 0.246922, 0.522828},
    {0.258965, 0.251537, 0.524736}, {0.257322, 0.256130, 0.526563}, {0.255645, 0.260703, 0.528312}, {0.253935, 0.265254, 0.529983},
    {0.252194, 0.269783, 0.531579}, {0.250425, 0.274290, 0.533103}, {0.248629, 0.278775, 0.534556}, {0.246811, 0.283237, 0.535941},
    {0.244972, 0.287675, 0.537260}, {0.243113, 0.292092, 0.538516}, {0.241237, 0.296485, 0.539709}, {0.239346, 0.300855, 0.540844},
    {0.237441, 0.305202, 0.541921}, {0.235526, 0.309527, 0.542944}, {0.233603, 0.313828, 0.543914}, {0.231674, 0.318106, 0.544834},
    {0.229739, 0.322361, 0.545706}, {0.227802, 0.326594, 0.546532}, {0.225863, 0.330805, 0.547314}, {0.223925, 0.334994, 0.548053},
    {0.221989, 0.339161, 0.548752}, {0.220057, 0.343307, 0.549413}, {0.218130, 0.347432, 0.550038}, {0.216210, 0.351535, 0.550627},
    {0.214298, 0.355619, 0.551184}, {0.212395, 0.359683, 0.551710}, {0.210503, 0.363727, 0.552206}, {0.208623, 0.367752, 0.552675},
    {0.206756, 0.371758, 0.553117}, {0.204903, 0.375746, 0.553533}, {0.203063, 0.379716, 0.553925}, {0.201239, 0.383670, 0.554294},
    {0.199430, 0.387607, 0.554642}, {0.197636, 0.391528, 0.554969}, {0.195860, 0.395433, 0.555276}, {0.194100, 0.399323, 0.555565},
    {0.192357, 0.403199, 0.555836}, {0.190631, 0.407061, 0.556089}, {0.188923, 0.410910, 0.556326}, {0.187231, 0.414746, 0.556547},
    {0.185556, 0.418570, 0.556753}, {0.183898, 0.422383, 0.556944}, {0.182256, 0.426184, 0.557120}, {0.180629, 0.429975, 0.557282},
    {0.179019, 0.433756, 0.557430}, {0.177423, 0.437527, 0.557565}, {0.175841, 0.441290, 0.557685}, {0.174274, 0.445044, 0.557792},
    {0.172719, 0.448791, 0.557885}, {0.171176, 0.452530, 0.557965}, {0.169646, 0.456262, 0.558030}, {0.168126, 0.459988, 0.558082},
    {0.166617, 0.463708, 0.558119}, {0.165117, 0.467423, 0.558141}, {0.163625, 0.471133, 0.558148}, {0.162142, 0.474838, 0.558140},
    {0.160665, 0.478540, 0.558115}, {0.159194, 0.482237, 0.558073}, {0.157729, 0.485932, 0.558013}, {0.156270, 0.489624, 0.557936},
    {0.154815, 0.493313, 0.557840}, {0.153364, 0.497000, 0.557724}, {0.151918, 0.500685, 0.557587}, {0.150476, 0.504369, 0.557430},
    {0.149039, 0.508051, 0.557250}, {0.147607, 0.511733, 0.557049}, {0.146180, 0.515413, 0.556823}, {0.144759, 0.519093, 0.556572},
    {0.143343, 0.522773, 0.556295}, {0.141935, 0.526453, 0.555991}, {0.140536, 0.530132, 0.555659}, {0.139147, 0.533812, 0.555298},
    {0.137770, 0.537492, 0.554906}, {0.136408, 0.541173, 0.554483}, {0.135066, 0.544853, 0.554029}, {0.133743, 0.548535, 0.553541},
    {0.132444, 0.552216, 0.553018}, {0.131172, 0.555899, 0.552459}, {0.129933, 0.559582, 0.551864}, {0.128729, 0.563265, 0.551229},
    {0.127568, 0.566949, 0.550556}, {0.126453, 0.570633, 0.549841}, {0.125394, 0.574318, 0.549086}, {0.124395, 0.578002, 0.548287},
    {0.123463, 0.581687, 0.547445}, {0.122606, 0.585371, 0.546557}, {0.121831, 0.589055, 0.545623}, {0.121148, 0.592739, 0.544641},
    {0.120565, 0.596422, 0.543611}, {0.120092, 0.600104, 0.542530}, {0.119738, 0.603785, 0.541400}, {0.119512, 0.607464, 0.540218},
    {0.119423, 0.611141, 0.538982}, {0.119483, 0.614817, 0.537692}, {0.119699, 0.618490, 0.536347}, {0.120081, 0.622161, 0.534946},
    {0.120638, 0.625828, 0.533488}, {0.121380, 0.629492, 0.531973}, {0.122312, 0.633153, 0.530398}, {0.123444, 0.636809, 0.528763},
    {0.124780, 0.640461, 0.527068}, {0.126326, 0.644107, 0.525311}, {0.128087, 0.647749, 0.523491}, {0.130067, 0.651384, 0.521608},
    {0.132268, 0.655014, 0.519661}, {0.134692, 0.658636, 0.517649}, {0.137339, 0.662252, 0.515571}, {0.140210, 0.665859, 0.513427},
    {0.143303, 0.669459, 0.511215}, {0.146616, 0.673050, 0.508936}, {0.150148, 0.676631, 0.506589}, {0.153894, 0.680203, 0.504172},
    {0.157851, 0.683765, 0.501686}, {0.162016, 0.687316, 0.499129}, {0.166383, 0.690856, 0.496502}, {0.170948, 0.694384, 0.493803},
    {0.175707, 0.697900, 0.491033}, {0.180653, 0.701402, 0.488189}, {0.185783, 0.704891, 0.485273}, {0.191090, 0.708366, 0.482284},
    {0.196571, 0.711827, 0.479221}, {0.202219, 0.715272, 0.476084}, {0.208030, 0.718701, 0.472873}, {0.214000, 0.722114, 0.469588},
    {0.220124, 0.725509, 0.466226}, {0.226397, 0.728888, 0.462789}, {0.232815, 0.732247, 0.459277}, {0.239374, 0.735588, 0.455688},
    {0.246070, 0.738910, 0.452024}, {0.252899, 0.742211, 0.448284}, {0.259857, 0.745492, 0.444467}, {0.266941, 0.748751, 0.440573},
    {0.274149, 0.751988, 0.436601}, {0.281477, 0.755203, 0.432552}, {0.288921, 0.758394, 0.428426}, {0.296479, 0.761561, 0.424223},
    {0.304148, 0.764704, 0.419943}, {0.311925, 0.767822, 0.415586}, {0.319809, 0.770914, 0.411152}, {0.327796, 0.773980, 0.406640},
    {0.335885, 0.777018, 0.402049}, {0.344074, 0.780029, 0.397381}, {0.352360, 0.783011, 0.392636}, {0.360741, 0.785964, 0.387814},
    {0.369214, 0.788888, 0.382914}, {0.377779, 0.791781, 0.377939}, {0.386433, 0.794644, 0.372886}, {0.395174, 0.797475, 0.367757},
    {0.404001, 0.800275, 0.362552}, {0.412913, 0.803041, 0.357269}, {0.421908, 0.805774, 0.351910}, {0.430983, 0.808473, 0.346476},
    {0.440137, 0.811138, 0.340967}, {0.449368, 0.813768, 0.335384}, {0.458674, 0.816363, 0.329727}, {0.468053, 0.818921, 0.323998},
    {0.477504, 0.821444, 0.318195}, {0.487026, 0.823929, 0.312321}, {0.496615, 0.826376, 0.306377}, {0.506271, 0.828786, 0.300362},
    {0.515992, 0.831158, 0.294279}, {0.525776, 0.833491, 0.288127}, {0.535621, 0.835785, 0.281908}, {0.545524, 0.838039, 0.275626},
    {0.555484, 0.840254, 0.269281}, {0.565498, 0.842430, 0.262877}, {0.575563, 0.844566, 0.256415}, {0.585678, 0.846661, 0.249897},
    {0.595839, 0.848717, 0.243329}, {0.606045, 0.850733, 0.236712}, {0.616293, 0.852709, 0.230052}, {0.626579, 0.854645, 0.223353},
    {0.636902, 0.856542, 0.216620}, {0.647257, 0.858400, 0.209861}, {0.657642, 0.860219, 0.203082}, {0.668054, 0.861999, 0.196293},
    {0.678489, 0.863742, 0.189503}, {0.688944, 0.865448, 0.182725}, {0.699415, 0.867117, 0.175971}, {0.709898, 0.868751, 0.169257},
    {0.720391, 0.870350, 0.162603}, {0.730889, 0.871916, 0.156029}, {0.741388, 0.873449, 0.149561}, {0.751884, 0.874951, 0.143228},
    {0.762373, 0.876424, 0.137064}, {0.772852, 0.877868, 0.131109}, {0.783315, 0.879285, 0.125405}, {0.793760, 0.880678, 0.120005},
    {0.804182, 0.882046, 0.114965}, {0.814576, 0.883393, 0.110347}, {0.824940, 0.884720, 0.106217}, {0.835270, 0.886029, 0.102646},
    {0.845561, 0.887322, 0.099702}, {0.855810, 0.888601, 0.097452}, {0.866013, 0.889868, 0.095953}, {0.876168, 0.891125, 0.095250},
    {0.886271, 0.892374, 0.095374}, {0.896320, 0.893616, 0.096335}, {0.906311, 0.894855, 0.098125}, {0.916242, 0.896091, 0.100717},
    {0.926106, 0.897330, 0.104071}, {0.935904, 0.898570, 0.108131}, {0.945636, 0.899815, 0.112838}, {0.955300, 0.901065, 0.118128},
    {0.964894, 0.902323, 0.123941}, {0.974417, 0.903590, 0.130215}, {0.983868, 0.904867, 0.136897}, {0.993248, 0.906157, 0.143936},
};

int colormap_parse(const char *name, Colormap *out) {
    static const Colormap all[NCMAP] = {CMAP_JET, CMAP_VIRIDIS, CMAP_GRAY};
    for (int i = 0; i < NCMAP; i++)
        if (name && strcmp(name, colormap_name(all[i])) == 0) {
            *out = all[i];
            return 0;
        }
    return -1;
}

const char *colormap_name(Colormap c) {
    switch (c) {
        case CMAP_JET: return "jet";
        case CMAP_VIRIDIS: return "viridis";
        case CMAP_GRAY: return "gray";
    }
    return "?";
}

static double segments_eval(const Segments *s, double v) {
    for (int i = 1; i < s->n; i++)
        if (v <= s->p[i][0]) {
            double x0 = s->p[i - 1][0], y0 = s->p[i - 1][1], x1 = s->p[i][0], y1 = s->p[i][1];
            return y0 + (v - x0) / (x1 - x0) * (y1 - y0);
        }
    return s->p[s->n - 1][1];
}

void colormap_apply(Colormap c, float v, float rgb[3]) {
    if (!(v > 0.0f)) v = 0.0f;  // NaN too
    if (v > 1.0f) v = 1.0f;
    switch (c) {
        case CMAP_JET:
            for (int k = 0; k < 3; k++) rgb[k] = (float)segments_eval(&jet_segments[k], v);
            return;
        case CMAP_VIRIDIS: {
            float x = v * 255.0f;
            int i = (int)x;
            if (i > 254) i = 254;
            float t = x - (float)i;
            for (int k = 0; k < 3; k++) rgb[k] = viridis_table[i][k] + t * (viridis_table[i + 1][k] - viridis_table[i][k]);
            return;
        }
        case CMAP_GRAY: rgb[0] = rgb[1] = rgb[2] = v; return;
    }
    DIE("colormap_apply: unknown colour map %d", (int)c);
}

int colormap_render(Colormap c, const Image *gray, Image *rgb) {
    if (rgb == gray) return -1;  // rgb is overwritten; it must be another Image
    memset(rgb, 0, sizeof(*rgb));
    if (!gray || !gray->data || gray->C != 1 || image_alloc(rgb, 3, gray->H, gray->W) != 0) return -1;
    rgb->bits = gray->bits;
    size_t HW = (size_t)gray->H * (size_t)gray->W;
#pragma omp parallel for schedule(static) if (HW > 65536)
    for (size_t i = 0; i < HW; i++) {
        float px[3];
        colormap_apply(c, gray->data[i], px);
        for (int k = 0; k < 3; k++) rgb->data[(size_t)k * HW + i] = px[k];
    }
    return 0;
}

// ---------------------------------------------------------------- inverse

#define MAX_SEGMENTS 255  // viridis: 256 entries; segment numbers fit a uint8_t

typedef struct {
    int n;                          // segments; segment i joins vertices i and i + 1
    float a[MAX_SEGMENTS][3];       // (n, 3) start colour
    float ab[MAX_SEGMENTS][3];      // (n, 3) end - start
    float inv_len2[MAX_SEGMENTS];   // (n) 1 / |ab|^2, 0 on a flat stretch
    float v0[MAX_SEGMENTS], dv[MAX_SEGMENTS];  // (n) v at the start, v(end) - v(start)
    uint32_t *cell;                 // (GRID^3 + 1) offsets into cand
    uint8_t *cand;                  // candidate segments of every cell, cell after cell, nearest the centre first
    float *cdist;                   // distance from the cell centre to each candidate (ascending within a cell)
} Inverse;

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

// The map's breakpoints, ascending: where it bends (jet: every channel's; viridis: its entries).
static int breakpoints(Colormap c, double *v) {
    int n = 0;
    switch (c) {
        case CMAP_JET:
            for (int k = 0; k < 3; k++)
                for (int i = 0; i < jet_segments[k].n; i++) v[n++] = jet_segments[k].p[i][0];
            qsort(v, (size_t)n, sizeof(double), cmp_double);
            {
                int m = 0;
                for (int i = 0; i < n; i++)
                    if (m == 0 || v[i] != v[m - 1]) v[m++] = v[i];
                n = m;
            }
            break;
        case CMAP_VIRIDIS:
            for (int i = 0; i < 256; i++) v[n++] = i / 255.0;
            break;
        case CMAP_GRAY: v[n++] = 0, v[n++] = 1; break;
    }
    CHECK(n >= 2 && n <= MAX_SEGMENTS + 1, "colormap %s: %d breakpoints", colormap_name(c), n);
    return n;
}

static void inverse_segments(Inverse *t, Colormap c) {
    double v[MAX_SEGMENTS + 1];  // viridis' 256 entries; jet's 16 before duplicates go
    int nv = breakpoints(c, v);
    float prev[3], cur[3];
    colormap_apply(c, (float)v[0], prev);
    t->n = nv - 1;
    for (int i = 0; i < t->n; i++, memcpy(prev, cur, sizeof(cur))) {
        colormap_apply(c, (float)v[i + 1], cur);
        float len2 = 0;
        for (int k = 0; k < 3; k++) {
            t->a[i][k] = prev[k], t->ab[i][k] = cur[k] - prev[k];
            len2 += t->ab[i][k] * t->ab[i][k];
        }
        t->inv_len2[i] = len2 > 0 ? 1.0f / len2 : 0.0f;
        t->v0[i] = (float)v[i], t->dv[i] = (float)(v[i + 1] - v[i]);
    }
}

// Squared distance from p to segment i; *s the position along it in [0, 1] (a flat stretch: 0.5).
static inline float seg_dist2(const Inverse *t, int i, const float p[3], float *s) {
    const float *a = t->a[i], *ab = t->ab[i];
    float ap0 = p[0] - a[0], ap1 = p[1] - a[1], ap2 = p[2] - a[2];
    float u = (ap0 * ab[0] + ap1 * ab[1] + ap2 * ab[2]) * t->inv_len2[i];
    u = t->inv_len2[i] == 0.0f ? 0.5f : u < 0.0f ? 0.0f : u > 1.0f ? 1.0f : u;
    float d0 = ap0 - u * ab[0], d1 = ap1 - u * ab[1], d2 = ap2 - u * ab[2];
    *s = u;
    return d0 * d0 + d1 * d1 + d2 * d2;
}

// Segments among from[0..nfrom) within d* + 2h of the centre of cell (x, y, z) of a G^3 grid,
// nearest first, with their distances from the centre in dist.
static int cell_candidates(uint8_t *out, float *dist, const Inverse *t, const uint8_t *from, int nfrom, int G, int x, int y, int z) {
    float ctr[3] = {(x + 0.5f) / G, (y + 0.5f) / G, (z + 0.5f) / G}, best = INFINITY, s, d[MAX_SEGMENTS];
    for (int i = 0; i < nfrom; i++) best = fminf(best, d[i] = seg_dist2(t, from[i], ctr, &s));
    float lim = sqrtf(best) + sqrtf(3.0f) / G * 1.0001f + 1e-6f;  // d* + 2h, widened for rounding
    lim *= lim;
    int n = 0;
    for (int i = 0; i < nfrom; i++)
        if (d[i] <= lim) out[n] = from[i], dist[n++] = sqrtf(d[i]);
    for (int i = 1; i < n; i++) {  // insertion sort: short lists, mostly in order already
        uint8_t o = out[i];
        float di = dist[i];
        int j = i;
        for (; j > 0 && dist[j - 1] > di; j--) out[j] = out[j - 1], dist[j] = dist[j - 1];
        out[j] = o, dist[j] = di;
    }
    return n;
}

static void inverse_grid(Inverse *t) {
    enum { NC = COARSE * COARSE * COARSE, NF = GRID * GRID * GRID, SUB = GRID / COARSE };
    uint8_t all[MAX_SEGMENTS];
    for (int i = 0; i < t->n; i++) all[i] = (uint8_t)i;
    uint8_t *coarse = xmalloc((size_t)NC * (size_t)t->n);  // (NC, n) lists
    float *cdist = xmalloc((size_t)NC * (size_t)t->n * sizeof(float));
    int *ncoarse = xmalloc(NC * sizeof(int));
#pragma omp parallel for schedule(dynamic)
    for (int cc = 0; cc < NC; cc++)
        ncoarse[cc] = cell_candidates(coarse + (size_t)cc * (size_t)t->n, cdist + (size_t)cc * (size_t)t->n, t, all, t->n, COARSE,
                                      cc / (COARSE * COARSE), cc / COARSE % COARSE, cc % COARSE);
    free(cdist);
    // fine lists, each in a slot as long as its parent's list, then packed
    size_t *slot = xmalloc((NF + 1) * sizeof(size_t));
    int *nfine = xmalloc(NF * sizeof(int));
    slot[0] = 0;
    for (int f = 0; f < NF; f++) {
        int x = f / (GRID * GRID), y = f / GRID % GRID, z = f % GRID;
        slot[f + 1] = slot[f] + (size_t)ncoarse[(x / SUB * COARSE + y / SUB) * COARSE + z / SUB];
    }
    uint8_t *fine = xmalloc(slot[NF]);
    float *fdist = xmalloc(slot[NF] * sizeof(float));
#pragma omp parallel for schedule(dynamic, 64)
    for (int f = 0; f < NF; f++) {
        int x = f / (GRID * GRID), y = f / GRID % GRID, z = f % GRID, cc = (x / SUB * COARSE + y / SUB) * COARSE + z / SUB;
        nfine[f] = cell_candidates(fine + slot[f], fdist + slot[f], t, coarse + (size_t)cc * (size_t)t->n, ncoarse[cc], GRID, x, y, z);
    }
    t->cell = xmalloc((NF + 1) * sizeof(uint32_t));
    t->cell[0] = 0;
    for (int f = 0; f < NF; f++) {
        memmove(fine + t->cell[f], fine + slot[f], (size_t)nfine[f]);
        memmove(fdist + t->cell[f], fdist + slot[f], (size_t)nfine[f] * sizeof(float));
        t->cell[f + 1] = t->cell[f] + (uint32_t)nfine[f];
    }
    t->cand = xrealloc(fine, t->cell[NF]);
    t->cdist = xrealloc(fdist, t->cell[NF] * sizeof(float));
    free(slot);
    free(nfine);
    free(coarse);
    free(ncoarse);
}

static const Inverse *inverse_table(Colormap c) {
    static Inverse tables[NCMAP];
    static int ready[NCMAP];
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    CHECK(c >= 0 && (int)c < NCMAP, "colormap: unknown colour map %d", (int)c);
    if (__atomic_load_n(&ready[c], __ATOMIC_ACQUIRE)) return &tables[c];
    pthread_mutex_lock(&lock);
    if (!ready[c]) {
        inverse_segments(&tables[c], c);
        inverse_grid(&tables[c]);
        __atomic_store_n(&ready[c], 1, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&lock);
    return &tables[c];
}

static int grid_index(float x) {
    int i = (int)(x * GRID);
    return i < 0 ? 0 : i >= GRID ? GRID - 1 : i;
}

// The map value whose colour is nearest to px; *d2 the squared distance. On a tie a flat stretch
// wins, so its own colour inverts to its middle rather than to one end.
static float invert_one(const Inverse *t, const float px[3], float *d2) {
    float p[3];  // onto the RGB cube, where the grid's guarantee holds (NaN -> 0)
    for (int k = 0; k < 3; k++) p[k] = px[k] > 0.0f ? (px[k] < 1.0f ? px[k] : 1.0f) : 0.0f;
    int ix = grid_index(p[0]), iy = grid_index(p[1]), iz = grid_index(p[2]), cell = (ix * GRID + iy) * GRID + iz;
    // candidates come nearest the cell centre c first; once |c - S| > |p - c| + best distance,
    // no later segment S can be nearer to p (triangle inequality)
    float c0 = p[0] - (ix + 0.5f) / GRID, c1 = p[1] - (iy + 0.5f) / GRID, c2 = p[2] - (iz + 0.5f) / GRID;
    float r = sqrtf(c0 * c0 + c1 * c1 + c2 * c2) * 1.0001f + 1e-6f, bd = INFINITY, reach = INFINITY, v = 0, s;
    for (uint32_t i = t->cell[cell]; i < t->cell[cell + 1] && t->cdist[i] <= reach; i++) {
        int k = t->cand[i];
        float d = seg_dist2(t, k, p, &s);
        if (d < bd || (d == bd && t->inv_len2[k] == 0.0f)) bd = d, v = t->v0[k] + s * t->dv[k], reach = r + sqrtf(d) * 1.0001f;
    }
    *d2 = bd;
    return v;
}

int colormap_invert(Colormap c, const Image *rgb, Image *gray) {
    if (gray == rgb) return -1;  // gray is overwritten; it must be another Image
    memset(gray, 0, sizeof(*gray));
    if (!rgb || !rgb->data || rgb->C != 3) return -1;
    const Inverse *t = inverse_table(c);
    if (image_alloc(gray, 1, rgb->H, rgb->W) != 0) return -1;
    gray->bits = rgb->bits;
    size_t HW = (size_t)rgb->H * (size_t)rgb->W;
#pragma omp parallel for schedule(static) if (HW > 16384)
    for (size_t i = 0; i < HW; i++) {
        float p[3] = {rgb->data[i], rgb->data[HW + i], rgb->data[2 * HW + i]}, d2;
        gray->data[i] = invert_one(t, p, &d2);
    }
    return 0;
}

// tol is a Euclidean distance in RGB with channels in [0, 1] (0.1 = about 26 levels of 255).
double colormap_fit(Colormap c, const Image *rgb, float tol) {
    if (!rgb || !rgb->data || rgb->C != 3) return -1.0;
    const Inverse *t = inverse_table(c);
    size_t HW = (size_t)rgb->H * (size_t)rgb->W, near = 0;
    float tol2 = tol * tol;
#pragma omp parallel for schedule(static) reduction(+ : near) if (HW > 16384)
    for (size_t i = 0; i < HW; i++) {
        float p[3] = {rgb->data[i], rgb->data[HW + i], rgb->data[2 * HW + i]}, d2;
        invert_one(t, p, &d2);
        near += d2 <= tol2;
    }
    return (double)near / (double)HW;
}
