/* `sbx-agent install DIR`: copies the running bundle into DIR (install.h).
 * Plain POSIX calls: it runs before any loop, as the only work of an init
 * container. */
#include "install.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int fail(const char *what, const char *path, int err)
{
	fprintf(stderr, "sbx-agent install: %s %s: %s\n", what, path, strerror(err));
	return -err;
}

static int copy_file(const char *src, const char *dst, mode_t mode)
{
	char tmp[PATH_MAX], buf[1 << 16];
	int in, out, rc = 0;
	ssize_t n;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", dst) >= (int)sizeof(tmp))
		return fail("path too long:", dst, ENAMETOOLONG);
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return fail("cannot read", src, errno);
	out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode & 07777);
	if (out < 0) {
		rc = fail("cannot write", tmp, errno);
		goto out_close_in;
	}
	while ((n = read(in, buf, sizeof(buf))) != 0) {
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			rc = fail("cannot read", src, errno);
			goto out_close_out;
		}
		for (ssize_t off = 0; off < n;) {
			ssize_t w = write(out, buf + off, (size_t)(n - off));

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				rc = fail("cannot write", tmp, errno);
				goto out_close_out;
			}
			off += w;
		}
	}
	/* open() applied the umask; the bundle's modes are what it needs. */
	if (fchmod(out, mode & 07777) != 0)
		rc = fail("cannot set the mode of", tmp, errno);
out_close_out:
	if (close(out) != 0 && rc == 0)
		rc = fail("cannot write", tmp, errno);
	if (rc == 0 && rename(tmp, dst) != 0)
		rc = fail("cannot rename into", dst, errno);
	if (rc != 0)
		unlink(tmp);
out_close_in:
	close(in);
	return rc;
}

static int copy_tree(const char *src, const char *dst, int depth)
{
	DIR *dir;
	struct dirent *e;
	int rc = 0;

	/* The bundle is bin/ and lib/: anything deeper is not ours. */
	if (depth > 8)
		return fail("too deep:", src, ELOOP);
	dir = opendir(src);
	if (!dir)
		return fail("cannot list", src, errno);
	while (rc == 0 && (e = readdir(dir))) {
		char from[PATH_MAX], to[PATH_MAX], link[PATH_MAX];
		struct stat st;
		ssize_t n;

		if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
			continue;
		if (snprintf(from, sizeof(from), "%s/%s", src, e->d_name) >= (int)sizeof(from) ||
		    snprintf(to, sizeof(to), "%s/%s", dst, e->d_name) >= (int)sizeof(to)) {
			rc = fail("path too long:", e->d_name, ENAMETOOLONG);
			break;
		}
		if (lstat(from, &st) != 0) {
			rc = fail("cannot stat", from, errno);
		} else if (S_ISDIR(st.st_mode)) {
			if (mkdir(to, st.st_mode & 07777) != 0 && errno != EEXIST)
				rc = fail("cannot create", to, errno);
			else
				rc = copy_tree(from, to, depth + 1);
		} else if (S_ISLNK(st.st_mode)) {
			n = readlink(from, link, sizeof(link) - 1);
			if (n < 0)
				rc = fail("cannot read the link", from, errno);
			else {
				link[n] = '\0';
				unlink(to);
				if (symlink(link, to) != 0)
					rc = fail("cannot create the link", to, errno);
			}
		} else if (S_ISREG(st.st_mode)) {
			rc = copy_file(from, to, st.st_mode);
		}
	}
	closedir(dir);
	return rc;
}

int install_bundle(const char *argv0, const char *dest)
{
	char self[PATH_MAX], *slash;
	struct stat st;
	int rc;

	/* Without /proc (a bare chroot), the path it was started by will do. */
	if (!realpath("/proc/self/exe", self) && (!strchr(argv0, '/') || !realpath(argv0, self)))
		return fail("cannot find my own binary from", argv0, errno);
	/* self is PREFIX/bin/sbx-agent: cut two components. */
	for (int i = 0; i < 2; i++) {
		slash = strrchr(self, '/');
		if (!slash || slash == self)
			return fail("not inside a bundle (PREFIX/bin/sbx-agent):", self, EINVAL);
		*slash = '\0';
	}
	if (stat(dest, &st) != 0)
		return fail("no such folder:", dest, errno);
	if (!S_ISDIR(st.st_mode))
		return fail("not a folder:", dest, ENOTDIR);
	rc = copy_tree(self, dest, 0);
	if (rc == 0)
		fprintf(stderr, "sbx-agent install: copied %s into %s\n", self, dest);
	return rc;
}
