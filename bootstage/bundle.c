/* bundle.c — `inplace bundle`: inplace, the tools it spawns, their shared
 * libraries (found by walking DT_NEEDED with libelf over the loader's
 * search path) and the dynamic loader, in one directory that runs on any
 * x86_64 Linux.  Layout and launcher: bundle.h and launcher/launcher.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <gelf.h>
#include <glob.h>
#include <libelf.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/stat.h>

#include "bootstage/bundle.h"
#include "bootstage/internal.h"
#include "bootstage/steps.h"

/* Every program inplace spawns through ip_spawn/ip_proc_run where the
 * bundle runs (the old OS, the staging env, the new OS's first boot), with
 * the Debian package that provides it, for the message when it is missing.
 * kexec too: a bundle pushed to a machine that lacks kexec-tools can still
 * arm [boot] method = kexec (systemd's own kexec -e falls back to the
 * reboot(2) call when the system has no kexec binary).  Not here:
 * systemctl, setpriv and gdbus (notify.c), which talk to the running old
 * OS's own systemd and D-Bus and must be that system's versions. */
static const struct bundle_tool {
	const char *name;
	const char *package;
	const char *why;
} bundle_tools[] = {
	{ "e2fsck", "e2fsprogs", "check before and after a resize (partctl/fstool.c, shrink.c)" },
	{ "resize2fs", "e2fsprogs", "shrink and grow ext2/3/4 (partctl/shrink.c, resize.c)" },
	{ "e2undo", "e2fsprogs", "roll a cut shrink back (partctl/fstool.c)" },
	{ "mke2fs", "e2fsprogs", "format the storage partition, image build (partctl/plan_exec.c, imager/import.c)" },
	{ "ntfsresize", "ntfs-3g", "shrink and grow NTFS (partctl/shrink.c, resize.c, fs_ntfs.c)" },
	{ "ntfsfix", "ntfs-3g", "check NTFS (partctl/fstool.c)" },
	{ "mkntfs", "ntfs-3g", "format an NTFS partition (partctl/plan_exec.c)" },
	{ "rm", "coreutils", "reclaim empties a kept store (bootstage/steps.c)" },
	{ "chroot", "coreutils", "the boot fix runs the new root's grub-install and update-grub (bootstage/bootfix.c)" },
	{ "kexec", "kexec-tools", "[boot] method = kexec loads the staging kernel (bootstage/boothook.c)" },
};

/* The launcher (bootstage/launcher/launcher.c, static), linked in by the
 * Makefile: any inplace can write a bundle, wherever it is installed. */
extern const unsigned char bs_launcher_start[], bs_launcher_end[];

/* Where the loader looks after RUNPATH and ld.so.cache (which holds only
 * what ld.so.conf names): ld.so.conf's directories, then its built-in ones. */
static const char *const default_lib_dirs[] = {
	"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib",
};
static const char *const default_tool_dirs[] = { "/usr/sbin", "/sbin", "/usr/bin", "/bin" };

/* One file of the bundle: where it comes from, where it goes (relative). */
struct entry {
	char *src;
	char *dst;
	mode_t mode;
	uint64_t size;
};

/* What will be written, worked out before any write. */
struct plan {
	struct entry *v;
	size_t n, cap;
	char **libdirs;        /* the search path, in order */
	size_t nlibdirs;
	char self[PATH_MAX];   /* the running bundle, "" when none */
	const char **tools;    /* names bundled (beside inplace) */
	size_t ntools;
	unsigned nlibs;
};

static void plan_free(struct plan *pl)
{
	for (size_t i = 0; i < pl->n; i++) {
		free(pl->v[i].src);
		free(pl->v[i].dst);
	}
	free(pl->v);
	for (size_t i = 0; i < pl->nlibdirs; i++)
		free(pl->libdirs[i]);
	free(pl->libdirs);
	free(pl->tools);
}

static const struct entry *plan_find(const struct plan *pl, const char *dst)
{
	for (size_t i = 0; i < pl->n; i++)
		if (!strcmp(pl->v[i].dst, dst))
			return &pl->v[i];
	return NULL;
}

