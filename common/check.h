// check.h: fail loudly with file and line. Assert only on our own bugs; input from outside
// (files, frames, arguments) gets a returned error and a message instead (see io/).
#pragma once
#include <stddef.h>
#include <stdio.h>

__attribute__((noreturn, format(printf, 3, 4)))
void doppel_die(const char *file, int line, const char *fmt, ...);

#define DIE(...) doppel_die(__FILE__, __LINE__, __VA_ARGS__)
#define CHECK(cond, ...) do { if (!(cond)) DIE(__VA_ARGS__); } while (0)

void *xmalloc_(size_t n, const char *file, int line);
void *xcalloc_(size_t n, size_t size, const char *file, int line);
void *xrealloc_(void *p, size_t n, const char *file, int line);
char *xstrdup_(const char *s, const char *file, int line);
#define xmalloc(n) xmalloc_((n), __FILE__, __LINE__)
#define xcalloc(n, s) xcalloc_((n), (s), __FILE__, __LINE__)
#define xrealloc(p, n) xrealloc_((p), (n), __FILE__, __LINE__)
#define xstrdup(s) xstrdup_((s), __FILE__, __LINE__)

// Formats an error into a caller's buffer (err may be NULL); returns -1 for `return errf(...)`.
__attribute__((format(printf, 3, 4)))
int errf(char *err, size_t errlen, const char *fmt, ...);
