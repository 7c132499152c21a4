/* pool.c — run independent jobs (one per user) on a few threads: save's
 * walkers, restore's checks and homes.  The first failure stops new jobs
 * from starting; each job keeps its own result. */
#include <pthread.h>

#include "migrate/internal.h"

struct pool {
	size_t n;
	atomic_size_t next;
	atomic_int *stop;
	int (*job)(void *arg, size_t i);
	void *arg;
};

static void *pool_worker(void *data)
{
	struct pool *p = data;

	for (;;) {
		size_t i = atomic_fetch_add(&p->next, 1);
		if (i >= p->n || atomic_load(p->stop))
			break;
		if (p->job(p->arg, i) < 0)
			atomic_store(p->stop, 1);
	}
	return NULL;
}

void mig_parallel(size_t n, size_t nthreads, atomic_int *stop, int (*job)(void *arg, size_t i), void *arg)
{
	struct pool p = { .n = n, .stop = stop, .job = job, .arg = arg };
	pthread_t th[16];
	size_t nt = 0;

	atomic_init(&p.next, 0);
	while (nt < n && nt < nthreads && nt < IP_ARRAY_SIZE(th) && pthread_create(&th[nt], NULL, pool_worker, &p) == 0)
		nt++;
	if (!nt)
		pool_worker(&p);   /* no thread could start: run them here */
	for (size_t i = 0; i < nt; i++)
		pthread_join(th[i], NULL);
}

size_t mig_ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : (size_t)n;
}
