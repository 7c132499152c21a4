/* common.h — the foundation every inplace module stands on: errors, sizes,
 * disks, safe spawning, durable files, JSON output, progress, loop devices.
 *
 * Library code returns 0 or a negative errno and fills an ip_error with one
 * line for the user; it never prints or exits.  Only cli/ speaks.
 */
#ifndef INPLACE_COMMON_H
#define INPLACE_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/types.h>
#include <unistd.h>

#include <json.h>

#define IP_TOOL_VERSION "0.1.0"
/* The "version" of every --json document; bump on incompatible change. */
#define IP_JSON_VERSION 1

/* ---- cleanup helpers (systemd style) ---------------------------------- */

#define _cleanup_(f) __attribute__((cleanup(f)))
static inline void ip_freep(void *p) { free(*(void **)p); }
static inline void ip_closep(int *fd) { if (*fd >= 0) close(*fd); }
static inline void ip_fclosep(FILE **f) { if (*f) fclose(*f); }
static inline void ip_json_putp(json_object **o) { if (*o) json_object_put(*o); }
#define _cleanup_free_   _cleanup_(ip_freep)
#define _cleanup_close_  _cleanup_(ip_closep)
#define _cleanup_fclose_ _cleanup_(ip_fclosep)
#define _cleanup_json_   _cleanup_(ip_json_putp)
#define TAKE_PTR(p) ({ __typeof__(p) _t = (p); (p) = NULL; _t; })
#define TAKE_FD(fd) ({ int _t = (fd); (fd) = -1; _t; })
#define IP_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- errors ------------------------------------------------------------ */

/* Exit statuses of the CLI contract. */
enum ip_status {
	IP_EXIT_OK = 0,
	IP_EXIT_FAILED = 1,   /* the operation failed */
	IP_EXIT_BADINPUT = 2, /* bad usage or bad input: nothing was changed */
};

typedef struct ip_error {
	int code;         /* negative errno, 0 when no error was set */
	int status;       /* IP_EXIT_FAILED or IP_EXIT_BADINPUT */
	char msg[1024];   /* one line: cause first, then the fix */
} ip_error;

/* Set *e (may be NULL) and return code, so that `return ip_fail(...)` works.
 * code must be negative; -EIO is used when 0 is passed. */
