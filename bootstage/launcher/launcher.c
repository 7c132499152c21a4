/* launcher.c — the bundle's front door, linked statically so that it runs
 * on a system with no libraries or shell at all: DIR/inplace and every
 * DIR/bin/TOOL are this one file (hardlinks).  It finds its own directory,
 * puts DIR/bin first in PATH (inplace then spawns the bundled tools) and
 * execs DIR/lib/ld-linux-x86-64.so.2 --library-path DIR/lib --argv0 ARGV0
 * DIR/libexec/NAME ARGS: the bundled loader and libraries, never the
 * host's, whatever they are.  Layout: bootstage/bundle.h. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LOADER "ld-linux-x86-64.so.2"

static int die(const char *what, const char *path)
{
	fprintf(stderr, "inplace bundle: %s %s: %s\n", what, path, strerror(errno));
	return 127;
}

/* root/lib/LOADER exists: root is a bundle's top directory. */
static int is_root(const char *root)
{
	char p[PATH_MAX + 64];

	snprintf(p, sizeof(p), "%s/lib/" LOADER, root);
	return access(p, X_OK) == 0;
}

int main(int argc, char **argv)
{
	char exe[PATH_MAX], root[PATH_MAX], loader[PATH_MAX + 64], lib[PATH_MAX + 64], prog[PATH_MAX + 64],
		bin[PATH_MAX + 8];
	const char *name, *path = getenv("PATH");
	char *slash, *newpath, **nargv;
	ssize_t len;
	int k = 0;

	/* /proc/self/exe names this file with symlinks resolved (a symlink in
	 * /usr/local/bin leads here); without /proc (an early init), argv[0] */
	len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (len > 0) {
		exe[len] = '\0';
	} else if (!argv[0] || !strchr(argv[0], '/') || !realpath(argv[0], exe)) {
		errno = ENOENT;
		return die("cannot find my own file (mount /proc, or start me by my path)", "");
	}
	slash = strrchr(exe, '/');
	name = slash + 1;
	snprintf(root, sizeof(root), "%.*s", (int)(slash - exe), exe);
	if (!*root)
		snprintf(root, sizeof(root), "/");
	/* DIR/inplace, or DIR/bin/TOOL */
	if (!is_root(root)) {
		slash = strrchr(root, '/');
		if (slash)
			slash[slash == root] = '\0'; /* "/bin" → "/" */
		if (!is_root(root)) {
			errno = ENOENT;
			return die("cannot find the bundle's loader beside", exe);
		}
	}
	snprintf(loader, sizeof(loader), "%s/lib/" LOADER, root);
	snprintf(lib, sizeof(lib), "%s/lib", root);
	snprintf(prog, sizeof(prog), "%s/libexec/%s", root, name);
	/* any other name (an initramfs's /init) is inplace, told its argv[0] */
	if (access(prog, X_OK) < 0)
		snprintf(prog, sizeof(prog), "%s/libexec/inplace", root);
	snprintf(bin, sizeof(bin), "%s/bin", root);

	/* once first in PATH is enough (a bundled inplace runs bundled tools) */
	if (!path || !*path)
		path = "/usr/sbin:/usr/bin:/sbin:/bin";
	if (strncmp(path, bin, strlen(bin)) || (path[strlen(bin)] && path[strlen(bin)] != ':')) {
		newpath = malloc(strlen(bin) + strlen(path) + 2);
		if (!newpath)
			return die("out of memory for", "PATH");
		sprintf(newpath, "%s:%s", bin, path);
		if (setenv("PATH", newpath, 1) < 0)
			return die("cannot set", "PATH");
		free(newpath);
	}

	nargv = calloc((size_t)argc + 8, sizeof(*nargv));
	if (!nargv)
		return die("out of memory for", "argv");
	nargv[k++] = loader;
	nargv[k++] = (char *)"--inhibit-cache";
	nargv[k++] = (char *)"--library-path";
	nargv[k++] = lib;
	nargv[k++] = (char *)"--argv0";
	nargv[k++] = argv[0] ? argv[0] : (char *)name;
	nargv[k++] = prog;
	for (int i = 1; i < argc; i++)
		nargv[k++] = argv[i];
	nargv[k] = NULL;
	execv(loader, nargv);
	return die("cannot run", loader);
}
