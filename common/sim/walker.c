// walker.c: the Boulic-Thalmann global walking model driving 16 ellipsoids seen by a coherent
// Doppler radar, turned into a micro-Doppler spectrogram. docs/simulator.md has the equations, the
// parameter table, the sources and what differs from the real 77 GHz FMCW data.
//
// One spectrogram:
//   traits + per-sample jitter -> Gait (segment lengths, cycle timing, joint-angle curves)
//   -> every KIN_DECIM pulses: pose (17 joints) -> 16 ellipsoids (RCS from the line of sight)
//      -> PTS_PER_PART scattering centres on each ellipsoid's surface (range R, amplitude)
//   -> baseband s[n] = sum_i A_i exp(-j 4 pi R_i(t_n) / lambda) + receiver noise, at the PRF
//      (R and A linear between kinematic samples, so each phasor turns by a constant per pulse)
//   -> STFT (Hann, FFTW) -> |X|^2 in dB, clipped to [peak - floor, peak] -> crop +-doppler_max
//   -> resample to (H, W): linear when growing, box average when shrinking.
// Thread-safe: all state lives in the call; only the FFTW plan is shared, created once under a
// mutex and run with fftwf_execute_dft (the one FFTW call documented as thread-safe).
#include "sim/walker.h"

#include <fftw3.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "rng.h"

#define C_LIGHT 299792458.0
#define DEG (M_PI / 180.0)
#define KIN_DECIM 16      // pulses per kinematic sample (500 Hz at the default PRF; 8 or 32
                          // change the image by < 0.01 and < 0.03)
#define PTS_PER_PART 8    // scattering centres per ellipsoid: a limb's points move at different
                          // speeds and interfere, which spreads and speckles its Doppler as in real data
#define DIFFUSE 6.0       // diffuse RCS per m^2 of projected area, added to the specular ellipsoid RCS
#define PHASE_WALK 0.15   // cycles: each centre's phase wanders by up to +- this per kinematic step
                          // (clothing and skin micro-motion), spreading its Doppler line and
                          // decorrelating the centres between frames: speckle
#define PART_JITTER 0.25  // per-sample log-normal amplitude gain of each part (sd, nepers: ~2 dB in power)
#define RADAR_HEIGHT 1.0  // m above the ground
#define RV_REF 1.2        // relative velocity of the reference walker gait_cycles is counted for

// ---- geometry ----
typedef struct { double x, y, z; } V3;
typedef struct { double m[9]; } M3;  // row-major rotation

static inline V3 v3(double x, double y, double z) { return (V3){x, y, z}; }
static inline V3 add(V3 a, V3 b) { return v3(a.x + b.x, a.y + b.y, a.z + b.z); }
static inline V3 sub(V3 a, V3 b) { return v3(a.x - b.x, a.y - b.y, a.z - b.z); }
static inline V3 scl(V3 a, double s) { return v3(a.x * s, a.y * s, a.z * s); }
static inline double dot(V3 a, V3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
static inline double norm(V3 a) { return sqrt(dot(a, a)); }
static inline V3 cross(V3 a, V3 b) { return v3(a.y * b.z - a.z * b.y, a.z * b.x - a.x * b.z, a.x * b.y - a.y * b.x); }
static inline V3 apply(const M3 *r, V3 p) {
    const double *m = r->m;
    return v3(m[0] * p.x + m[1] * p.y + m[2] * p.z, m[3] * p.x + m[4] * p.y + m[5] * p.z, m[6] * p.x + m[7] * p.y + m[8] * p.z);
}
static M3 mul(const M3 *a, const M3 *b) {
    M3 r;
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++)
            r.m[3 * i + j] = a->m[3 * i] * b->m[j] + a->m[3 * i + 1] * b->m[3 + j] + a->m[3 * i + 2] * b->m[6 + j];
    return r;
}
static M3 rot_x(double a) { double c = cos(a), s = sin(a); return (M3){{1, 0, 0, 0, c, -s, 0, s, c}}; }
// positive tips +z towards +x (a forward lean of something pointing up)
static M3 rot_y(double a) { double c = cos(a), s = sin(a); return (M3){{c, 0, s, 0, 1, 0, -s, 0, c}}; }
static M3 rot_z(double a) { double c = cos(a), s = sin(a); return (M3){{c, -s, 0, s, c, 0, 0, 0, 1}}; }

// ---- body: joints and the 16 ellipsoids (Chen's set) ----
enum { J_BASE, J_NECK, J_HEAD, J_LSH, J_RSH, J_LELB, J_RELB, J_LHAND, J_RHAND, J_LHIP, J_RHIP,
       J_LKNEE, J_RKNEE, J_LANK, J_RANK, J_LTOE, J_RTOE, NJ };

