#include "io/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

int atomic_open(AtomicFile *af, const char *path, char *err, size_t errlen) {
    memset(af, 0, sizeof(*af));
    size_t n = strlen(path) + 32;
    af->path = xstrdup(path);
    af->tmp = xmalloc(n);
    snprintf(af->tmp, n, "%s.tmp.%ld", path, (long)getpid());
    af->fp = fopen(af->tmp, "wb");
    if (!af->fp) {
        int e = errno;
        atomic_abort(af);
        return errf(err, errlen, "file %s: cannot create temporary file beside it: %s (does the folder exist and is it writable?)",
                    path, strerror(e));
    }
    return 0;
}

int atomic_write(AtomicFile *af, const void *data, size_t n, char *err, size_t errlen) {
    if (!af->fp) return errf(err, errlen, "file %s: write after the file was closed", af->path ? af->path : "?");
    if (n == 0) return 0;
    errno = 0;
    if (fwrite(data, 1, n, af->fp) != n) {
        int e = errno;
        errf(err, errlen, "file %s: writing %zu bytes failed: %s (disk full?)", af->path, n, e ? strerror(e) : "short write");
        atomic_abort(af);
        return -1;
    }
    return 0;
}

// Makes the rename itself durable; best effort, as some filesystems refuse fsync on a folder.
static void fsync_parent(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    if (fd >= 0) {
        (void)fsync(fd);
        close(fd);
    }
    free(dir);
}

int atomic_commit(AtomicFile *af, char *err, size_t errlen) {
    if (!af->fp) return errf(err, errlen, "file %s: commit after the file was closed", af->path ? af->path : "?");
    const char *what = NULL;
    int e = 0;
    if (fflush(af->fp) != 0) what = "flushing", e = errno;
    else if (fsync(fileno(af->fp)) != 0) what = "fsync", e = errno;
    int rc = fclose(af->fp);
    af->fp = NULL;
    if (!what && rc != 0) what = "closing", e = errno;
    if (!what && rename(af->tmp, af->path) != 0) what = "renaming the temporary file over it", e = errno;
    if (what) {
        errf(err, errlen, "file %s: %s failed: %s", af->path, what, strerror(e));
        atomic_abort(af);
        return -1;
    }
    fsync_parent(af->path);
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof(*af));
    return 0;
}

void atomic_abort(AtomicFile *af) {
    if (af->fp) fclose(af->fp);
    if (af->tmp) unlink(af->tmp);
    free(af->path);
    free(af->tmp);
    memset(af, 0, sizeof(*af));
}

int write_file_atomic(const char *path, const void *data, size_t n, char *err, size_t errlen) {
    AtomicFile af;
    if (atomic_open(&af, path, err, errlen) != 0) return -1;
    if (atomic_write(&af, data, n, err, errlen) != 0) return -1;
    return atomic_commit(&af, err, errlen);
}

static int mkdir_one(const char *dir, const char *full, char *err, size_t errlen) {
    if (mkdir(dir, 0777) == 0 || errno == EEXIST) return 0;
    if (strcmp(dir, full) == 0) return errf(err, errlen, "folder %s: cannot create: %s", full, strerror(errno));
    return errf(err, errlen, "folder %s: cannot create its parent %s: %s", full, dir, strerror(errno));
}

int mkdir_p(const char *dir, char *err, size_t errlen) {
    if (!dir || !*dir) return errf(err, errlen, "mkdir: empty folder name");
    char *p = xstrdup(dir);
    int rc = 0;
    for (char *s = p + 1; *s && rc == 0; s++) {
        if (*s != '/' || s[-1] == '/') continue;
        *s = '\0';
        rc = mkdir_one(p, dir, err, errlen);
        *s = '/';
    }
    if (rc == 0) rc = mkdir_one(p, dir, err, errlen);
    free(p);
    if (rc != 0) return -1;
    struct stat sb;
    if (stat(dir, &sb) != 0) return errf(err, errlen, "folder %s: %s", dir, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) return errf(err, errlen, "folder %s: exists and is not a folder", dir);
    return 0;
}
