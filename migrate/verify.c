/* verify.c — read every archive of a store and compare it with the
 * manifest: the archive file's hash, the entry set, each entry's metadata
 * and each file's content hash.  Also `profile list`. */
#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "migrate/internal.h"

static la_ssize_t ar_read(struct archive *a, void *data, const void **buf)
{
	struct mig_areader *r = data;
	ssize_t n;

	do
		n = read(r->fd, r->buf, sizeof(r->buf));
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		archive_set_error(a, errno, "%s", strerror(errno));
		return -1;
	}
	mig_hash_update(&r->st, r->buf, (size_t)n);
	*buf = r->buf;
	return n;
}

int mig_areader_open(struct mig_areader *r, int storefd, json_object *muser, enum mig_hash_alg alg, ip_error *e)
{
	json_object *entries, *v;
	const char *file;

	memset(r, 0, sizeof(*r));
	r->fd = -1;
	if (!json_object_object_get_ex(muser, "archive", &v) || !(file = mig_json_str(v)) ||
	    !mig_path_safe(file) || strchr(file, '/') ||
	    !json_object_object_get_ex(muser, "entries", &entries) || !json_object_is_type(entries, json_type_array))
		return ip_fail(e, -EINVAL, "manifest.json is damaged (a user without archive or entries): save the profile again");
	r->file = file;
	if (json_object_object_get_ex(muser, "archive_hash", &v))
		snprintf(r->want_hash, sizeof(r->want_hash), "%s", mig_json_str(v) ? mig_json_str(v) : "");
	r->index = json_object_new_object();
	r->seen_paths = json_object_new_object();
	r->nentries = json_object_array_length(entries);
	for (size_t i = 0; i < r->nentries; i++) {
		json_object *en = json_object_array_get_idx(entries, i);
		const char *p = mig_json_str(json_object_object_get(en, "path"));
		if (!p || json_object_object_get_ex(r->index, p, NULL))
			return ip_fail(e, -EINVAL, "manifest.json is damaged (entry %zu of %s): save the profile again", i, file);
		json_object_object_add(r->index, p, json_object_get(en));
	}
	r->fd = mig_store_open_file(storefd, file, e);
	if (r->fd < 0)
		return r->fd;
	mig_hash_init(&r->st, alg);
	r->a = archive_read_new();
	if (!r->a)
		return ip_fail(e, -ENOMEM, "out of memory");
	archive_read_support_filter_zstd(r->a);
	archive_read_support_format_tar(r->a);
	if (archive_read_open(r->a, r, NULL, ar_read, NULL) != ARCHIVE_OK)
		return ip_fail(e, -EBADMSG, "%s is not a readable archive (%s): the store is damaged", file,
			       archive_error_string(r->a));
	return 0;
}

static bool meta_equal(json_object *m, const char *key, const char *val)
{
	json_object *v;
	return json_object_object_get_ex(m, key, &v) && val && mig_json_str(v) && !strcmp(mig_json_str(v), val);
}

