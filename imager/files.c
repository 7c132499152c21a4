/* files.c — the file-level in-place deploy: make the tree under root the
 * archive's (tar, pax, cpio …, compressed or not, through libarchive),
 * except the kept paths (/home, /root, /srv by default), which are neither
 * written nor removed.
 *
 * Order: extract first (each file replaced by unlink + create, so a running
 * program keeps its old inode), then remove what the archive does not hold.
 * Extraction refuses "..", absolute paths and writes through symlinks
 * (libarchive's SECURE flags), so nothing lands outside root; the removal
 * walk never crosses into another filesystem. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <search.h>
#include <string.h>
#include <sys/stat.h>

#include <blkid/blkid.h>

#include "imager/imager_int.h"

struct keep {
	char **p;          /* normalised, no leading or trailing '/': "home" */
	size_t n;
};

/* "./a//b/" or "/a/b" → "a/b"; false for "..", "" stays "" (the root). */
static bool normalise(const char *in, char *out, size_t len)
{
	size_t o = 0;
	const char *s = in;

	while (*s) {
		const char *c;
		size_t n;

		while (*s == '/')
			s++;
		if (!*s)
			break;
		c = s;
		while (*s && *s != '/')
			s++;
		n = (size_t)(s - c);
		if (n == 1 && c[0] == '.')
			continue;
		if (n == 2 && c[0] == '.' && c[1] == '.')
			return false;
		if (o + n + 2 > len)
			return false;
		if (o)
			out[o++] = '/';
		memcpy(out + o, c, n);
		o += n;
	}
	out[o] = '\0';
	return true;
}

static bool is_kept(const struct keep *k, const char *rel)
{
	for (size_t i = 0; i < k->n; i++) {
		size_t n = strlen(k->p[i]);

		if (!strncmp(rel, k->p[i], n) && (rel[n] == '\0' || rel[n] == '/'))
			return true;
	}
	return false;
}

/* Is rel a parent directory of a kept path ("" for "home/x" kept)? */
static bool holds_kept(const struct keep *k, const char *rel)
{
	size_t n = strlen(rel);

	for (size_t i = 0; i < k->n; i++)
		if (n == 0 || (!strncmp(k->p[i], rel, n) && k->p[i][n] == '/'))
			return true;
	return false;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* State of the removal walk (nftw has no user pointer). */
static struct {
	const struct keep *keep;
	char **have;           /* sorted archive paths */
	size_t nhave;
	size_t root_len;
	uint64_t removed;
	int err;
	char errpath[PATH_MAX];
} walk;

static int remove_extra(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
	const char *rel = path + walk.root_len;
	char *key;

	(void)sb;
	(void)ftw;
	while (*rel == '/')
		rel++;
	if (!*rel || is_kept(walk.keep, rel) || holds_kept(walk.keep, rel))
		return 0;
	key = (char *)rel;
	if (bsearch(&key, walk.have, walk.nhave, sizeof(char *), cmp_str))
		return 0;
	if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0) {
		/* a directory still holding kept or foreign-mount content stays */
		if (type == FTW_DP && (errno == ENOTEMPTY || errno == EEXIST || errno == EBUSY))
			return 0;
		walk.err = -errno;
		snprintf(walk.errpath, sizeof(walk.errpath), "%s", path);
		return 1;
	}
	walk.removed++;
	return 0;
}

/* First pass, nothing written: every path stays below the root and no
 * entry goes through a symlink the archive itself creates. */
/* The next entry of an archive being applied, with its normalised path in
 * rel: 1, or 0 at the end; a damaged archive or a path leaving the root is
 * bad input (both passes refuse the same way). */
static int next_entry(struct archive *a, const char *archive, struct archive_entry **ent,
		      char *rel, size_t len, ip_error *e)
{
	int k = archive_read_next_header(a, ent);

	if (k == ARCHIVE_EOF)
		return 0;
	if (k < ARCHIVE_WARN)
		return ip_bad(e, -EINVAL, "%s is damaged: %s", archive, archive_error_string(a));
	if (!normalise(archive_entry_pathname(*ent), rel, len))
		return ip_bad(e, -EINVAL, "%s holds an entry outside the root (%s): refusing the whole archive",
			      archive, archive_entry_pathname(*ent));
	return 1;
}