// Axis from joint a to joint b, semi-axis c = half that length; radii (m) for a 1.8 m person of
// average build (Chen's), scaled by height / 1.8 and by body_scale^build: build widens the trunk
// far more than the limbs, so it moves the balance between the torso line and the limb swings.
typedef struct { const char *name; int a, b; double ra, rb, build; } Part;
#define TRUNK_BUILD 2.0
#define LIMB_BUILD 0.0
static const Part PARTS[] = {
    {"head", J_NECK, J_HEAD, 0.10, 0.10, LIMB_BUILD},         {"torso", J_BASE, J_NECK, 0.15, 0.15, TRUNK_BUILD},
    {"l_shoulder", J_NECK, J_LSH, 0.06, 0.06, TRUNK_BUILD},   {"r_shoulder", J_NECK, J_RSH, 0.06, 0.06, TRUNK_BUILD},
    {"l_upper_arm", J_LSH, J_LELB, 0.06, 0.06, LIMB_BUILD},   {"r_upper_arm", J_RSH, J_RELB, 0.06, 0.06, LIMB_BUILD},
    {"l_lower_arm", J_LELB, J_LHAND, 0.05, 0.05, LIMB_BUILD}, {"r_lower_arm", J_RELB, J_RHAND, 0.05, 0.05, LIMB_BUILD},
    {"l_hip", J_BASE, J_LHIP, 0.07, 0.07, TRUNK_BUILD},       {"r_hip", J_BASE, J_RHIP, 0.07, 0.07, TRUNK_BUILD},
    {"l_upper_leg", J_LHIP, J_LKNEE, 0.07, 0.07, LIMB_BUILD}, {"r_upper_leg", J_RHIP, J_RKNEE, 0.07, 0.07, LIMB_BUILD},
    {"l_lower_leg", J_LKNEE, J_LANK, 0.06, 0.06, LIMB_BUILD}, {"r_lower_leg", J_RKNEE, J_RANK, 0.06, 0.06, LIMB_BUILD},
    {"l_foot", J_LANK, J_LTOE, 0.05, 0.05, LIMB_BUILD},       {"r_foot", J_RANK, J_RTOE, 0.05, 0.05, LIMB_BUILD},
};
#define NPART 16
#define P_TORSO 1
#define NSCAT (NPART * PTS_PER_PART)

// ---- periodic piecewise-cubic curves (Boulic's control points, PCHIP as in Chen's code) ----
typedef struct {
    int n;                        // control points over three periods [-1, 2)
    double x[18], y[18], d[18];   // abscissae (cycle fraction), values (deg), slopes
} Curve;

static void curve_init(Curve *c, const double *x, const double *y, int m) {
    c->n = 3 * m;
    for (int p = 0; p < 3; p++)
        for (int i = 0; i < m; i++) {
            c->x[p * m + i] = x[i] + (p - 1);
            c->y[p * m + i] = y[i];
        }
    // Fritsch-Carlson (PCHIP) slopes: weighted harmonic mean of the neighbouring secants, zero at
    // extrema, so the curve never overshoots the control values
    for (int k = 0; k < c->n; k++) {
        if (k == 0 || k == c->n - 1) { c->d[k] = 0; continue; }  // outer period: never evaluated
        double h0 = c->x[k] - c->x[k - 1], h1 = c->x[k + 1] - c->x[k];
        double s0 = (c->y[k] - c->y[k - 1]) / h0, s1 = (c->y[k + 1] - c->y[k]) / h1;
        if (s0 * s1 <= 0) c->d[k] = 0;
        else {
            double w1 = 2 * h1 + h0, w2 = h1 + 2 * h0;
            c->d[k] = (w1 + w2) / (w1 / s0 + w2 / s1);
        }
    }
}

static double curve_eval(const Curve *c, double t) {
    t -= floor(t);
    int k = c->n / 3 - 1;  // last point of the first period, always < 0 <= t
    while (k + 1 < c->n - 1 && c->x[k + 1] <= t) k++;
    double h = c->x[k + 1] - c->x[k], s = (t - c->x[k]) / h, s2 = s * s, s3 = s2 * s;
    return (2 * s3 - 3 * s2 + 1) * c->y[k] + (s3 - 2 * s2 + s) * h * c->d[k] + (-2 * s3 + 3 * s2) * c->y[k + 1] +
           (s3 - s2) * h * c->d[k + 1];
}

// ---- the gait of one walker (Boulic, Magnenat-Thalmann & Thalmann 1990, appendices A-D) ----
typedef struct {
    double height, Ht, rv, v, dc, dsmod;  // m, leg length m, relative velocity 1/s, speed m/s, cycle s, support fraction
    double head, shoulder, torso, hip, uleg, lleg, foot, uarm, larm;  // m (shoulder, hip: half widths)
    double av, al, af, phia;                // translations: vertical, lateral, fore/aft amplitudes (m), phase
    double a1, a2, a3, ash;                 // pelvis tilt, pelvis list, pelvis torsion, shoulder (deg)
    double arm_gain, side_gain[2];          // [0] left, [1] right
    Curve hip_flex, knee_flex, ankle_flex, thorax, elbow_flex;
} Gait;

