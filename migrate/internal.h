/* internal.h — what the files of migrate/ share: the spec, the account
 * databases of a root, safe path resolution, hashing, store naming. */
#ifndef INPLACE_MIGRATE_INTERNAL_H
#define INPLACE_MIGRATE_INTERNAL_H

#include <archive.h>
#include <archive_entry.h>
#include <sodium.h>
#include <stdatomic.h>
#include <sys/types.h>
#define XXH_STATIC_LINKING_ONLY   /* XXH3_state_t on the stack */
#include <xxhash.h>

#include "migrate/migrate.h"

#define MIG_FORMAT "inplace-profile-store"
/* 1: BLAKE2b-512 hashes, no "hash" key; 2: the algorithm named in "hash" */
#define MIG_FORMAT_VERSION 2
#define MIG_HASH_LEN 64          /* the longest digest: BLAKE2b-512 */
#define MIG_HASH_HEX (MIG_HASH_LEN * 2 + 1)
#define MIG_ARCHIVE_EXT ".pax.zst"
#define MIG_PAX_OVERHEAD 1536    /* pax header bytes per entry, for estimates */
/* The [system] paths travel like a user whose "home" is the root; '@' is
 * never part of an account name, and the entries are named root/…. */
#define MIG_SYSTEM_USER "@system"

enum mig_hash_alg { MIG_HASH_XXH128, MIG_HASH_BLAKE2B };

/* The text of a JSON string, NULL for anything else (null, a number, a
 * missing key): what a store says is read only through this. */