static int precheck(const char *archive, ip_error *e)
{
	struct archive *a = archive_read_new();
	struct archive_entry *ent;
	char rel[PATH_MAX];
	char **links = NULL;
	size_t nl = 0;
	int r = 0;

	if (!a)
		return ip_fail(e, -ENOMEM, "out of memory");
	archive_read_support_filter_all(a);
	archive_read_support_format_all(a);
	if (archive_read_open_filename(a, archive, 1 << 20) != ARCHIVE_OK) {
		r = ip_bad(e, -EINVAL, "cannot read %s: %s", archive, archive_error_string(a));
		goto out;
	}
	for (;;) {
		int k = next_entry(a, archive, &ent, rel, sizeof(rel), e);

		if (k < 0) {
			r = k;
			goto out;
		}
		if (k == 0)
			break;
		for (size_t i = 0; i < nl; i++) {
			size_t n = strlen(links[i]);

			if (!strncmp(rel, links[i], n) && rel[n] == '/') {
				r = ip_bad(e, -EINVAL, "%s writes %s through its own symlink %s: refusing the whole archive",
					   archive, rel, links[i]);
				goto out;
			}
		}
		if (archive_entry_filetype(ent) == AE_IFLNK) {
			char **nlk = realloc(links, (nl + 1) * sizeof(*nlk));

			if (!nlk || !(nlk[nl] = strdup(rel))) {
				links = nlk ? nlk : links;
				r = ip_fail(e, -ENOMEM, "out of memory");
				goto out;
			}
			links = nlk;
			nl++;
		}
		/* the data is skipped, not read: headers are enough */
	}
out:
	archive_read_free(a);
	for (size_t i = 0; i < nl; i++)
		free(links[i]);
	free(links);
	return r;
}

/* ---- the kept filesystem's UUID ----------------------------------------- */

/* The UUID of the filesystem on device dev; "" when it has none that
 * libblkid reads (a tmpfs, an overlay). */
static void fs_uuid(dev_t dev, char *out, size_t n)
{
	_cleanup_free_ char *node = blkid_devno_to_devname(dev);
	const char *v = NULL;
	blkid_probe pr;

	*out = '\0';
	if (!node || !(pr = blkid_new_probe_from_filename(node)))
		return;
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_UUID);
	if (blkid_do_safeprobe(pr) == 0 && blkid_probe_lookup_value(pr, "UUID", &v, NULL) == 0 && v)
		snprintf(out, n, "%s", v);
	blkid_free_probe(pr);
}

/* The UUID the new tree names its root by: fstab's "UUID=… /" first, else
 * grub.cfg's first root=UUID=; "" when neither names one. */
static void tree_root_uuid(const char *root, char *out, size_t n)
{
	_cleanup_free_ char *text = NULL;
	char path[PATH_MAX + 32];
	size_t len;
	const char *p;

	*out = '\0';
	snprintf(path, sizeof(path), "%s/etc/fstab", root);
	if (ip_read_file(path, 1 << 20, &text, &len, NULL) == 0) {
		for (char *line = text, *next; line && *line; line = next) {
			char spec[128], mnt[256];

			next = strchr(line, '\n');
			if (next)
				*next++ = '\0';
			if (sscanf(line, "UUID=%127s %255s", spec, mnt) == 2 && !strcmp(mnt, "/")) {
				snprintf(out, n, "%s", spec);
				return;
			}
		}
	}
	free(TAKE_PTR(text));
	snprintf(path, sizeof(path), "%s/boot/grub/grub.cfg", root);
	if (ip_read_file(path, 8 << 20, &text, &len, NULL) == 0 && (p = strstr(text, "root=UUID="))) {
		p += strlen("root=UUID=");
		snprintf(out, n, "%.*s", (int)strcspn(p, " \t\n"), p);
	}
}

