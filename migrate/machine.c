/* machine.c — the identity of a machine: hostname, hosts, machine-id, SSH
 * host keys, network configuration (NetworkManager, systemd-networkd,
 * ifupdown, netplan: whichever exist), timezone, locale, keyboard.  Saved as
 * file contents (base64) into machine.json, applied to the new root with
 * atomic writes beneath it (made durable by the restore's final syncfs);
 * /etc/hosts is merged, not replaced. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "migrate/internal.h"

struct mfile {
	const char *kind;
	const char *path;   /* relative to the root; a trailing '/' means every file in it */
};

static const struct mfile machine_files[] = {
	{ "hostname", "etc/hostname" },
	{ "hosts", "etc/hosts" },
	{ "machine-id", "etc/machine-id" },
	{ "ssh-host-keys", "etc/ssh/" },
	{ "network", "etc/NetworkManager/system-connections/" },
	{ "network", "etc/systemd/network/" },
	{ "network", "etc/network/interfaces" },
	{ "network", "etc/network/interfaces.d/" },
	{ "network", "etc/netplan/" },
	{ "timezone", "etc/timezone" },
	{ "timezone", "etc/localtime" },
	{ "locale", "etc/default/locale" },
	{ "locale", "etc/locale.conf" },
	{ "keyboard", "etc/default/keyboard" },
	{ "keyboard", "etc/vconsole.conf" },
};

/* The kind a path of machine.json belongs to (after machine_path_allowed). */
static const char *path_kind(const char *path)
{
	for (size_t i = 0; i < IP_ARRAY_SIZE(machine_files); i++) {
		const char *m = machine_files[i].path;
		size_t l = strlen(m);

		if (m[l - 1] != '/' ? !strcmp(path, m) : !strncmp(path, m, l))
			return machine_files[i].kind;
	}
	return NULL;
}

/* Only the paths machine.json may name: a damaged or hostile store must not
 * be able to replace /etc/shadow or /etc/sudoers through machine state. */
static bool machine_path_allowed(const char *path)
{
	for (size_t i = 0; i < IP_ARRAY_SIZE(machine_files); i++) {
		const char *m = machine_files[i].path;
		size_t l = strlen(m);

		if (m[l - 1] != '/') {
			if (!strcmp(path, m))
				return true;
			continue;
		}
		if (strncmp(path, m, l) || !path[l] || strchr(path + l, '/'))
			continue;
		if (!strcmp(machine_files[i].kind, "ssh-host-keys") && strncmp(path + l, "ssh_host_", 9))
			continue;
		return true;
	}
	return false;
}

