/* progress.c — a progress bar with rate and ETA on stderr, for people only:
 * it is silent when stderr is not a terminal or under --json. */
#include <pthread.h>
#include <string.h>
#include <time.h>

#include "common/common.h"

struct ip_progress {
	pthread_mutex_t lock;
	char label[48];
	uint64_t total, done;
	double start, last_draw;
	bool active;
};

static bool progress_on = true;

void ip_progress_enable(bool on)
{
	progress_on = on;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

ip_progress *ip_progress_new(const char *label, uint64_t total)
{
	ip_progress *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	pthread_mutex_init(&p->lock, NULL);
	snprintf(p->label, sizeof(p->label), "%s", label);
	p->total = total;
	p->start = now_s();
	p->active = progress_on && isatty(STDERR_FILENO);
	return p;
}

static void draw(ip_progress *p, bool final)
{
	double t = now_s(), el = t - p->start, rate = el > 0 ? (double)p->done / el : 0;
	char done[IP_SIZE_BUFSZ], tot[IP_SIZE_BUFSZ], rt[IP_SIZE_BUFSZ], eta[32] = "--:--";
	unsigned pct = p->total ? (unsigned)(p->done * 100 / p->total) : 100, width = 24, fill;
	char bar[32];

	if (!final && t - p->last_draw < 0.2)
		return;
	p->last_draw = t;
	if (pct > 100)
		pct = 100;
	fill = pct * width / 100;
	memset(bar, '#', fill);
	memset(bar + fill, '.', width - fill);
	bar[width] = '\0';
	if (rate > 0 && p->total > p->done) {
		unsigned long s = (unsigned long)((double)(p->total - p->done) / rate);

		snprintf(eta, sizeof(eta), "%lu:%02lu", s / 60, s % 60);
	} else if (final) {
		unsigned long s = (unsigned long)el;

		snprintf(eta, sizeof(eta), "%lu:%02lu", s / 60, s % 60);
	}
	fprintf(stderr, "\r%-16s [%s] %3u%% %s/%s %s/s %s %s\033[K%s", p->label, bar, pct,
		ip_format_size(p->done, done, sizeof(done)), ip_format_size(p->total, tot, sizeof(tot)),
		ip_format_size((uint64_t)rate, rt, sizeof(rt)), final ? "in" : "ETA", eta,
		final ? "\n" : "");
	fflush(stderr);
}

void ip_progress_set(ip_progress *p, uint64_t done)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->done = done;
	if (p->active)
		draw(p, false);
	pthread_mutex_unlock(&p->lock);
}

void ip_progress_add(ip_progress *p, uint64_t delta)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->done += delta;
	if (p->active)
		draw(p, false);
	pthread_mutex_unlock(&p->lock);
}

void ip_progress_free(ip_progress *p)
{
	if (!p)
		return;
	if (p->active)
		draw(p, true);
	pthread_mutex_destroy(&p->lock);
	free(p);
}