static inline const char *mig_json_str(json_object *v)
{
	return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

/* ---- globs ---- */
struct mig_globs {
	char **v;
	size_t n;
};
void mig_globs_clear(struct mig_globs *g);
int mig_globs_add_list(struct mig_globs *g, const char *list);
/* Does rel ("docs/a.txt") or one of its parent directories match? */
bool mig_globs_match(const struct mig_globs *g, const char *rel);

struct mig_user_rule {
	char *name;
	struct mig_globs include, exclude;
};

struct migrate_spec {
	bool all_users;          /* users = all */
	struct mig_globs users;  /* otherwise the names */
	bool include_root;
	uid_t min_uid;
	uint64_t max_size;       /* 0: no cap */
	bool machine;
	unsigned level;          /* zstd level */
	unsigned threads;        /* 0: all cores */
	enum mig_hash_alg hash;
	struct mig_globs include, exclude; /* every home */
	struct mig_user_rule *rules;
	size_t nrules;
	struct mig_globs sys_include, sys_exclude;
};
const struct mig_user_rule *mig_spec_rule(const migrate_spec *s, const char *user);

/* ---- colon databases: passwd (7 fields), shadow (9), group (4), gshadow (4) ---- */
struct mig_rec {
	char **f;        /* fields; NULL for a line kept verbatim (comment, +NIS) */
	unsigned nf;
	char *raw;       /* the verbatim line when f is NULL */
};
struct mig_db {
	struct mig_rec *r;
	size_t n;
	unsigned nfields;  /* expected field count */
};
enum mig_db_kind { MIG_PASSWD, MIG_SHADOW, MIG_GROUP, MIG_GSHADOW, MIG_NDB };
extern const char *const mig_db_path[MIG_NDB];   /* "etc/passwd" … */

int mig_db_parse(struct mig_db *db, enum mig_db_kind kind, const char *text, ip_error *e);
void mig_db_clear(struct mig_db *db);
char *mig_db_format(const struct mig_db *db);        /* malloc'd file text */
struct mig_rec *mig_db_find(const struct mig_db *db, const char *name);
struct mig_rec *mig_db_find_id(const struct mig_db *db, unsigned long id);  /* field 2 */
int mig_db_add(struct mig_db *db, const char *const *fields, unsigned nf);
/* Field 2 (uid/gid) as a number; -1 when it is not one. */
long mig_rec_id(const struct mig_rec *r);
/* A free id in [lo, hi] for both databases a and b (b may be NULL); preferred
 * first when free.  -1 when none. */
long mig_db_free_id(const struct mig_db *a, const struct mig_db *b, long preferred, long lo, long hi);
/* Is user a member (4th field) of group record g? */
bool mig_group_has_member(const struct mig_rec *g, const char *user);
int mig_group_add_member(struct mig_rec *g, unsigned field, const char *user);

struct mig_accounts {
	struct mig_db db[MIG_NDB];
};
/* Read the four files under rootfd (missing shadow/gshadow are empty). */
int mig_accounts_load(int rootfd, struct mig_accounts *a, ip_error *e);
void mig_accounts_clear(struct mig_accounts *a);
const char *mig_uid_name(const struct mig_accounts *a, uid_t uid);
const char *mig_gid_name(const struct mig_accounts *a, gid_t gid);

/* ---- safe paths ---- */
/* openat2 with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS (and NO_MAGICLINKS). */
int mig_openat_beneath(int dirfd, const char *rel, int flags, mode_t mode);
/* openat2 with RESOLVE_IN_ROOT: read the old root as its own programs would. */
int mig_openat_inroot(int rootfd, const char *rel, int flags);
/* Read a whole file under rootfd (IN_ROOT); -ENOENT when missing. */
int mig_read_inroot(int rootfd, const char *rel, size_t max, char **data, size_t *len);
/* Refuse absolute paths, "..", ".", empty components. */
bool mig_path_safe(const char *rel);
/* Replace rel under rootfd (parent resolved beneath, no symlinks): temp,
 * fsync, renameat, fsync of the directory.  With durable false the fsyncs
 * are left to one syncfs() by the caller (atomic, durable later). */
int mig_write_beneath(int rootfd, const char *rel, const void *data, size_t len, mode_t mode,
		      uid_t uid, gid_t gid, bool durable, ip_error *e);
/* mkdir -p beneath dirfd; returns an O_DIRECTORY fd of the last one. */
int mig_mkdirs_beneath(int dirfd, const char *rel, mode_t mode, uid_t uid, gid_t gid, bool *created);

/* ---- hashing (hash.c) ---- */
struct mig_hash {
	enum mig_hash_alg alg;
	union {
		XXH3_state_t xxh;
		crypto_generichash_state b2;
	} u;
};
const char *mig_hash_name(enum mig_hash_alg alg);   /* "xxh3-128", "blake2b-512" */
int mig_hash_parse(const char *name, enum mig_hash_alg *alg);
void mig_hash_init(struct mig_hash *h, enum mig_hash_alg alg);
void mig_hash_update(struct mig_hash *h, const void *p, size_t n);
void mig_hash_zeros(struct mig_hash *h, uint64_t n);  /* a hole of n bytes */
void mig_hash_hex(struct mig_hash *h, char hex[MIG_HASH_HEX]);  /* final */
void mig_hash_buf(enum mig_hash_alg alg, const void *p, size_t n, char hex[MIG_HASH_HEX]);
/* The logical content of fd, holes as zeros. */
int mig_hash_fd(int fd, enum mig_hash_alg alg, char hex[MIG_HASH_HEX]);
/* The algorithm of a store document (COMPLETE): format_version 1 is
 * BLAKE2b-512; a newer format or an unknown name is refused. */
int mig_store_hash_alg(json_object *doc, const char *name, enum mig_hash_alg *alg, ip_error *e);
void mig_hex(const uint8_t *h, size_t n, char *out);

/* ---- store files ---- */
int mig_store_open(const char *store, int *fd, ip_error *e);
/* A file of the store, opened without blocking and only if it is a regular
 * file (a FIFO, device or directory is damage); the fd or -errno with e. */
int mig_store_open_file(int storefd, const char *name, ip_error *e);
int mig_store_read_json(int storefd, const char *name, json_object **out, ip_error *e);
/* Its parser, on text read whole (NUL-terminated: the file's bytes up to
 * the first NUL, as the reader parses them); name says which file. */
int mig_store_parse_json(const char *text, const char *name, json_object **out, ip_error *e);
/* Check COMPLETE and the hashes it records; bad input when missing.
 * *alg: the store's hash algorithm. */
int mig_store_check_complete(int storefd, const char *store, enum mig_hash_alg *alg, ip_error *e);
/* mig_store_check_complete, then manifest.json into *manifest. */
int mig_store_load(int storefd, const char *store, enum mig_hash_alg *alg, json_object **manifest, ip_error *e);

/* ---- reading a store archive against its manifest ---- */
struct mig_areader {
	struct archive *a;
	int fd;
	const char *file;          /* "alice.pax.zst" */
	json_object *index;        /* path -> manifest entry */
	json_object *seen_paths;   /* paths met in this reading (the manifest
	                            * itself is never marked: it is read again) */
	size_t nentries, seen;
	char want_hash[MIG_HASH_HEX];
	struct mig_hash st;
	uint8_t buf[1 << 16];
};
/* muser: one element of the manifest's "users". */
int mig_areader_open(struct mig_areader *r, int storefd, json_object *muser, enum mig_hash_alg alg, ip_error *e);
/* Next entry, checked against the manifest (type, size, mode, owners,
 * link); 1 at the end.  *ment is the manifest entry. */
int mig_areader_next(struct mig_areader *r, struct archive_entry **en, json_object **ment, ip_error *e);
/* Compare a content hash with the manifest entry's. */
int mig_areader_check_hash(struct mig_areader *r, json_object *ment, const char *hex, ip_error *e);
/* Every manifest entry seen, and the archive file's own hash. */
int mig_areader_finish(struct mig_areader *r, ip_error *e);
void mig_areader_close(struct mig_areader *r);
/* Read one archive whole: every entry against the manifest, every content
 * hash, and where each entry may go (no path out of the home, no device,
 * nothing below a symlink, hardlinks only to files met before). */
int mig_archive_check(int storefd, json_object *muser, enum mig_hash_alg alg, uint64_t *files, uint64_t *bytes, ip_error *e);

/* ---- what a store may do to the accounts of a new OS (trust.c) ---- */
struct mig_logindefs {
	long uid_min, uid_max, sys_uid_max, gid_min, gid_max, sys_gid_max;
};
/* The new OS's etc/login.defs (shadow-utils' defaults when absent). */
void mig_logindefs_load(int rootfd, struct mig_logindefs *d);
/* A UID/GID: decimal, below 2^32-1, not nobody's 65534/65535. */
bool mig_id_parse(const char *s, long *out);
/* An account or group name useradd would accept. */
bool mig_name_valid(const char *n);
/* /home/NAME or /var/home/NAME, one safe component. */
bool mig_home_plausible(const char *home);
/* A directory a manifest may name as kept (save.c): /home, /var/home or
 * one plausible home. */
bool mig_kept_dir_valid(const char *dir);
/* Re-own the files of the kept directories the manifest names that are
 * mounted in the new root, for the accounts restore renumbered (kept.c). */
int mig_kept_check(json_object *manifest, ip_error *e);
struct mig_idmap {
	long from, to;
};
int mig_kept_reown(int rootfd, const char *root, json_object *manifest, const struct mig_idmap *users, size_t nu,
		   const struct mig_idmap *groups, size_t ng, bool dry_run, json_object *report, ip_error *e);

/* The vetted accounts.json; every string points into it. */
struct mig_vgroup {
	const char *name;
	const char *f[4];        /* group record as saved */
	const char *gsf[4];      /* gshadow record when have_gshadow */
	bool have_gshadow;
	long gid;                /* as saved */
	bool needed;             /* a selected user joins it */
	bool system;             /* privileged: created in the system range */
};
struct mig_vuser {
	const char *name;
	const char *pw[7], *sp[9];
	bool have_shadow;
	long uid;                /* as saved */
	bool selected;
	bool root;               /* include_root and --trusted-store */
	const char *primary;     /* NULL: withheld or none, the new OS's "users" */
	const char **groups;     /* supplementary groups allowed back */
	size_t ngroups;
};
struct mig_trust_plan {
	struct mig_logindefs defs;
	struct mig_vuser *users;
	size_t nusers;
	struct mig_vgroup *groups;
	size_t ngroups;
	json_object *withheld;   /* [{user, group, kind}] memberships not restored */
};
/* Check accounts.json whole against the rules of trust.c (bad or hostile
 * content refuses everything) and build the plan restore follows.
 * musers: the manifest's "users"; sel: the names to restore. */
int mig_trust_check(int rootfd, const struct mig_accounts *now, json_object *accounts, json_object *musers,
		    json_object *sel, bool trusted, struct mig_trust_plan *p, ip_error *e);
void mig_trust_plan_clear(struct mig_trust_plan *p);

/* ---- store size estimate (estimate.c) ---- */
struct stat;
struct mig_sampler {
	void *z;                 /* ZSTD_CCtx */
	uint8_t *in, *out;
	uint64_t budget, sampled, compressed, sampled_files;
	uint64_t data;           /* bytes of every file added */
	uint64_t estimate;       /* compressed, of the sampled files' data */
	uint64_t unsampled;      /* data of the files not sampled */
	double ratio;            /* after finish: of the whole sample */
	bool failed;
};
int mig_sampler_init(struct mig_sampler *s, unsigned level);
void mig_sampler_free(struct mig_sampler *s);
/* Count fd's data and sample its start (bounded per file and in all). */
void mig_sampler_add(struct mig_sampler *s, int fd, const struct stat *st);
/* The estimated compressed size of everything added. */
uint64_t mig_sampler_finish(struct mig_sampler *s);
/* The bytes a file's archive entry holds: its size less its holes. */
uint64_t mig_file_data_bytes(const struct stat *st);
uint64_t mig_estimate_archive(uint64_t compressed, uint64_t files);
uint64_t mig_estimate_store(uint64_t archives, uint64_t manifest, size_t narchives);

/* ---- jobs on threads (pool.c) ---- */
/* job(arg, i) for every i < n on at most nthreads threads (16 at most);
 * a negative return sets *stop and no further job starts (a running job
 * may poll *stop).  Results stay with the jobs. */
void mig_parallel(size_t n, size_t nthreads, atomic_int *stop, int (*job)(void *arg, size_t i), void *arg);
size_t mig_ncpu(void);

/* ---- machine state ---- */
int mig_machine_collect(int rootfd, json_object **out, ip_error *e);
/* Every path and link of machine.json allowed, before anything is written. */
int mig_machine_check(json_object *machine, ip_error *e);
/* skip: kinds left as the new root has them (NULL-terminated, may be NULL) */
int mig_machine_apply(int rootfd, const struct mig_accounts *acc, json_object *machine, bool dry_run,
		      const char *const *skip, json_object *report, ip_error *e);

#endif
