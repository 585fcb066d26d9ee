/* See tree.h. */
#include "tree.h"

#include "sbx/alloc.h"
#include "sbx/base64.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void tree_new_tag(char *out)
{
	sbx_random_hex(out, 16);
}

struct proc {
	pid_t pid, ppid, pgrp;
	bool live; /* not a zombie */
};

/* /proc/PID/name into buf (NUL-terminated): the bytes read, or 0 if the
 * process is gone or the file cannot be read. */
static size_t read_proc(pid_t pid, const char *name, char *buf, size_t size)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return 0;
	n = read(fd, buf, size - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	return (size_t)n;
}

/* pid, ppid, process group and state from /proc/PID/stat; false if gone. */
static bool read_stat(pid_t pid, struct proc *p)
{
	char buf[512], *close_paren, state;

	if (!read_proc(pid, "stat", buf, sizeof(buf)))
		return false;
	/* The command name may hold spaces and parentheses: the fields
	 * start after the last ')'. */
	if (!(close_paren = strrchr(buf, ')')) ||
	    sscanf(close_paren + 1, " %c %d %d", &state, &p->ppid, &p->pgrp) != 3)
		return false;
	p->pid = pid;
	p->live = state != 'Z' && state != 'X';
	return true;
}

/* Whether the environment of pid holds SBX_TREE=tag or SBX_TREE=tag.… */
static bool has_tag(pid_t pid, const char *tag)
{
	static const char key[] = TREE_ENV "=";
	char buf[65536];
	size_t klen = sizeof(key) - 1, tlen = strlen(tag);
	size_t n = read_proc(pid, "environ", buf, sizeof(buf));

	for (char *e = buf; e < buf + n; e += strlen(e) + 1) {
		if (strncmp(e, key, klen) == 0 && strncmp(e + klen, tag, tlen) == 0 &&
		    (e[klen + tlen] == '\0' || e[klen + tlen] == '.'))
			return true;
	}
	return false;
}

/* Every process on the system (those readable), into *out; its count. */
static size_t list_procs(struct proc **out)
{
	size_t n = 0, cap = 0;
	struct proc *all = NULL;
	struct dirent *d;
	DIR *dir = opendir("/proc");

	*out = NULL;
	if (!dir)
		return 0;
	while ((d = readdir(dir))) {
		char *end;
		long pid = strtol(d->d_name, &end, 10);
		struct proc p;

		if (*end || pid <= 0 || !read_stat((pid_t)pid, &p))
			continue;
		if (n == cap) {
			size_t ncap = cap ? 2 * cap : 256;
			struct proc *grown = sbx_realloc(all, ncap * sizeof(*grown));

			if (!grown)
				break;
			all = grown;
			cap = ncap;
		}
		all[n++] = p;
	}
	closedir(dir);
	*out = all;
	return n;
}

/* One pass: signals the live members; how many there were. */
static int signal_once(const char *tag, pid_t root, int sig)
{
	struct proc *all;
	size_t n = list_procs(&all);
	bool *in = n ? sbx_calloc(n, sizeof(*in)) : NULL;
	pid_t self = getpid(), parent = getppid();
	int count = 0;
	bool grew = true;

	if (n && !in) {
		sbx_free(all);
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		pid_t pid = all[i].pid;

		if (pid == self || pid == parent || pid == 1)
			continue;
		in[i] = (root > 0 && (pid == root || all[i].pgrp == root)) ||
			(tag && *tag && has_tag(pid, tag));
	}
	/* And everything below a member, by parentage. */
	while (grew) {
		grew = false;
		for (size_t i = 0; i < n; i++) {
			if (in[i] || all[i].pid == self || all[i].pid == parent)
				continue;
			for (size_t k = 0; k < n; k++) {
				if (in[k] && all[k].pid == all[i].ppid) {
					in[i] = grew = true;
					break;
				}
			}
		}
	}
	for (size_t i = 0; i < n; i++) {
		if (in[i] && all[i].live && kill(all[i].pid, sig) == 0)
			count++;
	}
	sbx_free(in);
	sbx_free(all);
	return count;
}

int tree_signal(const char *tag, pid_t root, int sig)
{
	int total = signal_once(tag, root, sig), more;

	/* A fork between the listing and the kill makes a new member: go
	 * round again while SIGKILL still finds live ones (a killed process
	 * stays listed, live, until the kernel has taken it down). */
	for (int round = 0; sig == SIGKILL && total && round < 8; round++) {
		if (!(more = signal_once(tag, root, sig)))
			break;
		total += more;
	}
	return total;
}