int ip_error_set(ip_error *e, int status, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
#define ip_fail(e, code, ...) ip_error_set((e), IP_EXIT_FAILED, (code), __VA_ARGS__)
#define ip_bad(e, code, ...)  ip_error_set((e), IP_EXIT_BADINPUT, (code), __VA_ARGS__)
/* Prepend "context: " to an already set message. */
void ip_error_prefix(ip_error *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void ip_error_clear(ip_error *e);

/* ---- sizes ------------------------------------------------------------- */

/* Parse "512MiB", "8G", "8GB" (powers of 1000 only with a B: 8GB), plain
 * bytes, or sectors with "s" (needs sector_size).  Rejects overflow, empty
 * and negative input. */
int ip_parse_size(const char *s, unsigned sector_size, uint64_t *out, ip_error *e);
/* The booleans of INI files (job files, profile specs): yes/no, true/false,
 * on/off, 1/0, any case.  -EINVAL otherwise (the caller names the line). */
int ip_parse_bool(const char *v, bool *out);
/* "3.1 GiB"; returns buf. */
char *ip_format_size(uint64_t bytes, char *buf, size_t len);
#define IP_SIZE_BUFSZ 32

/* ---- disk handle ------------------------------------------------------- */

typedef struct ip_disk ip_disk;

enum ip_disk_flags {
	IP_DISK_RDONLY = 0,
	IP_DISK_RDWR = 1 << 0,   /* refuses mounted disks; O_EXCL on block devices */
	IP_DISK_DIRECT = 1 << 1, /* O_DIRECT (aligned buffers are the caller's job) */
};

/* Open a block device or a disk-image file.  Anything else is bad input. */
int ip_disk_open(const char *path, unsigned flags, ip_disk **out, ip_error *e);
/* Open for writing only the bytes [off, off+len) of the disk (one
 * partition) while other partitions of it may be mounted: the mount check
 * covers that range only, and a block device is not opened O_EXCL (the
 * kernel refuses that while any partition is mounted).  Writes outside the
 * range fail. */
int ip_disk_open_range(const char *path, unsigned flags, uint64_t off, uint64_t len,
		       ip_disk **out, ip_error *e);
void ip_disk_free(ip_disk *d);
const char *ip_disk_path(const ip_disk *d);
int ip_disk_fd(const ip_disk *d);
uint64_t ip_disk_size(const ip_disk *d);
unsigned ip_disk_sector_size(const ip_disk *d);
/* The logical sector size of a disk-image file, from where its GPT header
 * lies ("EFI PART" at byte 512 or 4096): 512 or 4096, 0 when it has no
 * GPT header at either (no GPT, a damaged one, or another sector size).
 * An image file has no BLKSSZGET to ask. */
unsigned ip_gpt_sector_size(int fd);
bool ip_disk_is_blockdev(const ip_disk *d);
bool ip_disk_writable(const ip_disk *d);
/* Whole-buffer positioned I/O; a short read past the end is an error. */
int ip_disk_read(ip_disk *d, void *buf, size_t len, uint64_t off, ip_error *e);
int ip_disk_write(ip_disk *d, const void *buf, size_t len, uint64_t off, ip_error *e);
/* Make every completed write durable (fdatasync). */
int ip_disk_flush(ip_disk *d, ip_error *e);
/* Ask the kernel to drop this range from the page cache (best effort). */
void ip_disk_drop_cache(ip_disk *d, uint64_t off, uint64_t len);

/* Write recording, the power-cut test mode.  When the environment variable
 * INPLACE_IOLOG names a file, every ip_disk_write() and ip_disk_flush() on a
 * writable handle is appended to it, so a test can replay onto a copy of the
 * disk the writes up to any flush, plus any subset of those after it: what a
 * power cut could have left on the platter.  Format: the 8 magic bytes
 * IP_IOLOG_MAGIC, then records, each a struct ip_iolog_rec (little endian,
 * host order on x86) followed, for IP_IOLOG_WRITE, by len bytes of data.  Writes
 * made by other code (libfdisk, resize2fs) are recorded with
 * ip_disk_log_external() after they are durable: it logs the range's current
 * content as one write followed by a flush. */
int ip_disk_log_external(ip_disk *d, uint64_t off, uint64_t len, ip_error *e);

#define IP_IOLOG_MAGIC "IPIOLOG1"
enum ip_iolog_type { IP_IOLOG_WRITE = 1, IP_IOLOG_FLUSH = 2 };
struct ip_iolog_rec {
	uint32_t type;    /* enum ip_iolog_type */
	uint32_t pid;     /* writer, to tell processes apart */
	uint64_t off;     /* byte offset on the disk (WRITE) */
	uint64_t len;     /* bytes of data following (WRITE), 0 for FLUSH */
};

/* Refuse (-EBUSY, bad input) when the device at path, or any partition of it,
 * or — for an image file — any loop device backed by it, is mounted or is
 * active swap.  The message names the mount point and says to unmount it. */
int ip_check_unmounted(const char *path, ip_error *e);
/* The same, limited to the bytes [off, off+len) of path: a mount of another
 * partition of the same disk (the storage partition while the system
 * partition is rewritten) is no obstacle. */
int ip_check_range_unmounted(const char *path, uint64_t off, uint64_t len, ip_error *e);
/* Where the filesystem in [off, off+len) of path is mounted (its root, as
 * /proc/self/mountinfo says), and whether read-write: 1 when it is, 0 when
 * not, -errno when mountinfo cannot be read. */
int ip_range_mount(const char *path, uint64_t off, uint64_t len, char *mnt, size_t mlen, bool *rw);

/* Device node of partition n of a block device ("/dev/sda2",
 * "/dev/nvme0n1p2", "/dev/loop0p2"); -ENOENT when the kernel has none. */
int ip_partition_node(const char *disk, unsigned n, char *buf, size_t len);
/* Tell the kernel about a partition table change without BLKRRPART (which
 * fails on a disk in use): per-partition BLKPG add/delete/resize, as
 * `partx -u` does.  A no-op for image files. */
int ip_kernel_sync_partitions(const char *disk, ip_error *e);

/* ---- loop devices ------------------------------------------------------ */

/* Attach path[offset, offset+size) to a free loop device (size 0: to the
 * end).  Used to hand one partition of an image file to resize2fs,
 * ntfsresize, e2fsck or mkntfs, which take a device, not an offset. */
int ip_loop_attach(const char *path, uint64_t offset, uint64_t size, bool rdonly,
		   char *dev, size_t devlen, ip_error *e);
int ip_loop_detach(const char *dev, ip_error *e);

/* ---- mounts (common/mount.c) ------------------------------------------ */

/* A partition mounted at dir: through the kernel's partition node on a
 * block device, else a loop device over [off, off+size) of the image file
 * (autocleared: it goes away with the mount). */
struct ip_mount {
	char dir[4096];
	char dev[64];
	bool loop;      /* a loop device we must detach ourselves */
	bool mounted;
	bool rdonly;    /* nothing to sync before the unmount */
};
enum { IP_MOUNT_RDONLY = 1 << 0 };
int ip_mount_part(const char *disk, unsigned n, uint64_t off, uint64_t size, const char *fstype,
		  unsigned flags, const char *dir, struct ip_mount *m, ip_error *e);
/* sync, unmount; a no-op when not mounted. */
int ip_umount(struct ip_mount *m, ip_error *e);
/* Unmount everything mounted below the directory base (what a killed run
 * left), deepest first; *n (may be NULL): how many. */
int ip_umount_below(const char *base, unsigned *n, ip_error *e);
/* Detach the loop devices over the file path that nothing mounts or holds:
 * what a process killed between attach and mount (or while a tool ran on
 * the device) left.  Only for a caller that holds the lock of every user of
 * path's loop devices.  *n (may be NULL): how many. */
int ip_loop_detach_stale(const char *path, unsigned *n);

/* ---- spawning external tools ------------------------------------------- */

/* The one way inplace runs another program: argv vector, no shell, stdin
 * from /dev/null (or stdin_path), every fd above 2 closed, stdout and stderr
 * captured.  exec failures come back through a CLOEXEC pipe.  The child gets
 * LC_ALL=C so that tool output can be parsed. */
typedef struct ip_proc {
	const char *const *argv;  /* argv[0] is looked up in PATH */
	const char *stdin_path;   /* NULL: /dev/null */
	const char *const *env;   /* extra "K=V" entries, NULL-terminated, or NULL */
	size_t out_max;           /* cap on captured stdout (0: 16 MiB) */
	/* results */
	char *out;                /* captured stdout, NUL-terminated (malloc) */
	char *err;                /* captured stderr, NUL-terminated (malloc) */
	int exit_code;            /* valid when !signaled */
	int signal;               /* terminating signal, 0 if none */
} ip_proc;

/* Run to completion.  Returns 0 when the program ran (whatever its exit
 * code); fails when it could not be started or was killed by a signal. */
int ip_proc_run(ip_proc *p, ip_error *e);
void ip_proc_clear(ip_proc *p);
/* Convenience: run and treat any exit code but 0 as failure, with the tool's
 * last stderr line (or its exit code in words) in the message.  *out (may be
 * NULL) receives stdout. */
int ip_spawn(const char *const argv[], char **out, ip_error *e);
/* Describe a finished process ("exited with status 3", "killed by SIGKILL",
 * "not found (exit 127)").  */
const char *ip_proc_describe(const ip_proc *p, char *buf, size_t len);

/* ---- durable files ----------------------------------------------------- */

/* A file that appears whole or not at all: written under a temporary name
 * in the same directory (path.tmp-PID-XXXXXX), then ip_outfile_commit() =
 * fsync, close, rename, fsync of the directory, every error reported.
 * in (may be NULL): the input the output is made from; ip_check_distinct()
 * refuses an output that would destroy it. */
typedef struct ip_outfile {
	int fd;              /* write here; -1 once committed or aborted */
	char path[4096];     /* the final name */
	char tmp[4096 + 32]; /* the temporary one; "" when there is none */
} ip_outfile;
int ip_outfile_open(const char *path, const char *in, mode_t mode, ip_outfile *of, ip_error *e);
/* On failure the temporary file is removed and nothing replaced path. */
int ip_outfile_commit(ip_outfile *of, ip_error *e);
/* Close and unlink the temporary file; a no-op after commit or a second
 * abort.  Async-signal-safe (close and unlink only), for a signal handler
 * or an atexit cleanup. */
void ip_outfile_abort(ip_outfile *of);
/* rename tmp to path, then fsync the directory (errors never dropped):
 * the last step of every durable replacement, also of one whose temporary
 * file is kept across runs (a resumable download). */
int ip_rename_durable(const char *tmp, const char *path, ip_error *e);
/* Bad input when writing out would destroy in: out exists and is not a
 * regular file (a disk, partition or loop device), or is in itself (the
 * same inode: a hardlink, a symlink, the same name), or lies inside the
 * directory in (a tree being read). */
int ip_check_distinct(const char *out, const char *in, ip_error *e);
/* Replace path by temp + fsync + rename + fsync of the directory. */
int ip_write_file_atomic(const char *path, const void *data, size_t len, mode_t mode,
			 ip_error *e);
int ip_fsync_dir(const char *dir, ip_error *e);
/* fsync the directory holding path. */
int ip_fsync_parent(const char *path, ip_error *e);
/* Open an input that must be a regular file (an image, a key, a manifest):
 * O_NONBLOCK so that a FIFO or device node in its place cannot hang open(),
 * then fstat, refusing anything else with one line (bad input), then
 * blocking again.  *fd is O_CLOEXEC. */
int ip_open_input(const char *path, int *fd, ip_error *e);
/* Read a whole regular file (ip_open_input; at most max bytes, else
 * -EFBIG); NUL-terminated. */
int ip_read_file(const char *path, size_t max, char **data, size_t *len, ip_error *e);
/* write(2) all of buf, retrying on EINTR and short writes. */
int ip_write_all(int fd, const void *buf, size_t len);
/* mkdir -p with mode for the created components. */
int ip_mkdir_p(const char *path, mode_t mode, ip_error *e);

/* ---- the state directory (state.c) -------------------------------------- */

/* Where records that must outlive the process live: $INPLACE_STATE_DIR,
 * default /var/lib/inplace. */
const char *ip_state_dir(void);
/* out = DIR/KIND<disk path>-<disk size>.EXT: keyed by path and size, so
 * that another disk that later takes the same name is not mistaken for
 * this one. */
int ip_state_file(const char *disk, const char *kind, const char *ext, char *out, size_t n,
		  ip_error *e);
int ip_state_mkdir(ip_error *e);

/* ---- JSON -------------------------------------------------------------- */

/* A new result document {"version": IP_JSON_VERSION, "command": command}. */
json_object *ip_json_doc(const char *command);
/* Integers that may exceed INT64_MAX do not occur here: sizes fit int64. */
static inline json_object *ip_json_u64(uint64_t v) { return json_object_new_int64((int64_t)v); }
/* Print one document and a newline; returns -errno on a write error. */
int ip_json_print(json_object *doc, FILE *f);

/* ---- checksums ---------------------------------------------------------- */

/* 128-bit BLAKE2b (libsodium) of a small on-disk record, to detect torn
 * writes of journal slots and headers.  Bulk data hashing uses libsodium
 * directly. */
#define IP_CHECKSUM_LEN 16
void ip_checksum(const void *buf, size_t len, uint8_t out[IP_CHECKSUM_LEN]);
bool ip_checksum_ok(const void *buf, size_t len, const uint8_t sum[IP_CHECKSUM_LEN]);

/* ---- crash-safe journal ------------------------------------------------ */

/* Where a long operation stands, kept so that it survives kill -9 and a
 * power cut: two alternating fixed-size slots, each holding magic, version,
 * a sequence number, the payload and a checksum.  A write goes to the older
 * slot and is flushed before returning, so a torn write can only damage the
 * slot being replaced; reading picks the valid slot with the highest
 * sequence.  Backed by a region of a disk (2 * IP_JOURNAL_SLOT bytes) or by
 * a file.  Format and the reason for each field: common/journal.c. */
typedef struct ip_journal ip_journal;
#define IP_JOURNAL_SLOT 4096
#define IP_JOURNAL_PAYLOAD_MAX 3968
int ip_journal_open_disk(ip_disk *d, uint64_t off, ip_journal **out, ip_error *e);
int ip_journal_open_file(const char *path, ip_journal **out, ip_error *e);
/* -ENOENT (no error set) when neither slot holds a valid record. */
int ip_journal_read(ip_journal *j, void *payload, size_t *len, ip_error *e);
/* Durable when it returns 0. */
int ip_journal_write(ip_journal *j, const void *payload, size_t len, ip_error *e);
/* Invalidate both slots, durably. */
int ip_journal_clear(ip_journal *j, ip_error *e);
void ip_journal_free(ip_journal *j);

/* ---- progress ---------------------------------------------------------- */

/* A progress bar with rate and ETA on stderr when it is a terminal and
 * progress is enabled; silent otherwise.  Thread-safe. */
typedef struct ip_progress ip_progress;
/* Global switch, off under --json or --quiet (set by the CLI). */
void ip_progress_enable(bool on);
ip_progress *ip_progress_new(const char *label, uint64_t total);
void ip_progress_set(ip_progress *p, uint64_t done);
void ip_progress_add(ip_progress *p, uint64_t delta);
void ip_progress_free(ip_progress *p); /* ends the line; NULL is fine */

#endif
