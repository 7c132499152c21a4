/* imager.h — OS images: a zstd seekable stream of one partition in which
 * the blocks its filesystem does not use are zeros, with JSON metadata, a
 * hash per frame and an optional minisign signature.  Capture, verify and
 * deploy (used ranges only, in parallel, resumable). */
#ifndef INPLACE_IMAGER_H
#define INPLACE_IMAGER_H

#include <signal.h>

#include "common/common.h"
#include "partctl/partctl.h"

/* Version of the image format this code writes and the newest it reads. */
#define IMAGER_FORMAT_VERSION 1

/* An opened image: its layout (seek table) and metadata, checked. */
typedef struct imager_image imager_image;

/* Open and check an image: footer magic, seek-table sizes, metadata frame,
 * format version.  Bad input (exit 2) when it is not a valid image. */
int imager_open(const char *path, imager_image **out, ip_error *e);
void imager_free(imager_image *img);
const char *imager_fs_type(const imager_image *img);
const char *imager_name(const imager_image *img);
uint64_t imager_part_size(const imager_image *img);   /* bytes of the captured partition */
uint64_t imager_used_bytes(const imager_image *img);
uint64_t imager_file_size(const imager_image *img);
unsigned imager_frames(const imager_image *img);
/* {"name", "fs_type", "partition_size", …}: the metadata for `image info`. */
json_object *imager_info_json(const imager_image *img);

/* Cancellation: a flag set from a signal handler (SIGINT, SIGTERM). */
typedef volatile sig_atomic_t imager_cancel_flag;

struct imager_capture_opts {
	int level;                  /* zstd level; 0: 3 */
	unsigned threads;           /* 0: every online CPU */
	const char *name;           /* image name; NULL: "" */
	const char *fs_type;        /* for the metadata; NULL: "" */
	const char *sign_key;       /* minisign secret key file (unencrypted) or NULL */
	imager_cancel_flag *cancel; /* may be NULL */
	bool raw;                   /* capture_part: every block, trusting no bitmap
				     * (a damaged filesystem, captured whole) */
};

struct imager_capture_result {
	uint64_t part_size;   /* bytes of the partition */
	uint64_t used;        /* bytes read (the used map) */
	uint64_t out_size;    /* bytes of the image file */
	unsigned frames;
	bool signed_;         /* IMAGE.minisig written */
};

/* Capture [off, off+size) of src into the image file out, reading only the
 * ranges of map (relative to off; NULL: everything).  out is written under a
 * temporary name, fsynced and renamed; on failure or cancel it is removed. */
int imager_capture(ip_disk *src, uint64_t off, uint64_t size, const partctl_usedmap *map,
		   const char *out, const struct imager_capture_opts *o,
		   struct imager_capture_result *res, ip_error *e);

/* Capture partition n of disk: refuses a read-write mount, asks partctl for
 * the filesystem and its used blocks (unknown fs: every block, and
 * *warn_all set). */
int imager_capture_part(const char *disk, unsigned n, const char *out,
			const struct imager_capture_opts *o, struct imager_capture_result *res,
			bool *warn_all, ip_error *e);

struct imager_verify_opts {
	unsigned threads;           /* 0: every online CPU */
	const char *pubkey;         /* minisign public key file: the signature must verify */
};

/* Check the signature (with a key), every frame's hash and the content
 * hash.  A damaged image: bad input naming the frame and its byte offset. */
int imager_verify(const char *path, const struct imager_verify_opts *o, ip_error *e);

struct imager_deploy_opts {
	const char *pubkey;         /* required signature, or NULL */
	const char *const *mirrors; /* NULL-terminated: more URLs of the same image, tried in order */
	uint64_t max_rate;          /* download bytes per second, 0: unlimited */
	const char *ca_file;        /* https: trust only the CAs in this PEM file (NULL: the system's) */
	unsigned threads;           /* 0: every online CPU */
	bool grow;                  /* grow the filesystem to the partition */
	bool discard;               /* discard (or zero, on files) the unused ranges */
	bool dry_run;               /* check everything, write nothing */
	const char *state_dir;      /* NULL: $INPLACE_STATE_DIR or /var/lib/inplace */
	imager_cancel_flag *cancel;
};

struct imager_deploy_result {
	uint64_t part_off, part_size; /* the target partition */
	uint64_t written;             /* bytes written in this run */
	unsigned frames, resumed_at;  /* resumed_at: first frame of this run */
	bool grown;
};