static double clampd(double x, double lo, double hi) { return x < lo ? lo : x > hi ? hi : x; }

static void gait_init(Gait *g, double height, double rv, double arm_swing, double asymmetry) {
    rv = clampd(rv, 0.5, 3.0);  // the model's walking range (gaits b and c)
    g->height = height;
    g->head = 0.130 * height;
    g->shoulder = 0.259 / 2 * height;
    g->torso = 0.288 * height;
    g->hip = 0.191 / 2 * height;
    g->uleg = 0.245 * height;
    g->lleg = 0.246 * height;
    g->foot = 0.143 * height;
    g->uarm = 0.188 * height;
    g->larm = 0.152 * height;
    g->Ht = g->uleg + g->lleg;
    g->rv = rv;
    g->v = rv * g->Ht;                      // RV = V / Ht
    double rlc = 1.346 * sqrt(rv);          // relative length of a cycle (in leg lengths)
    g->dc = rlc / rv;                       // duration of a cycle, s = 1.346 / sqrt(RV)
    double ds = 0.752 * g->dc - 0.143;      // duration of support, s
    g->dsmod = ds / g->dc;
    double q = (rv - 1.3) / 1.7;            // gait c interpolation (RV in [1.3, 3])
    int c = rv >= 1.3;
    g->av = 0.015 * rv * g->Ht;
    g->al = -0.032 * g->Ht;
    g->af = -0.021 * g->Ht;
    g->phia = 0.625 - g->dsmod;
    g->a1 = 2.0;                            // deg
    g->a2 = 2.0 * rv;                       // deg (see docs/simulator.md: Chen's code has it ~0)
    g->a3 = 4.0 * rv;                       // deg
    g->ash = 9.88 * rv * arm_swing;         // deg
    g->arm_gain = arm_swing;
    g->side_gain[0] = 1.0 - asymmetry / 2;  // left/right imbalance of joint-angle amplitudes
    g->side_gain[1] = 1.0 + asymmetry / 2;

    if (!c) {
        curve_init(&g->hip_flex, (double[]){-0.1, 0.5}, (double[]){25, -15}, 2);
        curve_init(&g->knee_flex, (double[]){0.17, 0.4, 0.75, 1.0}, (double[]){3, 3, 70, 3}, 4);
        curve_init(&g->ankle_flex, (double[]){0, 0.08, 0.5, g->dsmod, 0.85}, (double[]){-3, -18, 8, -20, -3}, 5);
        double b = (rv - 0.5) / 0.8;
        curve_init(&g->elbow_flex, (double[]){0.05, 0.01 * b + 0.5, 0.9},
                   (double[]){8 * b + 6, 24 * b + 20, 9 * b + 8}, 3);
    } else {
        double x1 = 0.2 * q - 0.1;
        if (x1 + 1 - 0.9 < 1e-9) curve_init(&g->hip_flex, (double[]){-0.1, 0.5}, (double[]){25, -15}, 2);
        else curve_init(&g->hip_flex, (double[]){x1, 0.5, 0.9}, (double[]){5 * q + 25, -15, 6 * q + 25}, 3);
        curve_init(&g->knee_flex, (double[]){-0.05 * q + 0.17, 0.4, -0.05 * q + 0.75, -0.03 * q + 1.0},
                   (double[]){22 * q + 3, 3, -5 * q + 70, 3 * q + 3}, 4);
        curve_init(&g->ankle_flex, (double[]){0, 0.08, -0.1 * q + 0.5, g->dsmod, 0.85},
                   (double[]){5 * q - 3, 4 * q - 18, -3 * q + 8, -8 * q - 20, 5 * q - 3}, 5);
        curve_init(&g->elbow_flex, (double[]){0.05, 0.04 * q + 0.51, -0.1 * q + 0.9},
                   (double[]){-6 * q + 14, 26 * q + 44, -6 * q + 17}, 3);
    }
    curve_init(&g->thorax, (double[]){0.1, 0.4, 0.6, 0.9},
               (double[]){4.0 / 3 * rv, -4.5 / 3 * rv, -4.0 / 3 * rv, 4.5 / 3 * rv}, 4);
}

// The pelvis list (left/right rotation), piecewise cosines over the cycle (Boulic appendix B).
static double pelvis_list(double a2, double t) {
    if (t < 0.15) return -a2 + a2 * cos(2 * M_PI * 10 * t / 3);
    if (t < 0.50) return -a2 - a2 * cos(2 * M_PI * 10 * (t - 0.15) / 7);
    if (t < 0.65) return a2 - a2 * cos(2 * M_PI * 10 * (t - 0.5) / 3);
    return a2 + a2 * cos(2 * M_PI * 10 * (t - 0.65) / 7);
}

