/* slowsync.c - LD_PRELOAD shim for public.sh: fdatasync() as slow as a busy
 * disk, SLOWSYNC_MS milliseconds each, so that a test can show whether a
 * thread that brokers connections waits for the datastore. */
#include <dlfcn.h>
#include <stdlib.h>
#include <unistd.h>

int
fdatasync(int fd)
{
	static int (*real)(int);
	const char *ms = getenv("SLOWSYNC_MS");

	if (real == NULL)
		real = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
	if (ms != NULL)
		usleep((useconds_t)atoi(ms) * 1000);
	return real(fd);
}
