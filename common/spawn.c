/* spawn.c — the one way inplace runs another program (resize2fs, e2fsck,
 * ntfsresize, mke2fs, mkntfs, useradd …): argv, no shell, fds closed,
 * output captured, exec errors reported through a CLOEXEC pipe. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"

#define OUT_MAX_DEFAULT (16u << 20)
#define ERR_MAX (256u << 10)

extern char **environ;

struct buf {
	char *data;
	size_t len, cap, max;
	bool truncated;
};

static int buf_append(struct buf *b, const char *p, size_t n)
{
	if (b->len + n > b->max) {
		n = b->max - b->len;
		b->truncated = true;
	}
	if (b->len + n + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *d;

		while (cap < b->len + n + 1)
			cap *= 2;
		d = realloc(b->data, cap);
		if (!d)
			return -ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, p, n);
	b->len += n;
	b->data[b->len] = '\0';
	return 0;
}

static void close_fds_from(int lowest)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, (unsigned)lowest, ~0U, 0) == 0)
		return;
#endif
	for (int fd = lowest; fd < 65536; fd++)
		close(fd);
}

/* In the child: only async-signal-safe calls until exec. */
static void child_exec(const ip_proc *p, char *const *envp, int in, int out, int err, int report,
		       pid_t parent)
{
	int r;

	/* A tool must not outlive a killed inplace: a resize2fs still writing
	 * while `inplace part resume` rolls its work back would corrupt the
	 * filesystem.  (The getppid check closes the race with a parent that
	 * died before prctl.) */
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || getppid() != parent)
		_exit(127);

	if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
		goto fail;
	/* keep report (CLOEXEC) open, close everything else above 2 */
	if (report != 3) {
		if (dup3(report, 3, O_CLOEXEC) < 0)
			goto fail;
	} else {
		fcntl(3, F_SETFD, FD_CLOEXEC);
	}
	close_fds_from(4);
	signal(SIGPIPE, SIG_DFL);
	execvpe(p->argv[0], (char *const *)p->argv, envp);
fail:
	r = errno;
	(void)!write(3, &r, sizeof(r));
	_exit(127);
}

static char **build_env(const char *const *extra)
{
	size_t n = 0, m = 0, k = 0;
	char **envp;

	while (environ[n])
		n++;
	while (extra && extra[m])
		m++;
	envp = calloc(n + m + 2, sizeof(*envp));
	if (!envp)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "LC_ALL=", 7) && strncmp(environ[i], "LANG=", 5))
			envp[k++] = environ[i];
	envp[k++] = (char *)"LC_ALL=C";
	for (size_t i = 0; i < m; i++)
		envp[k++] = (char *)extra[i];
	envp[k] = NULL;
	return envp;
}