// A segment of length L hanging at angle th (rad) from the downward vertical, positive forward.
static inline V3 hang(double L, double th) { return v3(L * sin(th), 0, -L * cos(th)); }

// One leg in the pelvis frame; side 0 = left (+y), 1 = right; the left leg runs half a cycle later.
static void leg_pose(const Gait *g, int side, double t, V3 *p) {  // p: hip, knee, ankle, toe
    double ts = side ? t : t + 0.5, gain = g->side_gain[side];
    double th_h = gain * curve_eval(&g->hip_flex, ts) * DEG;
    double th_k = gain * curve_eval(&g->knee_flex, ts) * DEG;
    double th_a = curve_eval(&g->ankle_flex, ts) * DEG;  // + dorsiflexion (toes up)
    double th_s = th_h - th_k;                           // shank: the knee bends it backwards
    double th_f = th_s + th_a;                           // foot above the horizontal (square to the shank at 0)
    p[0] = v3(0, side ? -g->hip : g->hip, 0);
    p[1] = add(p[0], hang(g->uleg, th_h));
    p[2] = add(p[1], hang(g->lleg, th_s));
    p[3] = add(p[2], v3(g->foot * cos(th_f), 0, g->foot * sin(th_f)));
}

// One arm in the thorax frame (shoulder at the top of the torso).
static void arm_pose(const Gait *g, int side, double t, V3 *p) {  // p: shoulder, elbow, hand
    double ts = side ? t : t + 0.5, gain = g->side_gain[side];
    double th_s = gain * (3 - g->ash / 2 - g->ash * cos(2 * M_PI * ts)) * DEG;  // right arm back at right heel strike
    double th_e = gain * g->arm_gain * curve_eval(&g->elbow_flex, ts) * DEG;
    p[0] = v3(0, side ? -g->shoulder : g->shoulder, g->torso);
    p[1] = add(p[0], hang(g->uarm, th_s));
    p[2] = add(p[1], hang(g->larm, th_s + th_e));  // elbow flexion swings the forearm forward
}

// Joint positions in the walker's frame (x forward, y left, z up, origin on the ground under the
// spine base at tau = 0) at cycle time tau (cycles since the start, continuous).
static void gait_pose(const Gait *g, double tau, V3 *j) {
    double t = tau - floor(tau);
    // translations of the spine base (appendix A), on top of the steady walk V * time
    V3 tr = v3(g->af * sin(2 * M_PI * (2 * t + 2 * g->phia)) + tau * g->v * g->dc,
               g->al * sin(2 * M_PI * (t - 0.1)),
               g->Ht - g->av + g->av * sin(2 * M_PI * (2 * t - 0.35)));
    // pelvis (appendix B): torsion about z (right hip forward at right heel strike), list about x
    M3 rz = rot_z(g->a3 * cos(2 * M_PI * t) * DEG), rx = rot_x(pelvis_list(g->a2, t) * DEG);
    M3 pelvis = mul(&rz, &rx);
    for (int side = 0; side < 2; side++) {
        V3 p[4];
        leg_pose(g, side, t, p);
        j[J_LHIP + side] = add(apply(&pelvis, p[0]), tr);
        j[J_LKNEE + side] = add(apply(&pelvis, p[1]), tr);
        j[J_LANK + side] = add(apply(&pelvis, p[2]), tr);
        j[J_LTOE + side] = add(apply(&pelvis, p[3]), tr);
    }
    // upper body (appendix D): forward tilt of the back, thorax torsion against the pelvis
    M3 tz = rot_z(-curve_eval(&g->thorax, t) * DEG), ty = rot_y((g->a1 - g->a1 * sin(2 * M_PI * (2 * t - 0.1))) * DEG);
    M3 thorax = mul(&tz, &ty);
    V3 up[NJ];
    up[J_NECK] = v3(0, 0, g->torso);
    up[J_HEAD] = v3(0, 0, g->torso + g->head);
    for (int side = 0; side < 2; side++) {
        V3 p[3];
        arm_pose(g, side, t, p);
        up[J_LSH + side] = p[0];
        up[J_LELB + side] = p[1];
        up[J_LHAND + side] = p[2];
    }
    static const int upper[8] = {J_NECK, J_HEAD, J_LSH, J_RSH, J_LELB, J_RELB, J_LHAND, J_RHAND};
    for (int i = 0; i < 8; i++) j[upper[i]] = add(apply(&thorax, up[upper[i]]), tr);
    j[J_BASE] = tr;
}

// ---- traits ----
void walker_traits(WalkerTraits *t, uint64_t seed, int index) {
    Rng r;
    rng_seed(&r, seed ^ (0x9e3779b97f4a7c15ULL * (uint64_t)(index + 1)));
    t->height = 1.50f + 0.45f * rng_uniform(&r);
    t->rel_speed = 0.90f + 0.80f * rng_uniform(&r);
    t->arm_swing = 0.40f + 1.00f * rng_uniform(&r);
    t->asymmetry = 0.25f * rng_uniform(&r);
    t->body_scale = 0.85f + 0.35f * rng_uniform(&r);
    t->aspect_deg = 40.0f * rng_uniform(&r);
}