static int plan_add(struct plan *pl, const char *src, const char *dst, mode_t mode, ip_error *e)
{
	struct stat sb;
	struct entry *v;

	/* the content a symlink (libfoo.so.1 -> libfoo.so.1.2.3) names */
	if (stat(src, &sb) < 0)
		return ip_fail(e, -errno, "cannot read %s for the bundle: %s", src, strerror(errno));
	if (pl->n == pl->cap) {
		size_t cap = pl->cap ? pl->cap * 2 : 64;

		if (!(v = realloc(pl->v, cap * sizeof(*v))))
			return ip_fail(e, -ENOMEM, "out of memory");
		pl->v = v;
		pl->cap = cap;
	}
	v = &pl->v[pl->n];
	v->src = strdup(src);
	v->dst = strdup(dst);
	v->mode = mode;
	v->size = (uint64_t)sb.st_size;
	if (!v->src || !v->dst) {
		free(v->src);
		free(v->dst);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	pl->n++;
	return 0;
}

static int libdir_add(struct plan *pl, const char *dir)
{
	char **v;

	for (size_t i = 0; i < pl->nlibdirs; i++)
		if (!strcmp(pl->libdirs[i], dir))
			return 0;
	if (!(v = realloc(pl->libdirs, (pl->nlibdirs + 1) * sizeof(*v))))
		return -ENOMEM;
	pl->libdirs = v;
	if (!(v[pl->nlibdirs] = strdup(dir)))
		return -ENOMEM;
	pl->nlibdirs++;
	return 0;
}

/* ld.so.conf: one directory a line, "include GLOB" of more such files. */
static int read_ld_conf(struct plan *pl, const char *path, unsigned depth)
{
	_cleanup_free_ char *text = NULL;
	char *line, *save = NULL;
	size_t len;
	int r = 0;

	if (depth > 8 || ip_read_file(path, 1 << 20, &text, &len, NULL) < 0)
		return 0; /* absent or unreadable: the built-in directories remain */
	for (line = strtok_r(text, "\n", &save); line && r == 0; line = strtok_r(NULL, "\n", &save)) {
		char *hash = strchr(line, '#'), *w;

		if (hash)
			*hash = '\0';
		w = line + strspn(line, " \t");
		if (!strncmp(w, "include", 7) && (w[7] == ' ' || w[7] == '\t')) {
			glob_t g;
			char *pat = w + 8 + strspn(w + 8, " \t");

			pat[strcspn(pat, " \t\r")] = '\0';
			if (glob(pat, 0, NULL, &g) == 0)
				for (size_t i = 0; i < g.gl_pathc && r == 0; i++)
					r = read_ld_conf(pl, g.gl_pathv[i], depth + 1);
			globfree(&g);
			continue;
		}
		w[strcspn(w, " \t\r")] = '\0';
		if (w[0] == '/')
			r = libdir_add(pl, w);
	}
	return r;
}

/* What the loader needs to know of one ELF file. */
struct elf_facts {
	char interp[PATH_MAX];  /* PT_INTERP, "" when static */
	char runpath[4096];     /* DT_RUNPATH (or DT_RPATH), ":"-separated */
	char **needed;          /* DT_NEEDED, n of them */
	size_t n;
};

static void elf_facts_free(struct elf_facts *f)
{
	for (size_t i = 0; i < f->n; i++)
		free(f->needed[i]);
	free(f->needed);
	f->needed = NULL;
	f->n = 0;
}

/* 1 when path is a 64-bit x86 ELF file (facts filled when f is not NULL),
 * 0 when it is something else (a script, another architecture), -errno
 * when it cannot be read. */
static int elf_inspect(const char *path, struct elf_facts *f)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	Elf *elf;
	GElf_Ehdr eh;
	Elf_Scn *scn = NULL;
	size_t nph;
	int r = 1;

	if (fd < 0)
		return -errno;
	if (elf_version(EV_CURRENT) == EV_NONE)
		return -ENOSYS;
	if (!(elf = elf_begin(fd, ELF_C_READ_MMAP, NULL)))
		return 0;
	if (elf_kind(elf) != ELF_K_ELF || gelf_getclass(elf) != ELFCLASS64 || !gelf_getehdr(elf, &eh) ||
	    eh.e_machine != EM_X86_64) {
		elf_end(elf);
		return 0;
	}
	if (!f)
		goto out;
	memset(f, 0, sizeof(*f));
	if (elf_getphdrnum(elf, &nph) == 0) {
		size_t rawlen;
		const char *raw = elf_rawfile(elf, &rawlen);

		for (size_t i = 0; i < nph; i++) {
			GElf_Phdr ph;

			if (gelf_getphdr(elf, (int)i, &ph) && ph.p_type == PT_INTERP && raw &&
			    ph.p_offset + ph.p_filesz <= rawlen && ph.p_filesz < sizeof(f->interp))
				snprintf(f->interp, sizeof(f->interp), "%.*s", (int)ph.p_filesz, raw + ph.p_offset);
		}
	}
	while ((scn = elf_nextscn(elf, scn))) {
		GElf_Shdr sh;
		Elf_Data *data;

		if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_DYNAMIC || !sh.sh_entsize ||
		    !(data = elf_getdata(scn, NULL)))
			continue;
		for (size_t i = 0; i < sh.sh_size / sh.sh_entsize; i++) {
			GElf_Dyn dyn;
			const char *s;

			if (!gelf_getdyn(data, (int)i, &dyn))
				break;
			if (dyn.d_tag != DT_NEEDED && dyn.d_tag != DT_RUNPATH && dyn.d_tag != DT_RPATH)
				continue;
			if (!(s = elf_strptr(elf, sh.sh_link, dyn.d_un.d_val)))
				continue;
			if (dyn.d_tag != DT_NEEDED) {
				/* RUNPATH wins over RPATH, as in the loader */
				if (dyn.d_tag == DT_RUNPATH || !f->runpath[0])
					snprintf(f->runpath, sizeof(f->runpath), "%s", s);
				continue;
			}
			char **v = realloc(f->needed, (f->n + 1) * sizeof(*v));

			if (!v || !(v[f->n] = strdup(s))) {
				if (v)
					f->needed = v;
				r = -ENOMEM;
				goto out;
			}
			f->needed = v;
			f->n++;
		}
	}