int ip_proc_run(ip_proc *p, ip_error *e)
{
	int in = -1, outp[2] = { -1, -1 }, errp[2] = { -1, -1 }, rep[2] = { -1, -1 };
	struct buf out = { .max = p->out_max ? p->out_max : OUT_MAX_DEFAULT };
	struct buf err = { .max = ERR_MAX };
	_cleanup_free_ char **envp = NULL;
	int status, exec_errno = 0, r = 0;
	pid_t pid, parent;

	p->out = p->err = NULL;
	p->exit_code = -1;
	p->signal = 0;
	if (!p->argv || !p->argv[0])
		return ip_fail(e, -EINVAL, "internal error: empty argv");
	envp = build_env(p->env);
	if (!envp)
		return ip_fail(e, -ENOMEM, "out of memory");
	in = open(p->stdin_path ? p->stdin_path : "/dev/null", O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return ip_fail(e, -errno, "cannot open %s: %s",
			       p->stdin_path ? p->stdin_path : "/dev/null", strerror(errno));
	if (pipe2(outp, O_CLOEXEC) < 0 || pipe2(errp, O_CLOEXEC) < 0 || pipe2(rep, O_CLOEXEC) < 0) {
		r = ip_fail(e, -errno, "cannot create a pipe: %s", strerror(errno));
		goto out_close;
	}
	parent = getpid();
	pid = fork();
	if (pid < 0) {
		r = ip_fail(e, -errno, "cannot start %s: %s", p->argv[0], strerror(errno));
		goto out_close;
	}
	if (pid == 0)
		child_exec(p, envp, in, outp[1], errp[1], rep[1], parent);

	close(outp[1]);
	close(errp[1]);
	close(rep[1]);
	outp[1] = errp[1] = rep[1] = -1;

	/* Drain both pipes together so a chatty tool cannot block on either. */
	struct pollfd pfd[2] = { { .fd = outp[0], .events = POLLIN }, { .fd = errp[0], .events = POLLIN } };
	while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
		char chunk[65536];

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (int i = 0; i < 2; i++) {
			ssize_t n;

			if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			n = read(pfd[i].fd, chunk, sizeof(chunk));
			if (n < 0 && errno == EINTR)
				continue;
			if (n <= 0) {
				pfd[i].fd = -1;
				continue;
			}
			if (buf_append(i == 0 ? &out : &err, chunk, (size_t)n) < 0)
				r = -ENOMEM;
		}
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			r = ip_fail(e, -errno, "waiting for %s: %s", p->argv[0], strerror(errno));
			goto out_close;
		}
	}
	if (read(rep[0], &exec_errno, sizeof(exec_errno)) == (ssize_t)sizeof(exec_errno)) {
		r = ip_fail(e, -exec_errno, "cannot run %s: %s%s", p->argv[0], strerror(exec_errno),
			    exec_errno == ENOENT ? " (is it installed? try 'make deps')" : "");
		goto out_close;
	}
	if (WIFSIGNALED(status)) {
		p->signal = WTERMSIG(status);
		r = ip_fail(e, -EINTR, "%s was killed by signal %s", p->argv[0], strsignal(p->signal));
	} else {
		p->exit_code = WEXITSTATUS(status);
	}
	if (r == -ENOMEM)
		r = ip_fail(e, -ENOMEM, "out of memory capturing the output of %s", p->argv[0]);
	p->out = out.data ? out.data : strdup("");
	p->err = err.data ? err.data : strdup("");
	out.data = err.data = NULL;
out_close:
	free(out.data);
	free(err.data);
	for (int i = 0; i < 2; i++) {
		if (outp[i] >= 0) close(outp[i]);
		if (errp[i] >= 0) close(errp[i]);
		if (rep[i] >= 0) close(rep[i]);
	}
	close(in);
	return r;
}

void ip_proc_clear(ip_proc *p)
{
	free(p->out);
	free(p->err);
	p->out = p->err = NULL;
}

/* The last non-empty line of a tool's output, trimmed; the most useful
 * single line of most tools' error output. */
static void last_line(const char *s, char *buf, size_t len)
{
	const char *end = s + strlen(s), *start;

	while (end > s && (end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\r' || end[-1] == '\t'))
		end--;
	start = end;
	while (start > s && start[-1] != '\n')
		start--;
	while (start < end && (*start == ' ' || *start == '\t'))
		start++;
	snprintf(buf, len, "%.*s", (int)(end - start), start);
}

const char *ip_proc_describe(const ip_proc *p, char *buf, size_t len)
{
	if (p->signal)
		snprintf(buf, len, "killed by signal %s", strsignal(p->signal));
	else if (p->exit_code == 126)
		snprintf(buf, len, "not executable (exit 126)");
	else if (p->exit_code == 127)
		snprintf(buf, len, "not found (exit 127)");
	else
		snprintf(buf, len, "exited with status %d", p->exit_code);
	return buf;
}

int ip_spawn(const char *const argv[], char **out, ip_error *e)
{
	ip_proc p = { .argv = argv };
	char line[512], how[64];
	int r;

	if (out)
		*out = NULL;
	r = ip_proc_run(&p, e);
	if (r < 0)
		goto out;
	if (p.exit_code != 0) {
		last_line(p.err && *p.err ? p.err : (p.out ? p.out : ""), line, sizeof(line));
		r = ip_fail(e, -EIO, "%s %s%s%s", argv[0], ip_proc_describe(&p, how, sizeof(how)),
			    *line ? ": " : "", line);
		goto out;
	}
	if (out)
		*out = TAKE_PTR(p.out);
out:
	ip_proc_clear(&p);
	return r;
}