float walker_speed_mps(const WalkerTraits *t) { return (float)(clampd(t->rel_speed, 0.5, 3.0) * (0.245 + 0.246) * t->height); }
float walker_cycle_s(const WalkerTraits *t) { return (float)(1.346 / sqrt(clampd(t->rel_speed, 0.5, 3.0))); }
float radar_window_s(const RadarConfig *rc) { return (float)(rc->gait_cycles * 1.346 / sqrt(RV_REF)); }

RadarConfig radar_default(void) {
    return (RadarConfig){
        .carrier_hz = 77e9f,
        .prf_hz = 8000.0f,         // > 2 x 3.9 kHz, the fastest toe (7.6 m/s) of the fastest trait walker
        .range_m = 10.0f,
        .window = 128,             // 16 ms, 62.5 Hz (0.12 m/s) bins: ~80 bins across the crop
        .hop = 128,
        .db_floor = 40.0f,
        .doppler_max_hz = 2500.0f, // +-4.9 m/s: the torso of a 1.2 m/s walker sits a quarter of the
                                   // way down, the lower legs reach ~3/4, as in gait10
        .gait_cycles = 2.0f,
        .noise_db = -20.0f,
    };
}

// ---- FFTW: one plan per window length, made once under a lock, run with new-array execute ----
static pthread_mutex_t plan_lock = PTHREAD_MUTEX_INITIALIZER;
static struct { int n; fftwf_plan p; } plans[8];

static fftwf_plan plan_for(int n) {
    fftwf_plan p = NULL;
    pthread_mutex_lock(&plan_lock);
    for (int i = 0; i < 8 && !p; i++)
        if (plans[i].n == n) p = plans[i].p;
    if (!p) {
        int i = 0;
        while (i < 8 && plans[i].n) i++;
        CHECK(i < 8, "walker: more than 8 STFT window lengths in one process");
        fftwf_complex *a = fftwf_malloc(sizeof(fftwf_complex) * (size_t)n);
        fftwf_complex *b = fftwf_malloc(sizeof(fftwf_complex) * (size_t)n);
        CHECK(a && b, "walker: out of memory for an FFTW plan of %d points", n);
        p = fftwf_plan_dft_1d(n, a, b, FFTW_FORWARD, FFTW_ESTIMATE);
        CHECK(p, "walker: FFTW could not plan a %d-point DFT", n);
        fftwf_free(a);
        fftwf_free(b);
        plans[i].n = n;
        plans[i].p = p;
    }
    pthread_mutex_unlock(&plan_lock);
    return p;
}

static void *xaligned(size_t n) {  // FFTW's arrays must be aligned as at planning (SIMD)
    void *p = NULL;
    CHECK(posix_memalign(&p, 64, n ? n : 64) == 0, "walker: out of memory (%zu bytes)", n);
    return p;
}

// ---- the scene: walker, radar at the origin, scattering centres ----
typedef struct {
    Gait g;
    M3 heading;          // walker frame -> radar frame (about z by the aspect angle)
    V3 start;            // where the walker frame's origin is in the radar frame
    V3 radar;
    double radius_scale[NPART], range_ref, phase0;
    float along[NSCAT];  // each centre's place along its ellipsoid's axis, 0 .. 1
    float cos_around[NSCAT], sin_around[NSCAT];  // and around it, on the surface
    float weight[NSCAT]; // Rayleigh amplitude weight, E[w^2] = 1, times the sample's part gain
} Scene;

