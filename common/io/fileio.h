// fileio.h: crash-safe file writing. A file is written beside its destination as
// "<path>.tmp.<pid>", flushed and fsync'd, then renamed over the destination, so a reader sees
// either the old file or the new one, never half of one (a killed training run leaves its last
// checkpoint intact). Every write is checked; on failure the temporary file is removed.
#pragma once
#include <stddef.h>
#include <stdio.h>

typedef struct {
    FILE *fp;
    char *path;  // destination
    char *tmp;   // "<path>.tmp.<pid>"
} AtomicFile;

// Streaming form, for files too large to assemble in memory (checkpoints):
// atomic_open, any number of atomic_write, then atomic_commit (or atomic_abort).
// After a failed atomic_write/atomic_commit the file is already aborted.
int atomic_open(AtomicFile *af, const char *path, char *err, size_t errlen);
int atomic_write(AtomicFile *af, const void *data, size_t n, char *err, size_t errlen);
int atomic_commit(AtomicFile *af, char *err, size_t errlen);
void atomic_abort(AtomicFile *af);  // removes the temporary file; safe to call twice

// Whole buffer at once.
int write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen);

// mkdir -p: creates DIR and its missing parents (mode 0777 & ~umask); ok if it exists.
int mkdir_p(const char *dir, char *err, size_t errlen);