int mig_areader_next(struct mig_areader *r, struct archive_entry **en, json_object **ment, ip_error *e)
{
	const char *p, *hl;
	json_object *m;
	mode_t mode;
	int k = archive_read_next_header(r->a, en);

	if (k == ARCHIVE_EOF)
		return 1;
	if (k < ARCHIVE_WARN)
		return ip_fail(e, -EBADMSG, "%s is damaged or truncated (%s): the store cannot be restored",
			       r->file, archive_error_string(r->a));
	p = archive_entry_pathname(*en);
	/* tar writers end directory names with '/': the manifest does not */
	if (p && archive_entry_filetype(*en) == AE_IFDIR) {
		size_t l = strlen(p);
		if (l > 1 && p[l - 1] == '/') {
			char *t = strndup(p, l - 1);
			if (!t)
				return ip_fail(e, -ENOMEM, "out of memory");
			archive_entry_copy_pathname(*en, t);
			free(t);
			p = archive_entry_pathname(*en);
		}
	}
	if (!p || !json_object_object_get_ex(r->index, p, &m))
		return ip_fail(e, -EBADMSG, "%s holds an entry the manifest does not list: the store is damaged or hostile", r->file);
	if (json_object_object_get_ex(r->seen_paths, p, NULL))
		return ip_fail(e, -EBADMSG, "%s holds a path twice: the store is damaged or hostile", r->file);
	json_object_object_add(r->seen_paths, p, NULL);
	r->seen++;
	mode = archive_entry_mode(*en);
	hl = archive_entry_hardlink(*en);
	const char *type = hl ? "hardlink" : S_ISREG(mode) ? "file" : S_ISDIR(mode) ? "dir" : S_ISLNK(mode) ? "symlink" :
			   S_ISFIFO(mode) ? "fifo" : S_ISCHR(mode) ? "chardev" : S_ISBLK(mode) ? "blockdev" : "unknown";
	const char *link = hl ? hl : S_ISLNK(mode) ? archive_entry_symlink(*en) : NULL;
	json_object *v;
	const char *bad = NULL;
	if (!meta_equal(m, "type", type))
		bad = "type";
	else if (json_object_get_int(json_object_object_get(m, "mode")) != (int)(mode & 07777))
		bad = "mode";
	else if (json_object_get_int64(json_object_object_get(m, "size")) != (hl || !S_ISREG(mode) ? 0 : archive_entry_size(*en)))
		bad = "size";
	else if (!meta_equal(m, "owner", archive_entry_uname(*en) ? archive_entry_uname(*en) : "") ||
		 !meta_equal(m, "group", archive_entry_gname(*en) ? archive_entry_gname(*en) : ""))
		bad = "owner";
	else if (link ? !meta_equal(m, "link", link) : json_object_object_get_ex(m, "link", &v))
		bad = "link";
	if (bad)
		return ip_fail(e, -EBADMSG, "%s disagrees with the manifest about the %s of '%.200s': the store is damaged or hostile",
			       r->file, bad, p);
	*ment = m;
	return 0;
}

int mig_areader_check_hash(struct mig_areader *r, json_object *ment, const char *hex, ip_error *e)
{
	if (!meta_equal(ment, "hash", hex))
		return ip_fail(e, -EBADMSG, "%s: a file's content differs from the manifest: the store is damaged or was altered",
			       r->file);
	return 0;
}

int mig_areader_finish(struct mig_areader *r, ip_error *e)
{
	char hex[MIG_HASH_HEX];

	/* drain what libarchive did not need (padding) into the hash */
	while (ar_read(r->a, r, &(const void *){ NULL }) > 0)
		;
	mig_hash_hex(&r->st, hex);
	if (r->seen != r->nentries)
		return ip_fail(e, -EBADMSG, "%s lacks %zu entries the manifest lists: the store is damaged or truncated",
			       r->file, r->nentries - r->seen);
	if (strcmp(hex, r->want_hash))
		return ip_fail(e, -EBADMSG, "%s was altered or truncated after the save (archive hash mismatch): the store cannot be trusted",
			       r->file);
	return 0;
}

void mig_areader_close(struct mig_areader *r)
{
	if (r->a)
		archive_read_free(r->a);
	if (r->fd >= 0)
		close(r->fd);
	if (r->index)
		json_object_put(r->index);
	if (r->seen_paths)
		json_object_put(r->seen_paths);
	r->seen_paths = NULL;
	r->a = NULL;
	r->fd = -1;
	r->index = NULL;
}

/* Hash the current entry's data (holes as zeros) into hex. */
static int hash_entry(struct mig_areader *r, struct archive_entry *en, char hex[MIG_HASH_HEX], ip_error *e)
{
	struct mig_hash st;
	int64_t pos = 0, size = archive_entry_size(en);

	mig_hash_init(&st, r->st.alg);
	for (;;) {
		const void *buf;
		size_t len;
		la_int64_t off;
		int k = archive_read_data_block(r->a, &buf, &len, &off);
		if (k == ARCHIVE_EOF)
			break;
		if (k < ARCHIVE_WARN)
			return ip_fail(e, -EBADMSG, "%s is damaged or truncated (%s): the store cannot be restored",
				       r->file, archive_error_string(r->a));
		if (off < pos || off + (int64_t)len > size)
			return ip_fail(e, -EBADMSG, "%s holds data outside a file's size: the store is damaged or hostile", r->file);
		mig_hash_zeros(&st, (uint64_t)(off - pos));
		mig_hash_update(&st, buf, len);
		pos = off + (int64_t)len;
	}
	mig_hash_zeros(&st, (uint64_t)(size - pos));
	mig_hash_hex(&st, hex);
	return 0;
}