out:
	elf_end(elf);
	if (r < 0 && f)
		elf_facts_free(f);
	return r;
}

/* Find the library name as the loader would for the object at origin:
 * its RUNPATH ($ORIGIN expanded), then the search path. */
static int find_lib(const struct plan *pl, const char *name, const char *origin, const char *runpath,
		    char *out, size_t n)
{
	char odir[PATH_MAX];
	const char *p = runpath;

	snprintf(odir, sizeof(odir), "%s", origin);
	*strrchr(odir, '/') = '\0';
	while (p && *p && !*pl->self) {
		size_t len = strcspn(p, ":");
		char dir[PATH_MAX];

		if (len >= 7 && !strncmp(p, "$ORIGIN", 7))
			snprintf(dir, sizeof(dir), "%s%.*s", odir, (int)(len - 7), p + 7);
		else if (len >= 9 && !strncmp(p, "${ORIGIN}", 9))
			snprintf(dir, sizeof(dir), "%s%.*s", odir, (int)(len - 9), p + 9);
		else
			snprintf(dir, sizeof(dir), "%.*s", (int)len, p);
		if ((size_t)snprintf(out, n, "%s/%s", dir, name) < n && elf_inspect(out, NULL) == 1)
			return 0;
		p += len + (p[len] == ':');
	}
	for (size_t i = 0; i < pl->nlibdirs; i++)
		if ((size_t)snprintf(out, n, "%s/%s", pl->libdirs[i], name) < n && elf_inspect(out, NULL) == 1)
			return 0;
	return -ENOENT;
}

/* Add the executable at src as libexec/name, then every library it needs,
 * breadth first, each once under its DT_NEEDED name. */
