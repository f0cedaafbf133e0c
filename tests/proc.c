#include "proc.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int proc_start(Proc *p, const char *const *argv) {
    static int counter;
    memset(p, 0, sizeof(*p));
    p->status = -1;
    snprintf(p->out, sizeof(p->out), "build/test-out/proc/%d-%d.out", (int)getpid(), counter);
    snprintf(p->err, sizeof(p->err), "build/test-out/proc/%d-%d.err", (int)getpid(), counter++);
    if (system("mkdir -p build/test-out/proc") != 0) return -1;
    char exe[512];
    const char *bindir = getenv("DOPPEL_BIN") ? getenv("DOPPEL_BIN") : "bin";
    if (!strncmp(argv[0], "doppel-", 7)) snprintf(exe, sizeof(exe), "%s/%s", bindir, argv[0]);
    else snprintf(exe, sizeof(exe), "%s", argv[0]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&fa, 1, p->out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&fa, 2, p->err, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = posix_spawnp(&p->pid, exe, &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    return rc ? -1 : 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

int proc_wait(Proc *p, double timeout_s) {
    double end = now() + timeout_s;
    int st;
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid) {
            p->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
            return p->status;
        }
        if (now() > end) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            p->status = -1;
            return -1;
        }
        usleep(10000);
    }
}

char *proc_read(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return calloc(1, 1);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    size_t got = fread(s, 1, (size_t)n, f);
    s[got] = 0;
    fclose(f);
    return s;
}

int free_port(void) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) || getsockname(fd, (struct sockaddr *)&a, &len)) {
        if (fd >= 0) close(fd);
        return 0;
    }
    close(fd);
    return ntohs(a.sin_port);
}

int proc_run(const char *const *argv, double timeout_s, char **out, char **err) {
    Proc p;
    if (proc_start(&p, argv)) return -1;
    int rc = proc_wait(&p, timeout_s);
    if (out) *out = proc_read(p.out);
    if (err) *err = proc_read(p.err);
    return rc;
}
