/* mount.c — mount one partition of a disk (block device or image file) at a
 * directory, and unmount it again.  The pipeline mounts the old root
 * read-only to save profiles, the store read-write, and the new root to
 * restore into; on an image file the partition goes through a loop device
 * over its byte range. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "common/common.h"

/* A loop device that detaches itself when its last user (the mount) goes:
 * a crash between mount and unmount leaks no device once the mount is gone. */
static bool loop_autoclear(const char *dev)
{
	_cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
	struct loop_info64 li;

	if (fd < 0 || ioctl(fd, LOOP_GET_STATUS64, &li) < 0)
		return false;
	li.lo_flags |= LO_FLAGS_AUTOCLEAR;
	return ioctl(fd, LOOP_SET_STATUS64, &li) == 0;
}

int ip_mount_part(const char *disk, unsigned n, uint64_t off, uint64_t size, const char *fstype,
		  unsigned flags, const char *dir, struct ip_mount *m, ip_error *e)
{
	bool rdonly = flags & IP_MOUNT_RDONLY;
	struct stat sb;
	int r;

	memset(m, 0, sizeof(*m));
	if (snprintf(m->dir, sizeof(m->dir), "%s", dir) >= (int)sizeof(m->dir))
		return ip_bad(e, -ENAMETOOLONG, "mount point %s is too long", dir);
	r = ip_mkdir_p(dir, 0700, e);
	if (r < 0)
		return r;
	if (stat(disk, &sb) == 0 && S_ISBLK(sb.st_mode) && ip_partition_node(disk, n, m->dev, sizeof(m->dev)) == 0) {
		m->loop = false;
	} else {
		r = ip_loop_attach(disk, off, size, rdonly, m->dev, sizeof(m->dev), e);
		if (r < 0)
			return r;
		m->loop = true;
	}
	if (mount(m->dev, dir, fstype, (rdonly ? MS_RDONLY : 0) | MS_NOSUID | MS_NODEV, NULL) < 0) {
		r = -errno;
		if (m->loop)
			ip_loop_detach(m->dev, NULL);
		return ip_fail(e, r, "cannot mount partition %u of %s (%s) at %s: %s", n, disk,
			       fstype ? fstype : "?", dir, strerror(-r));
	}
	/* with autoclear the device is the kernel's to free: detaching it
	 * ourselves after the unmount could hit another user's device */
	if (m->loop && loop_autoclear(m->dev))
		m->loop = false;
	m->mounted = true;
	m->rdonly = rdonly;
	return 0;
}

int ip_umount(struct ip_mount *m, ip_error *e)
{
	if (!m->mounted)
		return 0;
	/* a read-only mount has nothing to write back: a global sync there
	 * only waits for every other writer of the machine */
	if (!m->rdonly)
		sync();
	if (umount2(m->dir, 0) < 0) {
		int r = -errno;

		return ip_fail(e, r, "cannot unmount %s: %s: close what uses it and run the step again", m->dir,
			       strerror(-r));
	}
	m->mounted = false;
	if (m->loop)
		ip_loop_detach(m->dev, NULL);
	return 0;
}

/* Decode mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *w = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
		    s[3] <= '7') {
			*w++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*w++ = *s;
		}
	}
	*w = '\0';
}

int ip_umount_below(const char *base, unsigned *n, ip_error *e)
{
	size_t bl = strlen(base);
	unsigned count = 0;
	int r = 0;

	if (n)
		*n = 0;
	/* deepest first: mountinfo lists parents before children, so read it
	 * again after each unmount and take the last match */
	for (int guard = 0; guard < 256; guard++) {
		_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
		char line[8192], last[4096] = "";

		if (!f)
			return ip_fail(e, -errno, "cannot read /proc/self/mountinfo: %s", strerror(errno));
		while (fgets(line, sizeof(line), f)) {
			char mp[4096];

			if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
				continue;
			unescape(mp);
			if (!strncmp(mp, base, bl) && mp[bl] == '/')
				snprintf(last, sizeof(last), "%s", mp);
		}
		if (!*last)
			break;
		if (umount2(last, 0) < 0 && umount2(last, MNT_DETACH) < 0) {
			r = ip_fail(e, -errno, "cannot unmount %s, left by an earlier run: %s", last, strerror(errno));
			break;
		}
		count++;
	}
	if (n)
		*n = count;
	return r;
}

/* Is the block device maj:min mounted anywhere? */
static bool dev_mounted(unsigned maj, unsigned min)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192];
	unsigned a, b;

	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %u:%u", &a, &b) == 2 && a == maj && b == min)
			return true;
	return false;
}

int ip_loop_detach_stale(const char *path, unsigned *n)
{
	char real[PATH_MAX];
	DIR *d = opendir("/sys/block");
	struct dirent *de;
	unsigned count = 0;

	if (n)
		*n = 0;
	if (!d || !realpath(path, real)) {
		if (d)
			closedir(d);
		return 0;
	}
	while ((de = readdir(d))) {
		char p[PATH_MAX], back[PATH_MAX], dev[300];
		unsigned maj, min;
		FILE *f;
		bool match = false;
		DIR *h;
		int holders = 0;

		if (strncmp(de->d_name, "loop", 4))
			continue;
		snprintf(p, sizeof(p), "/sys/block/%s/loop/backing_file", de->d_name);
		if (!(f = fopen(p, "re")))
			continue;
		if (fgets(back, sizeof(back), f)) {
			back[strcspn(back, "\n")] = '\0';
			match = !strcmp(back, real);
		}
		fclose(f);
		snprintf(p, sizeof(p), "/sys/block/%s/dev", de->d_name);
		if (!match || !(f = fopen(p, "re")))
			continue;
		match = fscanf(f, "%u:%u", &maj, &min) == 2;
		fclose(f);
		snprintf(p, sizeof(p), "/sys/block/%s/holders", de->d_name);
		if ((h = opendir(p))) {
			struct dirent *x;

			while ((x = readdir(h)))
				holders += x->d_name[0] != '.';
			closedir(h);
		}
		if (!match || holders || dev_mounted(maj, min))
			continue;
		snprintf(dev, sizeof(dev), "/dev/%s", de->d_name);
		if (ip_loop_detach(dev, NULL) == 0)
			count++;
	}
	closedir(d);
	if (n)
		*n = count;
	return 0;
}