// Range (m) and amplitude of every scattering centre at time s (seconds into the window).
static void scene_scatter(const Scene *sc, double s, double *R, float *A) {
    V3 j[NJ];
    gait_pose(&sc->g, sc->phase0 + s / sc->g.dc, j);
    for (int i = 0; i < NJ; i++) j[i] = add(apply(&sc->heading, j[i]), sc->start);
    const double *h = sc->heading.m;
    V3 forward = v3(h[0], h[3], h[6]), lateral = v3(h[1], h[4], h[7]);
    for (int p = 0; p < NPART; p++) {
        const Part *pt = &PARTS[p];
        V3 a = j[pt->a], ab = sub(j[pt->b], a);
        double len = norm(ab), c = 0.5 * len;
        V3 ec = scl(ab, 1.0 / len), u = sub(sc->radar, add(a, scl(ab, 0.5)));
        u = scl(u, 1.0 / norm(u));  // line of sight, ellipsoid centre -> radar
        // ea across the body (for the shoulders and hips, which lie across it: forward), eb = ec x ea
        V3 ref = fabs(dot(lateral, ec)) > 0.7 ? forward : lateral;
        V3 ea = sub(ref, scl(ec, dot(ref, ec)));
        ea = scl(ea, 1.0 / norm(ea));
        V3 eb = cross(ec, ea);
        double ra = pt->ra * sc->radius_scale[p], rb = pt->rb * sc->radius_scale[p];
        double ua = dot(u, ea), ub = dot(u, eb), uc = dot(u, ec);  // sin th cos ph, sin th sin ph, cos th
        // Chen's ellipsoid RCS: pi a^2 b^2 c^2 / (a^2 sin^2 th cos^2 ph + b^2 sin^2 th sin^2 ph + c^2 cos^2 th)^2
        double den = ra * ra * ua * ua + rb * rb * ub * ub + c * c * uc * uc;
        double sigma = M_PI * ra * ra * rb * rb * c * c / (den * den);
        // + diffuse scattering from the projected area pi sqrt(b^2 c^2 ua^2 + a^2 c^2 ub^2 + a^2 b^2 uc^2)
        sigma += DIFFUSE * M_PI * sqrt(rb * rb * c * c * ua * ua + ra * ra * c * c * ub * ub + ra * ra * rb * rb * uc * uc);
        double amp = sqrt(sigma / PTS_PER_PART);
        for (int q = p * PTS_PER_PART; q < (p + 1) * PTS_PER_PART; q++) {
            V3 x = add(add(a, scl(ab, sc->along[q])), add(scl(ea, ra * sc->cos_around[q]), scl(eb, rb * sc->sin_around[q])));
            double r = norm(sub(x, sc->radar)), fall = sc->range_ref / r;
            R[q] = r;
            A[q] = (float)(amp * sc->weight[q] * fall * fall);  // two-way spreading: 1/R^2 in amplitude
        }
    }
}

// sin and cos of x, |x| <= pi, to ~1e-7: Taylor series of x/2 (|x/2| <= pi/2), then double angle.
// Written out so the compiler vectorizes the loops that call it.
static inline void sincos_pi(float x, float *s, float *c) {
    float h = 0.5f * x, h2 = h * h;
    float sh = h * (1 + h2 * (-1 / 6.f + h2 * (1 / 120.f + h2 * (-1 / 5040.f + h2 * (1 / 362880.f + h2 * (-1 / 39916800.f))))));
    float ch = 1 + h2 * (-0.5f + h2 * (1 / 24.f + h2 * (-1 / 720.f + h2 * (1 / 40320.f + h2 * (-1 / 3628800.f + h2 * (1 / 479001600.f))))));
    *s = 2 * sh * ch;
    *c = ch * ch - sh * sh;
}

static uint64_t mix_traits(uint64_t h, const WalkerTraits *t) {
    const float f[6] = {t->height, t->rel_speed, t->arm_swing, t->asymmetry, t->body_scale, t->aspect_deg};
    for (int i = 0; i < 6; i++) {
        uint32_t b;
        memcpy(&b, &f[i], 4);
        h = (h ^ b) * 0x100000001b3ULL;
        h ^= h >> 29;
    }
    return h;
}

// Builds the scene for one sample: per-sample jitter (speed, start phase, aspect) drawn from r;
// returns the number of pulses in the window.
static long scene_init(Scene *sc, const WalkerTraits *t, const RadarConfig *rc, Rng *r) {
    double speed = 0.95 + 0.10 * rng_uniform(r);
    sc->phase0 = rng_uniform(r);
    double aspect = (t->aspect_deg - 3.0 + 6.0 * rng_uniform(r)) * DEG;
    gait_init(&sc->g, t->height, t->rel_speed * speed, t->arm_swing, t->asymmetry);
    sc->heading = rot_z(aspect);
    sc->radar = v3(0, 0, RADAR_HEIGHT);
    for (int p = 0; p < NPART; p++) sc->radius_scale[p] = t->height / 1.8 * pow(t->body_scale, PARTS[p].build);
    sc->range_ref = rc->range_m;
    // the scattering centres belong to the person (body, clothing): drawn from the traits alone,
    // the same in every sample; stratified along each axis, anywhere around it
    Rng body;
    rng_seed(&body, mix_traits(0x5ca77e75ULL, t));
    for (int q = 0; q < NSCAT; q++) {
        sc->along[q] = ((float)(q % PTS_PER_PART) + rng_uniform(&body)) / PTS_PER_PART;
        float psi = (float)(2 * M_PI) * rng_uniform(&body);
        sc->cos_around[q] = cosf(psi);
        sc->sin_around[q] = sinf(psi);
        sc->weight[q] = sqrtf(-logf(1.0f - rng_uniform(&body)));
    }
    for (int p = 0; p < NPART; p++) {  // and vary between walks (clothing folds, posture)
        float gain = expf(PART_JITTER * rng_normal(r));
        for (int q = p * PTS_PER_PART; q < (p + 1) * PTS_PER_PART; q++) sc->weight[q] *= gain;
    }
    long N = (long)ceil(radar_window_s(rc) * rc->prf_hz);
    if (N < rc->window) N = rc->window;
    // the walker crosses range_m, at the aspect angle, in the middle of the window
    double half = 0.5 * sc->g.v * (double)N / rc->prf_hz;
    sc->start = v3(rc->range_m - half * cos(aspect), -half * sin(aspect), 0);
    return N;
}