/* Where an archive entry may go: "home" (the home itself), home/… or, in
 * the [system] archive, root/…, and the two extras; never a device node,
 * never below something that is not a directory, a hardlink only to a
 * regular file met before. */
static const char *entry_refusal(const char *p, struct archive_entry *en, bool sys, json_object *files, json_object *nondirs)
{
	const char *prefix = sys ? "root/" : "home/";
	mode_t type = archive_entry_filetype(en);
	const char *hl = archive_entry_hardlink(en);

	if (!sys && !strcmp(p, "home"))
		return type == AE_IFDIR && !hl ? NULL : "the home is not a directory";
	if (!sys && (!strcmp(p, "extra/crontab") || !strcmp(p, "extra/mail")))
		return type == AE_IFREG && !hl ? NULL : "not a regular file";
	if (strncmp(p, prefix, 5) || !mig_path_safe(p + 5))
		return "path outside the home (absolute, '..' or empty component)";
	for (const char *s = strchr(p + 5, '/'); s; s = strchr(s + 1, '/')) {
		char up[4200];
		snprintf(up, sizeof(up), "%.*s", (int)(s - p), p);
		if (json_object_object_get_ex(nondirs, up, NULL))
			return "below a symlink or file of the same archive";
	}
	if (hl) {
		if (strncmp(hl, prefix, 5) || !mig_path_safe(hl + 5) || !json_object_object_get_ex(files, hl, NULL))
			return "hardlink to a file this archive did not restore";
		return NULL;
	}
	switch (type) {
	case AE_IFREG:
	case AE_IFDIR:
	case AE_IFIFO:
		return NULL;
	case AE_IFLNK:
		return archive_entry_symlink(en) && *archive_entry_symlink(en) ? NULL : "symlink without a target";
	}
	return "device nodes and sockets are never restored";
}

int mig_archive_check(int storefd, json_object *mu, enum mig_hash_alg alg, uint64_t *nfiles, uint64_t *nbytes, ip_error *e)
{
	struct mig_areader ar;
	struct archive_entry *en;
	json_object *m, *v;
	bool sys = json_object_object_get_ex(mu, "system", &v) && json_object_get_boolean(v);
	_cleanup_json_ json_object *files = json_object_new_object(), *nondirs = json_object_new_object();
	uint64_t nf = 0, nb = 0;
	int r = mig_areader_open(&ar, storefd, mu, alg, e);

	while (r == 0 && (r = mig_areader_next(&ar, &en, &m, e)) == 0) {
		const char *p = archive_entry_pathname(en), *why = entry_refusal(p, en, sys, files, nondirs);

		if (why) {
			r = ip_fail(e, -EPERM, "%s holds '%.200s': %s: the store is damaged or hostile", ar.file, p, why);
			break;
		}
		nf++;
		if (archive_entry_filetype(en) != AE_IFDIR)
			json_object_object_add(nondirs, p, NULL);
		if (S_ISREG(archive_entry_mode(en)) && !archive_entry_hardlink(en)) {
			char hex[MIG_HASH_HEX];
			nb += (uint64_t)archive_entry_size(en);
			json_object_object_add(files, p, NULL);
			if ((r = hash_entry(&ar, en, hex, e)) < 0 || (r = mig_areader_check_hash(&ar, m, hex, e)) < 0)
				break;
		}
	}
	if (r == 1)
		r = mig_areader_finish(&ar, e);
	mig_areader_close(&ar);
	if (nfiles)
		*nfiles = nf;
	if (nbytes)
		*nbytes = nb;
	return r;
}