static int add_file(int rootfd, const struct mig_accounts *acc, const char *kind, const char *rel,
		    json_object *files, ip_error *e)
{
	_cleanup_close_ int fd = mig_openat_inroot(rootfd, rel, O_RDONLY | O_NOFOLLOW | O_PATH);
	_cleanup_free_ char *data = NULL, *b64 = NULL;
	struct stat st;
	size_t len;
	json_object *o;
	char path[64];

	if (fd < 0 || fstat(fd, &st) < 0)
		return 0;
	o = json_object_new_object();
	json_object_object_add(o, "kind", json_object_new_string(kind));
	json_object_object_add(o, "path", json_object_new_string(rel));
	if (S_ISLNK(st.st_mode)) {
		char target[4096];
		ssize_t n = readlinkat(fd, "", target, sizeof(target) - 1);
		if (n < 0) {
			json_object_put(o);
			return 0;
		}
		target[n] = '\0';
		json_object_object_add(o, "link", json_object_new_string(target));
		json_object_array_add(files, o);
		return 0;
	}
	if (!S_ISREG(st.st_mode)) {
		json_object_put(o);
		return 0;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ip_error ee;
	if (ip_read_file(path, 16 << 20, &data, &len, &ee) < 0) {
		json_object_put(o);
		return ip_fail(e, ee.code, "cannot read /%s of the root: %s", rel, ee.msg);
	}
	size_t bl = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
	if (!(b64 = malloc(bl))) {
		json_object_put(o);
		return ip_fail(e, -ENOMEM, "out of memory");
	}
	sodium_bin2base64(b64, bl, (const unsigned char *)data, len, sodium_base64_VARIANT_ORIGINAL);
	const char *on = mig_uid_name(acc, st.st_uid), *gn = mig_gid_name(acc, st.st_gid);
	json_object_object_add(o, "mode", json_object_new_int((int)(st.st_mode & 07777)));
	json_object_object_add(o, "owner", json_object_new_string(on ? on : "root"));
	json_object_object_add(o, "group", json_object_new_string(gn ? gn : "root"));
	json_object_object_add(o, "data", json_object_new_string(b64));
	json_object_array_add(files, o);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int mig_machine_collect(int rootfd, json_object **out, ip_error *e)
{
	_cleanup_json_ json_object *doc = json_object_new_object();
	json_object *files = json_object_new_array();
	struct mig_accounts acc = { 0 };
	_cleanup_free_ char *hostname = NULL;
	int r = 0;

	json_object_object_add(doc, "files", files);
	mig_accounts_load(rootfd, &acc, NULL);
	for (size_t i = 0; i < IP_ARRAY_SIZE(machine_files) && !r; i++) {
		const struct mfile *m = &machine_files[i];
		size_t l = strlen(m->path);

		if (m->path[l - 1] != '/') {
			r = add_file(rootfd, &acc, m->kind, m->path, files, e);
			continue;
		}
		char dir[256];
		snprintf(dir, sizeof(dir), "%.*s", (int)(l - 1), m->path);
		int dfd = mig_openat_inroot(rootfd, dir, O_RDONLY | O_DIRECTORY);
		DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
		struct dirent *de;
		char **names = NULL;
		size_t n = 0;
		if (!d) {
			if (dfd >= 0)
				close(dfd);
			continue;
		}
		while ((de = readdir(d))) {
			if (de->d_name[0] == '.')
				continue;
			if (!strcmp(m->kind, "ssh-host-keys") && strncmp(de->d_name, "ssh_host_", 9))
				continue;
			char **nn = realloc(names, (n + 1) * sizeof(*nn));
			if (!nn)
				break;
			names = nn;
			names[n++] = strdup(de->d_name);
		}
		closedir(d);
		qsort(names, n, sizeof(*names), cmp_str);
		for (size_t j = 0; j < n; j++) {
			char rel[600];
			snprintf(rel, sizeof(rel), "%s%s", m->path, names[j]);
			if (!r)
				r = add_file(rootfd, &acc, m->kind, rel, files, e);
			free(names[j]);
		}
		free(names);
	}
	mig_accounts_clear(&acc);
	if (r < 0)
		return r;
	if (mig_read_inroot(rootfd, "etc/hostname", 4096, &hostname, NULL) == 0) {
		hostname[strcspn(hostname, "\n")] = '\0';
		json_object_object_add(doc, "hostname", json_object_new_string(hostname));
	}
	*out = TAKE_PTR(doc);
	return 0;
}

/* Lines of the old hosts file that the new one lacks, appended. */
static char *merge_hosts(const char *cur, const char *old)
{
	size_t cl = strlen(cur), cap = cl + strlen(old) + 2, len = cl;
	char *out = malloc(cap + 1);
	const char *p = old;

	if (!out)
		return NULL;
	memcpy(out, cur, cl + 1);
	if (len && out[len - 1] != '\n') {
		out[len++] = '\n';
		out[len] = '\0';
	}
	while (*p) {
		const char *nl = strchr(p, '\n');
		size_t l = nl ? (size_t)(nl - p) : strlen(p);
		bool found = false;
		const char *q = cur;

		while (*q && l) {
			const char *qn = strchr(q, '\n');
			size_t ql = qn ? (size_t)(qn - q) : strlen(q);
			if (ql == l && !strncmp(q, p, l)) {
				found = true;
				break;
			}
			q += ql + (qn ? 1 : 0);
		}
		if (l && !found) {
			memcpy(out + len, p, l);
			len += l;
			out[len++] = '\n';
			out[len] = '\0';
		}
		p += l + (nl ? 1 : 0);
	}
	return out;
}

static long name_id(const struct mig_db *db, const char *name)
{
	struct mig_rec *r = name ? mig_db_find(db, name) : NULL;
	return r ? mig_rec_id(r) : 0;
}

int mig_machine_check(json_object *machine, ip_error *e)
{
	json_object *files, *v;

	if (!json_object_object_get_ex(machine, "files", &files) || !json_object_is_type(files, json_type_array))
		return 0;
	for (size_t i = 0; i < json_object_array_length(files); i++) {
		json_object *f = json_object_array_get_idx(files, i);
		const char *path = mig_json_str(json_object_object_get(f, "path"));
		const char *b64;

		if (!path || !mig_path_safe(path) || !machine_path_allowed(path))
			return ip_fail(e, -EINVAL, "machine.json names an unsafe path: the store is damaged or hostile");
		if (json_object_object_get_ex(f, "link", &v)) {
			if (!mig_json_str(v) || !strchr(path, '/'))
				return ip_fail(e, -EINVAL, "machine.json holds a damaged link for /%s: the store is damaged", path);
			continue;
		}
		b64 = mig_json_str(json_object_object_get(f, "data"));
		if (!b64)
			return ip_fail(e, -EINVAL, "machine.json holds damaged data for /%s: the store is damaged", path);
	}
	return 0;
}

static bool kind_skipped(const char *const *skip, const char *kind)
{
	for (; skip && *skip; skip++)
		if (kind && !strcmp(*skip, kind))
			return true;
	return false;
}

int mig_machine_apply(int rootfd, const struct mig_accounts *acc, json_object *machine, bool dry_run,
		      const char *const *skip, json_object *report, ip_error *e)
{
	json_object *files, *changed = json_object_new_array(), *skipped = json_object_new_array();
	size_t n;
	int r = 0;

	json_object_object_add(report, "machine_changed", changed);
	json_object_object_add(report, "machine_skipped", skipped);
	for (const char *const *k = skip; k && *k; k++)
		json_object_array_add(skipped, json_object_new_string(*k));
	if (!json_object_object_get_ex(machine, "files", &files) || !json_object_is_type(files, json_type_array))
		return 0;
	n = json_object_array_length(files);
	for (size_t i = 0; i < n && !r; i++) {
		json_object *f = json_object_array_get_idx(files, i), *v;
		const char *path = mig_json_str(json_object_object_get(f, "path"));
		const char *kind = mig_json_str(json_object_object_get(f, "kind"));

		if (!path || !mig_path_safe(path) || !machine_path_allowed(path))
			return ip_fail(e, -EINVAL, "machine.json names an unsafe path: the store is damaged or hostile");
		/* the kind by the path, not by what the store says it is: a
		 * skipped kind cannot come in under another name */
		if (kind_skipped(skip, path_kind(path)))
			continue;
		if (json_object_object_get_ex(f, "link", &v)) {
			const char *target = mig_json_str(v);
			char cur[4096], dir[600], tmp[700];
			const char *slash = strrchr(path, '/');
			if (!target || !slash)
				return ip_fail(e, -EINVAL, "machine.json holds a damaged link for /%s: the store is damaged", path);
			snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path);
			_cleanup_close_ int dfd = mig_mkdirs_beneath(rootfd, dir, 0755, (uid_t)-1, (gid_t)-1, NULL);
			if (dfd < 0)
				return ip_fail(e, dfd, "cannot open /%s in the new root: %s", dir, strerror(-dfd));
			ssize_t cl = readlinkat(dfd, slash + 1, cur, sizeof(cur) - 1);
			if (cl >= 0 && (cur[cl] = '\0', !strcmp(cur, target)))
				continue;
			json_object_array_add(changed, json_object_new_string(path));
			if (dry_run)
				continue;
			snprintf(tmp, sizeof(tmp), ".%s.inplace-tmp", slash + 1);
			unlinkat(dfd, tmp, 0);
			if (symlinkat(target, dfd, tmp) < 0 || renameat(dfd, tmp, dfd, slash + 1) < 0)
				return ip_fail(e, -errno, "cannot write /%s in the new root: %s", path, strerror(errno));
			continue;
		}
		const char *b64 = mig_json_str(json_object_object_get(f, "data"));
		size_t bl = b64 ? strlen(b64) : 0, dl;
		_cleanup_free_ char *data = malloc(bl + 1), *cur = NULL, *merged = NULL;
		if (!data)
			return ip_fail(e, -ENOMEM, "out of memory");
		if (!b64 || sodium_base642bin((unsigned char *)data, bl + 1, b64, bl, NULL, &dl, NULL,
					      sodium_base64_VARIANT_ORIGINAL) != 0)
			return ip_fail(e, -EINVAL, "machine.json holds damaged data for /%s: the store is damaged", path);
		data[dl] = '\0';
		int mode = json_object_get_int(json_object_object_get(f, "mode")) & 0777;
		uid_t uid = (uid_t)name_id(&acc->db[MIG_PASSWD], mig_json_str(json_object_object_get(f, "owner")));
		gid_t gid = (gid_t)name_id(&acc->db[MIG_GROUP], mig_json_str(json_object_object_get(f, "group")));
		size_t curlen = 0;
		_cleanup_close_ int cfd = mig_openat_beneath(rootfd, path, O_RDONLY, 0);
		if (cfd >= 0) {
			char p[64];
			ip_error ee;
			snprintf(p, sizeof(p), "/proc/self/fd/%d", cfd);
			ip_read_file(p, 16 << 20, &cur, &curlen, &ee);
		}
		if (kind && !strcmp(kind, "hosts") && cur) {
			/* already merged: every old line present, no other loopback name */
			_cleanup_free_ char *again = merge_hosts(cur, data);
			bool stale = false;
			for (const char *l = cur; (l = strstr(l, "127.0.1.1")); l++)
				if (l == cur || l[-1] == '\n') {
					size_t ll = strcspn(l, "\n");
					char line[512];
					snprintf(line, sizeof(line), "%.*s", (int)(ll < 500 ? ll : 500), l);
					stale |= !strstr(data, line);
				}
			if (again && !strcmp(again, cur) && !stale)
				continue;
		}
		_cleanup_free_ char *base = cur ? strdup(cur) : NULL;
		if (cur && !base)
			return ip_fail(e, -ENOMEM, "out of memory");
		if (kind && !strcmp(kind, "hosts") && base && strstr(data, "127.0.1.1")) {
			/* the old hostname's loopback line replaces the new one's */
			char *l = base;
			while ((l = strstr(l, "127.0.1.1"))) {
				if (l == base || l[-1] == '\n') {
					char *nl = strchr(l, '\n');
					memmove(l, nl ? nl + 1 : l + strlen(l), strlen(nl ? nl + 1 : l + strlen(l)) + 1);
				} else {
					l++;
				}
			}
		}
		if (kind && !strcmp(kind, "hosts") && cur) {
			if (!(merged = merge_hosts(base, data)))
				return ip_fail(e, -ENOMEM, "out of memory");
			free(data);
			data = TAKE_PTR(merged);
			dl = strlen(data);
		}
		struct stat st;
		if (cur && curlen == dl && !memcmp(cur, data, dl) && fstat(cfd, &st) == 0 &&
		    (st.st_mode & 0777) == (mode_t)mode && st.st_uid == uid && st.st_gid == gid)
			continue;
		json_object_array_add(changed, json_object_new_string(path));
		if (dry_run)
			continue;
		r = mig_write_beneath(rootfd, path, data, dl, (mode_t)mode, uid, gid, false, e);
	}
	return r;
}
