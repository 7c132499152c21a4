/* migrate.h — save user profiles and machine identity into a profile store,
 * verify the store, and restore it into the root of a new OS.
 *
 * Store layout (a directory, 0700, every file 0600):
 *   USER.pax.zst    one pax archive per user: home/… (the home directory),
 *                   extra/crontab, extra/mail; xattrs, ACLs, sparse files,
 *                   hardlinks, file capabilities; zstd-compressed
 *   manifest.json   users, and per file: path, type, size, mode, owner and
 *                   group by name, the hash of the content; the hash of
 *                   every archive file; the algorithm in "hash" (XXH3-128
 *                   unless the spec asks for BLAKE2b-512, see hash.c)
 *   accounts.json   passwd/shadow/group/gshadow entries of the saved users
 *   machine.json    hostname, hosts, machine-id, SSH host keys, network
 *                   configuration, timezone, locale, keyboard
 *   COMPLETE        written last and fsynced: format_version, "hash" and
 *                   the hashes of the three JSON files; a store without it
 *                   is unfinished
 * Every function returns 0 or a negative errno and fills e; results come
 * back as a JSON object owned by the caller. */
#ifndef INPLACE_MIGRATE_H
#define INPLACE_MIGRATE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/common.h"

/* The profile spec: which users, which files, how large.  INI, every key
 * optional (defaults in migrate/spec.c and the README):
 *   [profile]  users = all | NAME,NAME…   include_root = false
 *              min_uid = 1000   max_size = 0 (no cap; SIZE like 20G)
 *              exclude = GLOB,GLOB…   (relative to each home; default
 *              the .cache and .local/share/Trash trees)   include = GLOB,…
 *              machine = true   level = 3   threads = 0 (all cores)
 *              hash = xxh3-128 | blake2b-512
 *   [user NAME] include = GLOB,…   exclude = GLOB,…
 *   [system]   include = GLOB,… (paths under the root, e.g. srv/www)
 *              exclude = GLOB,… */
typedef struct migrate_spec migrate_spec;

/* path NULL: the defaults.  An unknown section or key is bad input naming
 * the key and its line. */
int migrate_spec_load(const char *path, migrate_spec **out, ip_error *e);
int migrate_spec_parse(const char *text, const char *name, migrate_spec **out, ip_error *e);
void migrate_spec_free(migrate_spec *s);

struct migrate_restore_opts {
	const char *users;   /* comma-separated names, NULL: every saved user */
	bool dry_run;        /* say what would change, write nothing */
	bool trusted;        /* the store is ours: keep setuid/setgid bits, file
	                      * capabilities, trusted.* and security.* xattrs,
	                      * and restore the [system] paths */
	bool no_machine;     /* do not apply machine state */
	/* machine state kinds ("hostname", "ssh-host-keys", … as in
	 * machine.json) left as the new OS has them; NULL-terminated, NULL:
	 * every kind is applied */
	const char *const *machine_skip;
};

/* Bytes and files per user and in total, and the store size to reserve. */
int migrate_estimate(const char *root, const migrate_spec *spec, json_object **out, ip_error *e);
/* Save root's profiles into store (created 0700).  Never writes under root. */
int migrate_save(const char *root, const char *store, const migrate_spec *spec,
		 json_object **out, ip_error *e);
/* A directory of the root whose content lives on a filesystem that stays
 * through the reimaging (a separate /home partition, mounted there): the
 * homes under it are not archived, only their accounts, crontabs and mail;
 * the manifest records the directory and uuid ("kept").  Restore re-owns
 * the files of such a directory, when it is mounted in the new root, for
 * the accounts it had to renumber (kept.c). */
struct migrate_kept {
	const char *dir;     /* "/home", "/var/home" or one home ("/home/alice") */
	const char *uuid;    /* the filesystem's UUID, recorded (may be "") */
};
/* migrate_save, with the homes under kept[0..nkept) left where they are. */
int migrate_save_keeping(const char *root, const char *store, const migrate_spec *spec,
			 const struct migrate_kept *kept, size_t nkept, json_object **out, ip_error *e);
/* Check every archive against the manifest. */
int migrate_verify(const char *store, json_object **out, ip_error *e);
/* What the store holds: users, sizes, machine summary (no secrets). */
int migrate_list(const char *store, json_object **out, ip_error *e);
/* Restore into the root of a new OS. */
int migrate_restore(const char *store, const char *root, const struct migrate_restore_opts *o,
		    json_object **out, ip_error *e);

#endif
