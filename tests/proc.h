// proc.h: run doppel's executables from tests: spawn with output captured to files, wait with a
// deadline (killing on expiry), read the captured output, find free loopback ports.
#pragma once
#include <sys/types.h>

typedef struct {
    pid_t pid;
    char out[256], err[256];  // capture files
    int status;               // exit status once waited (-1: killed or still running)
} Proc;

// argv[0] may be "doppel-x" (resolved to $DOPPEL_BIN/doppel-x, default bin/). Returns 0 or -1.
int proc_start(Proc *p, const char *const *argv);
// waits up to timeout_s; returns the exit status, or -1 if it had to be killed
int proc_wait(Proc *p, double timeout_s);
char *proc_read(const char *path);  // malloc'd file contents ("" if missing)
int free_port(void);
// runs to completion (timeout_s), returns the exit status; *out/*err get the captured output
int proc_run(const char *const *argv, double timeout_s, char **out, char **err);