int migrate_verify(const char *store, json_object **out, ip_error *e)
{
	_cleanup_close_ int sfd = -1;
	_cleanup_json_ json_object *manifest = NULL;
	json_object *users, *doc, *arr;
	enum mig_hash_alg alg;
	int r;

	if ((r = mig_store_open(store, &sfd, e)) < 0 || (r = mig_store_load(sfd, store, &alg, &manifest, e)) < 0)
		return r;
	if (!json_object_object_get_ex(manifest, "users", &users) || !json_object_is_type(users, json_type_array))
		return ip_fail(e, -EINVAL, "manifest.json of %s lists no users: the store is damaged", store);
	doc = ip_json_doc("profile verify");
	arr = json_object_new_array();
	json_object_object_add(doc, "store", json_object_new_string(store));
	json_object_object_add(doc, "users", arr);
	for (size_t i = 0; i < json_object_array_length(users); i++) {
		json_object *mu = json_object_array_get_idx(users, i);
		uint64_t files = 0, bytes = 0;

		if ((r = mig_archive_check(sfd, mu, alg, &files, &bytes, e)) < 0) {
			json_object_put(doc);
			return r;
		}
		json_object *o = json_object_new_object();
		json_object_object_add(o, "name", json_object_get(json_object_object_get(mu, "name")));
		json_object_object_add(o, "archive", json_object_get(json_object_object_get(mu, "archive")));
		json_object_object_add(o, "files", ip_json_u64(files));
		json_object_object_add(o, "bytes", ip_json_u64(bytes));
		json_object_array_add(arr, o);
	}
	*out = doc;
	return 0;
}

int migrate_list(const char *store, json_object **out, ip_error *e)
{
	_cleanup_close_ int sfd = -1;
	_cleanup_json_ json_object *manifest = NULL, *machine = NULL;
	json_object *users = NULL, *doc, *arr, *v;
	int r;

	if ((r = mig_store_open(store, &sfd, e)) < 0)
		return r;
	int cfd = mig_openat_beneath(sfd, "COMPLETE", O_PATH, 0);
	struct stat cst;
	/* a FIFO or directory named COMPLETE is no marker */
	bool complete = cfd >= 0 && fstat(cfd, &cst) == 0 && S_ISREG(cst.st_mode);
	if (cfd >= 0)
		close(cfd);
	if ((r = mig_store_read_json(sfd, "manifest.json", &manifest, e)) < 0) {
		enum mig_hash_alg alg;
		if (!complete)
			return mig_store_check_complete(sfd, store, &alg, e);
		return r;
	}
	doc = ip_json_doc("profile list");
	json_object_object_add(doc, "store", json_object_new_string(store));
	json_object_object_add(doc, "complete", json_object_new_boolean(complete));
	if (json_object_object_get_ex(manifest, "created", &v))
		json_object_object_add(doc, "created", json_object_get(v));
	/* the manifest is the store's word, which may be an attacker's: a
	 * users that is not a list is a damaged store, not a crash */
	if (json_object_object_get_ex(manifest, "users", &users) && !json_object_is_type(users, json_type_array)) {
		json_object_put(doc);
		return ip_bad(e, -EINVAL, "%s/manifest.json is damaged (its users is not a list): save the profile again", store);
	}
	arr = json_object_new_array();
	if (users)
		for (size_t i = 0; i < json_object_array_length(users); i++) {
			json_object *mu = json_object_array_get_idx(users, i), *o = json_object_new_object();
			static const char *const keys[] = { "name", "uid", "home", "files", "bytes", "archive", "archive_bytes" };
			for (size_t k = 0; k < IP_ARRAY_SIZE(keys); k++)
				if (json_object_object_get_ex(mu, keys[k], &v))
					json_object_object_add(o, keys[k], json_object_get(v));
			json_object_array_add(arr, o);
		}
	json_object_object_add(doc, "users", arr);
	if (mig_store_read_json(sfd, "machine.json", &machine, NULL) == 0) {
		json_object *files, *kinds = json_object_new_array();
		if (json_object_object_get_ex(machine, "hostname", &v))
			json_object_object_add(doc, "hostname", json_object_get(v));
		if (json_object_object_get_ex(machine, "files", &files) && json_object_is_type(files, json_type_array))
			for (size_t i = 0; i < json_object_array_length(files); i++) {
				json_object *f = json_object_array_get_idx(files, i);
				json_object_array_add(kinds, json_object_get(json_object_object_get(f, "path")));
			}
		json_object_object_add(doc, "machine_files", kinds);
	}
	*out = doc;
	return 0;
}
