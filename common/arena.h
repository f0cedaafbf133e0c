// arena.h: per-step bump allocator for activations and their gradients.
// The first step grows it in chunks; arena_reset() then merges them into one block, so every
// later step of the same shape runs without a single malloc. arena_mark()/arena_rewind() free
// everything allocated after a mark (activation recomputation frees a block's activations so).
#pragma once
#include <stddef.h>

typedef struct ArenaChunk {
    struct ArenaChunk *next;
    size_t cap, used;
    char *mem;
} ArenaChunk;

// Where an arena's memory lives: NULL is host memory; the CUDA backend passes device memory
// (cuda.h: cuda_arena_memory) so the same allocator hands out activations on the GPU.
typedef struct {
    void *(*alloc)(size_t bytes);  // NULL on failure
    void (*release)(void *p);
    void (*zero)(void *p, size_t bytes);
    const char *where;             // "GPU memory", for messages
} ArenaMemory;

typedef struct {
    const ArenaMemory *mem;  // NULL: host memory
    ArenaChunk *head;  // current chunk (the list holds older ones)
    size_t used;       // bytes handed out since the last reset
    size_t peak;       // largest `used` seen
} Arena;

typedef struct {
    ArenaChunk *chunk;  // the head chunk when the mark was taken
    size_t chunk_used, used;
} ArenaMark;

void arena_init(Arena *a, size_t bytes);
void arena_init_on(Arena *a, size_t bytes, const ArenaMemory *mem);  // device memory
void arena_free(Arena *a);
void *arena_alloc(Arena *a, size_t bytes);   // 64-byte aligned, uninitialised
float *arena_floats(Arena *a, size_t n);     // uninitialised
float *arena_zeros(Arena *a, size_t n);      // zero-filled (gradients accumulate into these)
void arena_reset(Arena *a);                  // forget everything; keep (and merge) the memory
ArenaMark arena_mark(const Arena *a);
// frees what was allocated since m (taken on this arena, with no reset in between); `peak` keeps
// the high-water mark, so the next arena_reset() sizes the one block to hold it
void arena_rewind(Arena *a, ArenaMark m);