static int add_program(struct plan *pl, const char *src, const char *name, ip_error *e)
{
	char dst[PATH_MAX], lib[PATH_MAX];
	size_t first = pl->n;
	int r;

	snprintf(dst, sizeof(dst), "libexec/%s", name);
	r = elf_inspect(src, NULL);
	if (r <= 0)
		return ip_bad(e, r < 0 ? r : -ENOEXEC, "%s is %s: the bundle holds x86_64 ELF programs only",
			      src, r < 0 ? strerror(-r) : "not an x86_64 ELF program (a script?)");
	if ((r = plan_add(pl, src, dst, 0755, e)) < 0)
		return r;
	for (size_t k = first; k < pl->n; k++) {
		struct elf_facts f;
		char origin[PATH_MAX];

		snprintf(origin, sizeof(origin), "%s", pl->v[k].src);
		r = elf_inspect(origin, &f);
		if (r <= 0)
			return ip_fail(e, r < 0 ? r : -ENOEXEC, "cannot read the ELF headers of %s: %s", origin,
				       r < 0 ? strerror(-r) : "not x86_64");
		/* ld.so is given by path, libc etc. are its business to load */
		if (k == first && f.interp[0] && strcmp(strrchr(f.interp, '/') ? strrchr(f.interp, '/') + 1 :
							  f.interp, BS_BUNDLE_LOADER)) {
			r = ip_bad(e, -ENOEXEC, "%s asks for the loader %s, not glibc's %s: the bundle needs "
				   "programs built for x86_64 glibc", origin, f.interp, BS_BUNDLE_LOADER);
			elf_facts_free(&f);
			return r;
		}
		for (size_t i = 0; i < f.n && r >= 0; i++) {
			snprintf(dst, sizeof(dst), "lib/%s", f.needed[i]);
			if (!strcmp(f.needed[i], BS_BUNDLE_LOADER) || plan_find(pl, dst))
				continue;
			if (strchr(f.needed[i], '/')) {
				r = ip_bad(e, -ENOEXEC, "%s needs the library %s by its path, which a bundle cannot "
					   "keep: use a build linked by soname", origin, f.needed[i]);
				break;
			}
			if (find_lib(pl, f.needed[i], origin, f.runpath, lib, sizeof(lib)) < 0) {
				r = ip_fail(e, -ENOENT, "cannot find %s, which %s needs, in the loader's search path "
					    "(RUNPATH, ld.so.conf, /lib/x86_64-linux-gnu, /usr/lib/x86_64-linux-gnu): "
					    "install it or run ldconfig", f.needed[i], origin);
				break;
			}
			if ((r = plan_add(pl, lib, dst, 0755, e)) == 0)
				pl->nlibs++;
		}
		elf_facts_free(&f);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The program name in the tool directories (the running bundle's own
 * libexec when there is one: a host's copy would need the host's libc). */
static int find_tool(const struct plan *pl, const char *name, char *out, size_t n)
{
	const char *path = getenv("PATH");

	if (*pl->self)
		return (size_t)snprintf(out, n, "%s/libexec/%s", pl->self, name) < n && access(out, X_OK) == 0 ?
			       0 : -ENOENT;
	for (const char *p = path ? path : ""; *p;) {
		size_t len = strcspn(p, ":");
		char man[PATH_MAX];

		/* another bundle's bin/ holds launchers, not the tools */
		snprintf(man, sizeof(man), "%.*s/../" BS_BUNDLE_MANIFEST, (int)len, p);
		if (len && p[0] == '/' && access(man, F_OK) < 0 &&
		    (size_t)snprintf(out, n, "%.*s/%s", (int)len, p, name) < n && access(out, X_OK) == 0 &&
		    elf_inspect(out, NULL) == 1)
			return 0;
		p += len + (p[len] == ':');
	}
	for (size_t i = 0; i < IP_ARRAY_SIZE(default_tool_dirs); i++)
		if ((size_t)snprintf(out, n, "%s/%s", default_tool_dirs[i], name) < n && access(out, X_OK) == 0)
			return 0;
	return -ENOENT;
}

int bs_bundle_self(char *dir, size_t n)
{
	char exe[PATH_MAX], probe[PATH_MAX + 32];
	ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	char *slash;

	if (n)
		dir[0] = '\0';
	if (len <= 0)
		return 0;
	exe[len] = '\0';
	/* started through the bundled loader, /proc/self/exe is the loader:
	 * DIR/lib/ld-linux-x86-64.so.2 */
	slash = strrchr(exe, '/');
	if (!slash || strcmp(slash + 1, BS_BUNDLE_LOADER))
		return 0;
	*slash = '\0';
	slash = strrchr(exe, '/');
	if (!slash || strcmp(slash + 1, "lib"))
		return 0;
	slash[slash == exe] = '\0'; /* a bundle at "/" (an initramfs) */
	snprintf(probe, sizeof(probe), "%s/" BS_BUNDLE_MANIFEST, exe);
	if (access(probe, F_OK) < 0)
		return 0;
	snprintf(probe, sizeof(probe), "%s/libexec/inplace", exe);
	if (access(probe, X_OK) < 0)
		return 0;
	if ((size_t)snprintf(dir, n, "%s", exe) >= n) {
		if (n)
			dir[0] = '\0';
		return -ENAMETOOLONG;
	}
	return 0;
}

/* Work out every file: inplace, the tools, their libraries, the loader. */
static int plan_build(struct plan *pl, ip_error *e)
{
	char exe[PATH_MAX], loader[PATH_MAX], tool[PATH_MAX];
	struct elf_facts f;
	int r;

	memset(pl, 0, sizeof(*pl));
	if (bs_bundle_self(pl->self, sizeof(pl->self)) < 0)
		return ip_fail(e, -ENAMETOOLONG, "the running bundle's path is too long");
	if (!(pl->tools = calloc(IP_ARRAY_SIZE(bundle_tools), sizeof(*pl->tools))))
		return ip_fail(e, -ENOMEM, "out of memory");
	if (*pl->self) {
		/* a bundle copies itself: its libraries are the only ones its
		 * programs may load, whatever this system has */
		snprintf(exe, sizeof(exe), "%s/libexec/inplace", pl->self);
		snprintf(loader, sizeof(loader), "%s/lib/" BS_BUNDLE_LOADER, pl->self);
		snprintf(tool, sizeof(tool), "%s/lib", pl->self);
		if (libdir_add(pl, tool) < 0)
			return ip_fail(e, -ENOMEM, "out of memory");
	} else {
		ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);

		if (len <= 0)
			return ip_fail(e, -errno, "cannot find this program's own file (/proc/self/exe): %s: "
				       "mount /proc", strerror(errno));
		exe[len] = '\0';
		r = elf_inspect(exe, &f);
		if (r <= 0)
			return ip_fail(e, r < 0 ? r : -ENOEXEC, "cannot read the ELF headers of %s", exe);
		snprintf(loader, sizeof(loader), "%s", f.interp);
		elf_facts_free(&f);
		if (!loader[0])
			return ip_bad(e, -ENOEXEC, "%s is linked statically: copy it as it is, it needs no bundle", exe);
		r = read_ld_conf(pl, "/etc/ld.so.conf", 0);
		for (size_t i = 0; r == 0 && i < IP_ARRAY_SIZE(default_lib_dirs); i++)
			r = libdir_add(pl, default_lib_dirs[i]);
		if (r < 0)
			return ip_fail(e, r, "out of memory");
	}
	if ((r = add_program(pl, exe, "inplace", e)) < 0)
		return r;
	for (size_t i = 0; i < IP_ARRAY_SIZE(bundle_tools); i++) {
		const struct bundle_tool *t = &bundle_tools[i];

		if (find_tool(pl, t->name, tool, sizeof(tool)) < 0)
			return ip_fail(e, -ENOENT, "cannot find %s (%s) for the bundle%s: install the Debian "
				       "package %s", t->name, t->why, *pl->self ? " in the running bundle" : "",
				       t->package);
		if ((r = add_program(pl, tool, t->name, e)) < 0)
			return r;
		pl->tools[pl->ntools++] = t->name;
	}
	if ((r = plan_add(pl, loader, "lib/" BS_BUNDLE_LOADER, 0755, e)) < 0)
		return r;
	pl->nlibs++;
	return 0;
}

static uint64_t launcher_size(void)
{
	return (uint64_t)(bs_launcher_end - bs_launcher_start);
}

/* Bytes on disk, the manifest's few KiB left out. */
static uint64_t plan_bytes(const struct plan *pl)
{
	uint64_t sum = launcher_size();

	for (size_t i = 0; i < pl->n; i++)
		sum += pl->v[i].size;
	return sum;
}

int bs_bundle_measure(uint64_t *bytes, ip_error *e)
{
	struct plan pl;
	int r = plan_build(&pl, e);

	if (r == 0)
		*bytes = plan_bytes(&pl);
	plan_free(&pl);
	return r;
}

uint64_t bs_bundle_room(void)
{
	uint64_t b;

	/* measured, with room for a newer inplace or tool; the guess when the
	 * bundle cannot be made here (preflight's own checks say why) */
	if (bs_bundle_measure(&b, NULL) < 0)
		return 64ULL << 20;
	return (b + b / 4 + (1ULL << 20) - 1) & ~((1ULL << 20) - 1);
}

/* Copy one file into the bundle under construction: through NAME.part,
 * fsynced, stamped with the source's mtime, then renamed.  A file already
 * there under its name with the source's size and mtime is the copy a
 * killed write made: kept, so a write cut again and again still ends. */
static int copy_file(const char *src, const char *dst, mode_t mode, ip_error *e)
{
	_cleanup_close_ int in = -1, out = -1;
	char part[PATH_MAX + 80];
	struct stat sb, db;

	if ((in = open(src, O_RDONLY | O_CLOEXEC)) < 0 || fstat(in, &sb) < 0)
		return ip_fail(e, -errno, "cannot read %s for the bundle: %s", src, strerror(errno));
	if (stat(dst, &db) == 0 && db.st_size == sb.st_size && db.st_mtim.tv_sec == sb.st_mtim.tv_sec &&
	    db.st_mtim.tv_nsec == sb.st_mtim.tv_nsec)
		return 0;
	snprintf(part, sizeof(part), "%s.part", dst);
	out = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (out < 0)
		return ip_fail(e, -errno, "cannot create %s: %s", part, strerror(errno));
	for (off_t done = 0; done < sb.st_size;) {
		ssize_t k = sendfile(out, in, &done, (size_t)(sb.st_size - done));

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return ip_fail(e, k < 0 ? -errno : -EIO, "cannot write %s: %s", dst,
				       k < 0 ? strerror(errno) : "the source shrank while copied");
	}
	if (fchmod(out, mode) < 0 || futimens(out, (struct timespec[2]){ sb.st_atim, sb.st_mtim }) < 0 ||
	    fsync(out) < 0 || rename(part, dst) < 0)
		return ip_fail(e, -errno, "cannot write %s: %s", dst, strerror(errno));
	return 0;
}

static int write_blob(const char *dst, const void *data, size_t len, ip_error *e)
{
	char part[PATH_MAX + 80];
	_cleanup_close_ int out = -1;

	snprintf(part, sizeof(part), "%s.part", dst);
	out = open(part, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0755);
	if (out < 0 || ip_write_all(out, data, len) < 0 || fchmod(out, 0755) < 0 || fsync(out) < 0 ||
	    rename(part, dst) < 0)
		return ip_fail(e, -errno, "cannot write %s: %s", dst, strerror(errno));
	return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return (flag == FTW_DP ? rmdir(path) : unlink(path)) < 0 && errno != ENOENT ? -1 : 0;
}

/* Remove a directory tree this code made (a bundle, one cut short, a
 * scratch directory), never following a link or crossing a mount. */
int bs_rm_tree(const char *dir, ip_error *e)
{
	if (nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 && errno != ENOENT)
		return ip_fail(e, -errno, "cannot remove %s: %s", dir, strerror(errno));
	return 0;
}

/* 1: dir is a bundle (or empty, or one cut short: only our names in it),
 * 0: absent, -errno: something else, which is not ours to replace. */
static int is_ours(const char *dir, bool want_manifest, ip_error *e)
{
	static const char *const names[] = { "inplace", "bin", "lib", "libexec", BS_BUNDLE_MANIFEST };
	DIR *d = opendir(dir);
	struct dirent *de;
	bool manifest = false, other = false, any = false;

	if (!d) {
		if (errno == ENOENT)
			return 0;
		return ip_bad(e, -errno, "%s exists and is not a directory we can read (%s): choose another "
			      "output directory", dir, strerror(errno));
	}
	while ((de = readdir(d))) {
		bool known = false;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		any = true;
		for (size_t i = 0; i < IP_ARRAY_SIZE(names); i++)
			known |= !strcmp(de->d_name, names[i]);
		/* the temporary files of a write a kill cut short */
		known |= !want_manifest && (!strncmp(de->d_name, BS_BUNDLE_MANIFEST ".tmp-",
						     sizeof(BS_BUNDLE_MANIFEST ".tmp-") - 1) ||
					    !strcmp(de->d_name, "inplace.part"));
		manifest |= !strcmp(de->d_name, BS_BUNDLE_MANIFEST);
		other |= !known;
	}
	closedir(d);
	if (!any || (manifest && !other) || (!want_manifest && !other))
		return 1;
	return ip_bad(e, -EEXIST, "%s exists and is not an inplace bundle: choose another output directory, "
		      "or remove it first", dir);
}

static json_object *manifest_json(const struct plan *pl, bool copied)
{
	json_object *doc = ip_json_doc("bundle"), *files = json_object_new_array(),
		    *tools = json_object_new_array();

	json_object_object_add(doc, "inplace_version", json_object_new_string(IP_TOOL_VERSION));
	json_object_object_add(doc, "loader", json_object_new_string("lib/" BS_BUNDLE_LOADER));
	json_object_object_add(doc, "bytes", ip_json_u64(plan_bytes(pl)));
	json_object_object_add(doc, "copied", json_object_new_boolean(copied));
	for (size_t i = 0; i < pl->ntools; i++)
		json_object_array_add(tools, json_object_new_string(pl->tools[i]));
	for (size_t i = 0; i < pl->n; i++) {
		json_object *f = json_object_new_object();

		json_object_object_add(f, "path", json_object_new_string(pl->v[i].dst));
		json_object_object_add(f, "from", json_object_new_string(pl->v[i].src));
		json_object_object_add(f, "bytes", ip_json_u64(pl->v[i].size));
		json_object_array_add(files, f);
	}
	json_object_object_add(doc, "tools", tools);
	json_object_object_add(doc, "files", files);
	return doc;
}

/* Remove from a resumed tmp what this plan does not write (a .part a kill
 * left, a file of another plan), so the bundle holds what its manifest says. */
static int drop_strays(const struct plan *pl, const char *tmp, const char *sub, ip_error *e)
{
	char path[PATH_MAX + 64], rel[NAME_MAX + 16];
	struct dirent *de;
	DIR *d;
	int r = 0;

	snprintf(path, sizeof(path), "%s/%s", tmp, sub);
	if (!(d = opendir(path)))
		return ip_fail(e, -errno, "cannot read %s: %s", path, strerror(errno));
	while (r == 0 && (de = readdir(d))) {
		bool tool = false;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(rel, sizeof(rel), "%s/%s", sub, de->d_name);
		for (size_t i = 0; !strcmp(sub, "bin") && i < pl->ntools; i++)
			tool |= !strcmp(de->d_name, pl->tools[i]);
		if (tool || plan_find(pl, rel))
			continue;
		snprintf(path, sizeof(path), "%s/%s", tmp, rel);
		if (unlinkat(dirfd(d), de->d_name, de->d_type == DT_DIR ? AT_REMOVEDIR : 0) < 0 && errno != ENOENT)
			r = ip_fail(e, -errno, "cannot remove %s: %s", path, strerror(errno));
	}
	closedir(d);
	return r;
}

/* The bundle into tmp: the directories, every file, the launcher under
 * each name, the manifest last. */
static int write_tree(const struct plan *pl, const char *tmp, ip_error *e)
{
	static const char *const sub[] = { "bin", "lib", "libexec" };
	char path[PATH_MAX + 64], name[PATH_MAX + 64];
	_cleanup_json_ json_object *man = NULL;
	const char *text;
	int r;

	/* a write cut short left them: its complete files are kept */
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return ip_fail(e, -errno, "cannot create %s: %s", tmp, strerror(errno));
	for (size_t i = 0; i < IP_ARRAY_SIZE(sub); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmp, sub[i]);
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			return ip_fail(e, -errno, "cannot create %s: %s", path, strerror(errno));
	}
	for (size_t i = 0; i < pl->n; i++) {
		snprintf(path, sizeof(path), "%s/%s", tmp, pl->v[i].dst);
		if ((r = copy_file(pl->v[i].src, path, pl->v[i].mode, e)) < 0)
			return r;
	}
	snprintf(path, sizeof(path), "%s/inplace", tmp);
	if ((r = write_blob(path, bs_launcher_start, launcher_size(), e)) < 0)
		return r;
	/* one launcher, hardlinked: it picks the program by its own name */
	for (size_t i = 0; i < pl->ntools; i++) {
		snprintf(name, sizeof(name), "%s/bin/%s", tmp, pl->tools[i]);
		if ((unlink(name) < 0 && errno != ENOENT) || link(path, name) < 0)
			return ip_fail(e, -errno, "cannot link %s: %s", name, strerror(errno));
	}
	for (size_t i = 0; i < IP_ARRAY_SIZE(sub); i++) {
		snprintf(path, sizeof(path), "%s/%s", tmp, sub[i]);
		if ((r = drop_strays(pl, tmp, sub[i], e)) < 0 || (r = ip_fsync_dir(path, e)) < 0)
			return r;
	}
	if (!(man = manifest_json(pl, *pl->self != '\0')))
		return ip_fail(e, -ENOMEM, "out of memory");
	text = json_object_to_json_string_ext(man, JSON_C_TO_STRING_PRETTY | JSON_C_TO_STRING_NOSLASHESCAPE);
	snprintf(path, sizeof(path), "%s/" BS_BUNDLE_MANIFEST, tmp);
	if ((r = ip_write_file_atomic(path, text, strlen(text), 0644, e)) < 0)
		return r;
	return ip_fsync_dir(tmp, e);
}

