// walker.h: a walking person seen by a radar, as a micro-Doppler spectrogram.
// Boulic-Thalmann global walking model (Boulic, Magnenat-Thalmann & Thalmann 1990) drives 16 body
// segments modelled as ellipsoids (Chen's micro-Doppler treatment); each segment's return uses
// the ellipsoid radar cross-section; returns are summed coherently at the carrier, sampled at a
// PRF above the limbs' Doppler, and turned into a spectrogram by an STFT (FFTW3).
// Everything is deterministic from (user traits, sample seed); thread-safe. docs/simulator.md
// has the equations, parameters and sources.
#pragma once
#include <stdint.h>

typedef struct {       // fixed per synthetic user
    float height;      // m
    float rel_speed;   // walking speed / leg length (Boulic's relative velocity, 1/s), 0.5 .. 3;
                       // above ~1.8 the toes exceed the default PRF / 2 and alias
    float arm_swing;   // gain on shoulder/elbow flexion amplitudes
    float asymmetry;   // left/right amplitude imbalance, e.g. 0.0 .. 0.2
    float body_scale;  // build: ellipsoid radius scale (trunk ^2, limbs ^0)
    float aspect_deg;  // walking direction relative to the radar's line of sight: 0 = straight away
                       // from the radar (torso below 0 Hz, as in gait10), 180 = towards it
} WalkerTraits;

typedef struct {
    float carrier_hz;   // 77e9 default
    float prf_hz;       // pulse repetition frequency, high enough that limbs do not alias
    float range_m;      // distance to the radar in the middle of the window
    int window;         // STFT window length (Hann), samples
    int hop;            // STFT hop, samples
    float db_floor;     // dynamic range kept below the peak, dB (e.g. 40)
    float doppler_max_hz;  // crop to [-max, +max]
    float gait_cycles;  // window length in gait cycles (two steps each) of a reference walker
                        // (RV 1.2): a fixed time, so faster walkers show more cycles; 2 = the ~4
                        // steps of a gait10 image
    float noise_db;     // receiver noise relative to the torso return
} RadarConfig;

RadarConfig radar_default(void);
// deterministic traits for user `index` of a set generated with `seed`
void walker_traits(WalkerTraits *t, uint64_t seed, int index);
// one spectrogram (H rows = Doppler, top = positive; W columns = time) in [0, 1] (dB scaled to
// the floor), jittered per sample (speed +-5 %, start phase, aspect +-3 deg, part RCS, micro-motion,
// noise) from sample_seed; out: (H, W)
void walker_spectrogram(float *out, int H, int W, const WalkerTraits *t, const RadarConfig *rc,
                        uint64_t sample_seed);
// what the model makes of the traits (before per-sample jitter): walking speed V = RV * leg length
// (m/s), gait-cycle duration 1.346 / sqrt(RV) (s), and the window length (s)
float walker_speed_mps(const WalkerTraits *t);
float walker_cycle_s(const WalkerTraits *t);
float radar_window_s(const RadarConfig *rc);