/* Write an image (a path or an http(s):// URL) onto partition n of disk.  Before writing anything:
 * signature, metadata, size, target unmounted.  Resumable after kill -9. */
int imager_deploy(const char *image, const char *disk, unsigned n,
		  const struct imager_deploy_opts *o, struct imager_deploy_result *res,
		  ip_error *e);

/* ---- third-party images (imager/import.c) ----------------------------- */

/* A raw image of one filesystem, plain or .gz/.xz/.zst/.bz2, into an image. */
int imager_import(const char *raw, const char *out, const struct imager_capture_opts *o,
		  struct imager_capture_result *res, bool *warn_all, ip_error *e);
/* A directory tree → an fs (mke2fs -d, fs ext2/3/4) of size bytes → an image. */
int imager_build(const char *rootfs, const char *fs, uint64_t size, const char *out,
		 const struct imager_capture_opts *o, struct imager_capture_result *res, ip_error *e);

/* ---- file-level in-place deploy (imager/files.c) ----------------------- */

struct imager_files_result {
	uint64_t extracted;   /* archive entries written */
	uint64_t skipped;     /* archive entries under a kept path, not written */
	uint64_t removed;     /* files and directories the archive does not have */
	/* the new tree's fstab and grub.cfg named its root by image_uuid (the
	 * filesystem it was made from); rewritten to root_uuid, the kept one's,
	 * in uuid_fixed files */
	char root_uuid[64], image_uuid[64];
	unsigned uuid_fixed;
};

/* Make root's tree the archive's, leaving the kept paths (NULL-terminated,
 * "/home" style; NULL: /home, /root, /srv) untouched.  Refuses "/" and any
 * archive entry that would land outside root. */
int imager_apply_files(const char *archive, const char *root, const char *const *keep,
		       struct imager_files_result *res, ip_error *e);

/* ---- looking inside an image (imager/peek.c) ------------------------- */

/* Whether each path (absolute, in the image's ext2/3/4 filesystem,
 * symlinks followed; a last component ending in '*' matches any name with
 * that prefix) exists: found[i], for the NULL-terminated paths.  Reads only
 * the frames it needs.  Bad input for another filesystem or a damaged image. */
int imager_paths_exist(const char *image, const char *const *paths, bool *found, ip_error *e);

/* ---- HTTP sources (imager/source.c) ----------------------------------- */

struct imager_fetch_opts {
	const char *const *mirrors; /* NULL-terminated, tried after url, in order */
	uint64_t max_rate;          /* bytes per second, 0: unlimited */
	const char *ca_file;        /* PEM CAs for https, NULL: the system's */
	unsigned threads;
	bool want_sig;              /* also fetch URL.minisig next to dest */
	uint64_t max_bytes;         /* required: a source announcing a larger file
				     * is refused before any GET, and no download
				     * grows past what its source announced
				     * (imager_max_file_size of the target) */
	imager_cancel_flag *cancel;
};

/* The largest file an image of a partition of part_size bytes can be: every
 * frame at its bound, the largest metadata, the seek table.  What every
 * download of an image for that partition caps max_bytes at. */
uint64_t imager_max_file_size(uint64_t part_size);
bool imager_is_url(const char *s);
/* Whether url (or, failing it, one of o->mirrors) answers a HEAD request,
 * and the image's size: the preflight's "image reachable", downloading
 * nothing. */
int imager_probe_url(const char *url, const struct imager_fetch_opts *o, uint64_t *size, ip_error *e);
/* Download url into dest (through dest.part, resumed with Range requests
 * after a cut or a kill), trying the mirrors in order; only bytes that match
 * the image's frame hashes are kept. */
int imager_fetch(const char *url, const struct imager_fetch_opts *o, const char *dest, ip_error *e);

/* ---- minisign signatures (imager/sign.c) ------------------------------ */

/* Sign file into sig_path (minisign's prehashed "ED" format) with an
 * unencrypted minisign secret key. */
int imager_sign_file(const char *file, const char *seckey, const char *sig_path, ip_error *e);
/* Verify sig_path for file with a minisign public key file.  Both "ED"
 * (prehashed) and legacy "Ed" signatures are accepted. */
int imager_verify_sig(const char *file, const char *sig_path, const char *pubkey, ip_error *e);

#endif