/* Put tmp in dir's place: exchanged with an old bundle (then removed), or
 * renamed when dir is absent; the parent fsynced either way. */
static int install_tree(const char *tmp, const char *dir, bool exists, ip_error *e)
{
	int r;

	if (!exists)
		return ip_rename_durable(tmp, dir, e);
	if (renameat2(AT_FDCWD, tmp, AT_FDCWD, dir, RENAME_EXCHANGE) < 0) {
		/* a filesystem without exchange (vfat media): the old one goes
		 * first; a cut between leaves no DIR, and the next write makes it */
		if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
			return ip_fail(e, -errno, "cannot put %s in place of %s: %s", tmp, dir, strerror(errno));
		if ((r = bs_rm_tree(dir, e)) < 0)
			return r;
		return ip_rename_durable(tmp, dir, e);
	}
	if ((r = ip_fsync_parent(dir, e)) < 0)
		return r;
	return bs_rm_tree(tmp, e);
}

int bs_bundle_write_info(const char *out, struct bs_bundle_info *info, ip_error *e)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 8], man[PATH_MAX + 32];
	struct plan pl;
	size_t len;
	int r, ours;

	if (!out || !*out)
		return ip_bad(e, -EINVAL, "no output directory given for the bundle");
	if ((len = strlen(out)) >= sizeof(dir))
		return ip_bad(e, -ENAMETOOLONG, "%s: the path is too long", out);
	memcpy(dir, out, len + 1);
	while (len > 1 && dir[len - 1] == '/') /* "DIR/" is DIR, its tmp DIR.tmp */
		dir[--len] = '\0';
	snprintf(tmp, sizeof(tmp), "%s.tmp", dir);
	if ((ours = is_ours(dir, true, e)) < 0 || (r = is_ours(tmp, false, e)) < 0)
		return ours < 0 ? ours : r;
	if ((r = plan_build(&pl, e)) < 0)
		goto out;
	/* DIR.tmp with a manifest is an old bundle a kill left after the
	 * exchange: removed; without one, a write cut short: resumed */
	snprintf(man, sizeof(man), "%s/" BS_BUNDLE_MANIFEST, tmp);
	if ((access(man, F_OK) == 0 && (r = bs_rm_tree(tmp, e)) < 0) || (r = write_tree(&pl, tmp, e)) < 0 ||
	    (r = install_tree(tmp, dir, ours == 1, e)) < 0) {
		bs_rm_tree(tmp, NULL);
		goto out;
	}
	if (info)
		*info = (struct bs_bundle_info){ .bytes = plan_bytes(&pl), .files = (unsigned)pl.n + 1,
						 .tools = (unsigned)pl.ntools, .libs = pl.nlibs,
						 .copied = *pl.self != '\0' };
