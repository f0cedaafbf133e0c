#include "arena.h"

#include <stdlib.h>
#include <string.h>

#include "check.h"

// Under AddressSanitizer what a rewind frees is poisoned until handed out again, so a read of a
// block's activations after its segment (unet_2d.c) is reported where it happens.
#if defined(__has_feature)
#if __has_feature(address_sanitizer) && !defined(__SANITIZE_ADDRESS__)
#define __SANITIZE_ADDRESS__ 1
#endif
#endif
#ifdef __SANITIZE_ADDRESS__
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

#define ARENA_ALIGN 64
#define ARENA_MIN_CHUNK ((size_t)64 << 20)

static ArenaChunk *chunk_new(const ArenaMemory *mem, size_t cap) {
    ArenaChunk *c = xcalloc(1, sizeof(*c));
    size_t bytes = (cap + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    c->cap = cap;
    c->mem = mem ? mem->alloc(bytes) : aligned_alloc(ARENA_ALIGN, bytes);
    CHECK(c->mem, "out of %s: activation arena of %zu MB; reduce --batch or the preset", mem ? mem->where : "memory",
          cap >> 20);
    return c;
}

static void chunk_free(const ArenaMemory *mem, ArenaChunk *c) {
    if (mem) mem->release(c->mem);
    else free(c->mem);
    free(c);
}

void arena_init_on(Arena *a, size_t bytes, const ArenaMemory *mem) {
    memset(a, 0, sizeof(*a));
    a->mem = mem;
    a->head = chunk_new(mem, bytes ? bytes : ARENA_MIN_CHUNK);
}

void arena_init(Arena *a, size_t bytes) { arena_init_on(a, bytes, NULL); }

void arena_free(Arena *a) {
    const ArenaMemory *mem = a->mem;
    for (ArenaChunk *c = a->head, *n; c; c = n) {
        n = c->next;
        chunk_free(mem, c);
    }
    memset(a, 0, sizeof(*a));
    a->mem = mem;  // a freed arena can be used again, on the same memory
}

void *arena_alloc(Arena *a, size_t bytes) {
    bytes = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (!a->head) arena_init_on(a, 0, a->mem);
    if (a->head->used + bytes > a->head->cap) {
        size_t cap = bytes > ARENA_MIN_CHUNK ? bytes : ARENA_MIN_CHUNK;
        ArenaChunk *c = chunk_new(a->mem, cap);
        c->next = a->head;
        a->head = c;
    }
    void *p = a->head->mem + a->head->used;
    if (!a->mem) ASAN_UNPOISON_MEMORY_REGION(p, bytes);
    a->head->used += bytes;
    a->used += bytes;
    if (a->used > a->peak) a->peak = a->used;
    return p;
}

float *arena_floats(Arena *a, size_t n) { return arena_alloc(a, n * sizeof(float)); }

float *arena_zeros(Arena *a, size_t n) {
    float *p = arena_floats(a, n);
    if (a->mem) a->mem->zero(p, n * sizeof(float));
    else memset(p, 0, n * sizeof(float));
    return p;
}

ArenaMark arena_mark(const Arena *a) { return (ArenaMark){a->head, a->head ? a->head->used : 0, a->used}; }

void arena_rewind(Arena *a, ArenaMark m) {
    while (a->head != m.chunk) {  // chunks added after the mark (only while the arena still grows)
        CHECK(a->head, "arena_rewind: the mark is not from this arena (or it was reset since)");
        ArenaChunk *c = a->head;
        a->head = c->next;
        chunk_free(a->mem, c);
    }
    if (a->head) {
        a->head->used = m.chunk_used;
        if (!a->mem) ASAN_POISON_MEMORY_REGION(a->head->mem + m.chunk_used, a->head->cap - m.chunk_used);
    }
    a->used = m.used;
}

void arena_reset(Arena *a) {
    // several chunks, or one too small for the peak (a rewind freed the others): replace them by
    // one that holds the peak
    if (a->head && (a->head->next || a->head->cap < a->peak)) {
        size_t peak = a->peak;
        arena_free(a);
        a->head = chunk_new(a->mem, peak + ARENA_ALIGN);
        a->peak = peak;
    }
    if (a->head) a->head->used = 0;
    a->used = 0;
}