/* Every from in root/rel becomes to; *fixed counts the files changed. */
static int replace_in(const char *root, const char *rel, const char *from, const char *to, unsigned *fixed,
		      ip_error *e)
{
	_cleanup_free_ char *old = NULL, *nw = NULL;
	char path[PATH_MAX + 32];
	size_t len = 0, fl = strlen(from), tl = strlen(to), hits = 0, k = 0;
	struct stat sb;

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode) || ip_read_file(path, 8 << 20, &old, &len, NULL) < 0)
		return 0;
	for (const char *p = old; (p = strstr(p, from)); p += fl)
		hits++;
	if (!hits)
		return 0;
	if (!(nw = malloc(len + hits * tl + 1)))
		return ip_fail(e, -ENOMEM, "out of memory");
	for (const char *p = old; *p;) {
		if (!strncmp(p, from, fl)) {
			memcpy(nw + k, to, tl);
			k += tl;
			p += fl;
		} else {
			nw[k++] = *p++;
		}
	}
	(*fixed)++;
	return ip_write_file_atomic(path, nw, k, sb.st_mode & 07777, e);
}

/* The new tree came from another filesystem: its fstab and grub.cfg name
 * that one's UUID, which does not exist here (the initramfs would stop at
 * "ALERT! UUID=… does not exist").  They get the UUID of the filesystem
 * that was kept. */
static int fix_root_uuid(const char *root, const struct stat *sb, struct imager_files_result *res, ip_error *e)
{
	static const char *const files[] = { "etc/fstab", "boot/grub/grub.cfg", NULL };
	char up[PATH_MAX + 8];
	struct stat parent;
	int r = 0;

	/* only a filesystem's root is a system's root: a directory inside
	 * another filesystem (a test tree, a chroot) keeps what it names */
	snprintf(up, sizeof(up), "%s/..", root);
	if (stat(up, &parent) < 0 || parent.st_dev == sb->st_dev)
		return 0;
	fs_uuid(sb->st_dev, res->root_uuid, sizeof(res->root_uuid));
	tree_root_uuid(root, res->image_uuid, sizeof(res->image_uuid));
	if (!*res->root_uuid || !*res->image_uuid || !strcmp(res->root_uuid, res->image_uuid))
		return 0;
	for (size_t i = 0; r == 0 && files[i]; i++)
		r = replace_in(root, files[i], res->image_uuid, res->root_uuid, &res->uuid_fixed, e);
	return r;
}

int imager_apply_files(const char *archive, const char *root, const char *const *keep_in,
		       struct imager_files_result *res, ip_error *e)
{
	struct archive *a = NULL, *w = NULL;
	struct archive_entry *ent;
	struct keep keep = { 0 };
	char **have = NULL;
	size_t nhave = 0, cap = 0;
	char rootabs[PATH_MAX], rel[PATH_MAX], full[PATH_MAX * 2];
	static const char *const defkeep[] = { "/home", "/root", "/srv", NULL };
	const char *const *kp = keep_in ? keep_in : defkeep;
	struct stat sb;
	int r = 0;

	memset(res, 0, sizeof(*res));
	if (!realpath(root, rootabs) || stat(rootabs, &sb) < 0 || !S_ISDIR(sb.st_mode))
		return ip_bad(e, -ENOTDIR, "%s is not a directory: give the mounted root of the system to replace", root);
	if (!strcmp(rootabs, "/"))
		return ip_bad(e, -EPERM, "refusing to replace the running system's root: mount the target elsewhere and give that directory");
	for (size_t i = 0; kp[i]; i++) {
		char norm[PATH_MAX];
		char **np;

		if (!normalise(kp[i], norm, sizeof(norm)) || !*norm) {
			r = ip_bad(e, -EINVAL, "--keep path '%s' is not a path below the root: give paths like /home", kp[i]);
			goto out;
		}
		np = realloc(keep.p, (keep.n + 1) * sizeof(*np));
		if (!np || !(np[keep.n] = strdup(norm))) {
			keep.p = np ? np : keep.p;
			r = ip_fail(e, -ENOMEM, "out of memory");
			goto out;
		}
		keep.p = np;
		keep.n++;
	}