out:
	plan_free(&pl);
	return r;
}

int bs_bundle_write(const char *dir, ip_error *e)
{
	return bs_bundle_write_info(dir, NULL, e);
}

int bs_step_stage_bundle(const struct bs_params *p, struct bs_store *s, json_object **res, ip_error *e)
{
	struct bs_bundle_info info = { 0 };
	char dir[PATH_MAX], man[PATH_MAX + 32];
	int r;

	(void)p;
	*res = json_object_new_object();
	json_object_object_add(*res, "step", json_object_new_string("stage-bundle"));
	snprintf(dir, sizeof(dir), "%s/bundle", s->root);
	snprintf(man, sizeof(man), "%s/" BS_BUNDLE_MANIFEST, dir);
	json_object_object_add(*res, "bundle", json_object_new_string(dir));
	/* the manifest comes last and the directory appears whole: a
	 * manifest there means a complete bundle */
	if (access(man, F_OK) == 0) {
		json_object_object_add(*res, "kept", json_object_new_boolean(1));
		return 0;
	}
	r = bs_bundle_write_info(dir, &info, e);
	if (r < 0) {
		if (r == -ENOSPC)
			ip_error_prefix(e, "no room for the bundle in the store (give it more: store_size)");
		return r;
	}
	json_object_object_add(*res, "bytes", ip_json_u64(info.bytes));
	json_object_object_add(*res, "copied", json_object_new_boolean(info.copied));
	return 0;
}