// Baseband samples (N,) re/im: the coherent sum of every centre plus receiver noise.
static void scene_signal(float *sre, float *sim, long N, const Scene *sc, const RadarConfig *rc, Rng *r) {
    double R0[NSCAT], R1[NSCAT], cyc_per_m = -2.0 * rc->carrier_hz / C_LIGHT, torso_pow = 0;  // phase -2 R / lambda, cycles
    float A0[NSCAT], A1[NSCAT], frac[NSCAT], turn[NSCAT];
    double walk[NSCAT];  // cycles
    for (int q = 0; q < NSCAT; q++) walk[q] = 0;
    float zr[NSCAT], zi[NSCAT], wr[NSCAT], wi[NSCAT], am[NSCAT], da[NSCAT];
    enum { LANES = 8 };  // partial sums across lanes keep the pulse loop vectorizable
    scene_scatter(sc, 0.0, R1, A1);
    long k = 0;
    for (long n0 = 0; n0 < N; n0 += KIN_DECIM, k++) {
        long n1 = n0 + KIN_DECIM < N ? n0 + KIN_DECIM : N;
        memcpy(R0, R1, sizeof(R0));
        memcpy(A0, A1, sizeof(A0));
        scene_scatter(sc, (double)(n0 + KIN_DECIM) / rc->prf_hz, R1, A1);
        for (int q = P_TORSO * PTS_PER_PART; q < (P_TORSO + 1) * PTS_PER_PART; q++) torso_pow += A0[q] * A0[q];
        // phase at the step's start (fraction of a cycle), its turn per pulse, amplitude ramp
        for (int q = 0; q < NSCAT; q++) {
            double c = cyc_per_m * R0[q] + walk[q], step = PHASE_WALK * (2 * rng_uniform(r) - 1);
            walk[q] += step;
            frac[q] = (float)(c - floor(c));
            float d = (float)((cyc_per_m * (R1[q] - R0[q]) + step) / KIN_DECIM);
            turn[q] = d - floorf(d + 0.5f);  // a Doppler above PRF / 2 aliases, as in a real radar
        }
        for (int q = 0; q < NSCAT; q++) {
            sincos_pi((float)(2 * M_PI) * (frac[q] - 0.5f), &zi[q], &zr[q]);  // exp(j 2 pi f) = -exp(j 2 pi (f - 1/2))
            zr[q] = -zr[q];
            zi[q] = -zi[q];
            sincos_pi((float)(2 * M_PI) * turn[q], &wi[q], &wr[q]);
            am[q] = A0[q];
            da[q] = (A1[q] - A0[q]) * (1.0f / KIN_DECIM);
        }
        for (long n = n0; n < n1; n++) {
            float accr[LANES] = {0}, acci[LANES] = {0};
            for (int q0 = 0; q0 < NSCAT; q0 += LANES)
                for (int l = 0; l < LANES; l++) {
                    int q = q0 + l;
                    accr[l] += am[q] * zr[q];
                    acci[l] += am[q] * zi[q];
                    float tr = zr[q] * wr[q] - zi[q] * wi[q];
                    zi[q] = zr[q] * wi[q] + zi[q] * wr[q];
                    zr[q] = tr;
                    am[q] += da[q];
                }
            float sr = 0, si = 0;
            for (int l = 0; l < LANES; l++) {
                sr += accr[l];
                si += acci[l];
            }
            sre[n] = sr;
            sim[n] = si;
        }
    }
    torso_pow /= (double)k;
    // receiver noise: complex white Gaussian, noise_db below the torso's mean return power
    float nstd = (float)sqrt(torso_pow * pow(10.0, rc->noise_db / 10.0) / 2);
    for (long n = 0; n < N; n++) {
        sre[n] += nstd * rng_normal(r);
        sim[n] += nstd * rng_normal(r);
    }
}