	r = precheck(archive, e);
	if (r < 0)
		goto out;
	a = archive_read_new();
	w = archive_write_disk_new();
	if (!a || !w) {
		r = ip_fail(e, -ENOMEM, "out of memory");
		goto out;
	}
	archive_read_support_filter_all(a);
	archive_read_support_format_all(a);
	/* Paths given to the writer are root + a normalised relative path (no
	 * ".."), hence absolute; symlinks on the way are refused. */
	archive_write_disk_set_options(w, ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
					  ARCHIVE_EXTRACT_UNLINK |
					  ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_TIME |
					  ARCHIVE_EXTRACT_ACL | ARCHIVE_EXTRACT_XATTR | ARCHIVE_EXTRACT_FFLAGS);
	archive_write_disk_set_standard_lookup(w);
	if (archive_read_open_filename(a, archive, 1 << 20) != ARCHIVE_OK) {
		r = ip_bad(e, -EINVAL, "cannot read %s: %s", archive, archive_error_string(a));
		goto out;
	}
	for (;;) {
		int k = next_entry(a, archive, &ent, rel, sizeof(rel), e);
		const char *hl;

		if (k < 0) {
			r = k;
			goto out;
		}
		if (k == 0)
			break;
		if (!*rel)
			continue;
		if (is_kept(&keep, rel)) {
			res->skipped++;
			continue;
		}
		if (nhave == cap) {
			char **nh = realloc(have, (cap = cap ? cap * 2 : 1024) * sizeof(*nh));

			if (!nh) {
				r = ip_fail(e, -ENOMEM, "out of memory");
				goto out;
			}
			have = nh;
		}
		if (!(have[nhave] = strdup(rel))) {
			r = ip_fail(e, -ENOMEM, "out of memory");
			goto out;
		}
		nhave++;
		snprintf(full, sizeof(full), "%s/%s", rootabs, rel);
		archive_entry_copy_pathname(ent, full);
		hl = archive_entry_hardlink(ent);
		if (hl) {
			char hrel[PATH_MAX];

			if (!normalise(hl, hrel, sizeof(hrel)) || !*hrel) {
				r = ip_bad(e, -EINVAL, "%s holds a hard link outside the root (%s): refusing the whole archive",
					   archive, hl);
				goto out;
			}
			snprintf(full, sizeof(full), "%s/%s", rootabs, hrel);
			archive_entry_copy_hardlink(ent, full);
		}
		k = archive_write_header(w, ent);
		if (k >= ARCHIVE_WARN && archive_entry_size(ent) > 0) {
			const void *buf;
			size_t len;
			int64_t off;

			while ((k = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK)
				if (archive_write_data_block(w, buf, len, off) < ARCHIVE_WARN) {
					k = ARCHIVE_FATAL;
					break;
				}
			if (k == ARCHIVE_EOF)
				k = ARCHIVE_OK;
		}
		if (k >= ARCHIVE_WARN)
			k = archive_write_finish_entry(w);
		if (k < ARCHIVE_WARN) {
			r = ip_bad(e, -EIO, "cannot extract %s from %s: %s", rel, archive,
				   archive_error_string(w) ? archive_error_string(w) : archive_error_string(a));
			goto out;
		}
		res->extracted++;
	}
	if (archive_write_close(w) != ARCHIVE_OK) {
		r = ip_fail(e, -EIO, "cannot finish extracting %s: %s", archive, archive_error_string(w));
		goto out;
	}
	/* Remove what the new system does not have (kept paths aside). */
	qsort(have, nhave, sizeof(*have), cmp_str);
	walk.keep = &keep;
	walk.have = have;
	walk.nhave = nhave;
	walk.root_len = strlen(rootabs);
	walk.removed = 0;
	walk.err = 0;
	if (nftw(rootabs, remove_extra, 64, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 && !walk.err)
		walk.err = -errno;
	if (walk.err) {
		r = ip_fail(e, walk.err, "cannot remove %s: %s", walk.errpath[0] ? walk.errpath : rootabs,
			    strerror(-walk.err));
		goto out;
	}
	res->removed = walk.removed;
	r = fix_root_uuid(rootabs, &sb, res, e);
	sync();
out:
	if (a)
		archive_read_free(a);
	if (w)
		archive_write_free(w);
	for (size_t i = 0; i < nhave; i++)
		free(have[i]);
	free(have);
	for (size_t i = 0; i < keep.n; i++)
		free(keep.p[i]);
	free(keep.p);
	return r;
}