// STFT with a Hann window: spec (F, win) in dB, bins shifted so that index win/2 is 0 Hz.
static void stft_db(float *spec, int F, const float *sre, const float *sim, int win, int hop) {
    fftwf_complex *in = xaligned(sizeof(fftwf_complex) * (size_t)win), *out = xaligned(sizeof(fftwf_complex) * (size_t)win);
    fftwf_plan plan = plan_for(win);
    float *hann = xmalloc(sizeof(float) * (size_t)win);
    for (int n = 0; n < win; n++) hann[n] = (float)(0.5 - 0.5 * cos(2 * M_PI * (n + 0.5) / win));
    for (int f = 0; f < F; f++) {
        const float *xr = sre + (long)f * hop, *xi = sim + (long)f * hop;
        for (int n = 0; n < win; n++) {
            in[n][0] = hann[n] * xr[n];
            in[n][1] = hann[n] * xi[n];
        }
        fftwf_execute_dft(plan, in, out);
        for (int b = 0; b < win; b++) {
            const float *x = out[(b + win / 2) % win];
            spec[(size_t)f * win + b] = 10.0f * log10f(x[0] * x[0] + x[1] * x[1] + 1e-30f);
        }
    }
    free(hann);
    free(in);
    free(out);
}

// out[i * stride] for i < n_out: the mean of the linear interpolant of in[0 .. n_in) over the cell
// [x0 + i dx, x0 + (i + 1) dx) in input-sample coordinates (dx may be negative): one point per
// cell when growing, several (a box filter) when shrinking.
static void resample_1d(float *out, long stride, int n_out, const float *in, int n_in, double x0, double dx) {
    int m = (int)ceil(fabs(dx) * 2);
    if (m < 1) m = 1;
    for (int i = 0; i < n_out; i++) {
        double acc = 0;
        for (int k = 0; k < m; k++) {
            double x = x0 + (i + (k + 0.5) / m) * dx;
            if (x <= 0) acc += in[0];
            else if (x >= n_in - 1) acc += in[n_in - 1];
            else {
                int xi = (int)x;
                double f = x - xi;
                acc += (1 - f) * in[xi] + f * in[xi + 1];
            }
        }
        out[(long)i * stride] = (float)(acc / m);
    }
}

void walker_spectrogram(float *out, int H, int W, const WalkerTraits *t, const RadarConfig *rc, uint64_t sample_seed) {
    CHECK(H > 0 && W > 0, "walker_spectrogram: bad size %dx%d", H, W);
    CHECK(rc->window >= 8 && rc->hop >= 1 && rc->prf_hz > 0 && rc->carrier_hz > 0 && rc->doppler_max_hz > 0 &&
              rc->doppler_max_hz <= rc->prf_hz / 2 && rc->db_floor > 0 && rc->gait_cycles > 0,
          "walker_spectrogram: bad radar config (window %d, hop %d, prf %g Hz, doppler_max %g Hz)", rc->window, rc->hop,
          rc->prf_hz, rc->doppler_max_hz);
    Rng r;
    rng_seed(&r, mix_traits(sample_seed, t));
    Scene *sc = xmalloc(sizeof(*sc));
    long N = scene_init(sc, t, rc, &r);
    float *sre = xmalloc(sizeof(float) * (size_t)N), *sim = xmalloc(sizeof(float) * (size_t)N);  // (N,)
    scene_signal(sre, sim, N, sc, rc, &r);
    free(sc);

    int win = rc->window, hop = rc->hop, F = (int)((N - win) / hop + 1);
    float *spec = xmalloc(sizeof(float) * (size_t)F * win);  // (F, win) dB
    stft_db(spec, F, sre, sim, win, hop);
    free(sre);
    free(sim);

    // peak inside the Doppler crop; [peak - floor, peak] -> [0, 1]
    double bin_hz = rc->prf_hz / win;
    int b_lo = (int)floor(win / 2 - rc->doppler_max_hz / bin_hz), b_hi = (int)ceil(win / 2 + rc->doppler_max_hz / bin_hz);
    if (b_lo < 0) b_lo = 0;
    if (b_hi > win - 1) b_hi = win - 1;
    float peak = -1e30f;
    for (int f = 0; f < F; f++)
        for (int b = b_lo; b <= b_hi; b++) peak = fmaxf(peak, spec[(size_t)f * win + b]);
    for (size_t i = 0; i < (size_t)F * win; i++) {
        float v = (spec[i] - peak + rc->db_floor) / rc->db_floor;
        spec[i] = v < 0 ? 0 : v > 1 ? 1 : v;
    }

    // rows (top = +doppler_max) for every frame, then columns: column c covers [c, c + 1) N / W
    // pulses, frame f is centred on pulse f hop + win / 2
    float *tmp = xmalloc(sizeof(float) * (size_t)H * F);  // (H, F)
    double x0 = win / 2 + rc->doppler_max_hz / bin_hz, dx = -2 * rc->doppler_max_hz / bin_hz / H;
    for (int f = 0; f < F; f++) resample_1d(tmp + f, F, H, spec + (size_t)f * win, win, x0, dx);
    double fx0 = -0.5 * win / hop, fdx = (double)N / W / hop;
    for (int h = 0; h < H; h++) resample_1d(out + (size_t)h * W, 1, W, tmp + (size_t)h * F, F, fx0, fdx);
    free(tmp);
    free(spec);
}
