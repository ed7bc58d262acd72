/* main.c - `proxy run public|private`.
 *
 * Exit codes (the same for hyper and internal-server): 0 clean stop, 1 runtime
 * failure (a port in use, io_uring unavailable, the datastore), 2 usage or
 * settings error (including a certificate or key that cannot be loaded).  A
 * fatal error is one `error` line on stderr; nothing is bound and no file is
 * written before the settings, certificates and keys have been checked. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "proxy.h"
#include "proxy_conf.h"

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: proxy run public|private [--log-level LEVEL]\n"
	    "       proxy --help | --version\n"
	    "\n"
	    "  run public   accept TLS clients, read their SNI without terminating TLS and\n"
	    "               hand each connection to the private proxy that announced it\n"
	    "  run private  announce domains to public proxies and relay the connections\n"
	    "               they hand over to the internal server\n"
	    "\n"
	    "Settings come from PROXY_SETTINGS: a colon-separated list of YAML/JSON files\n"
	    "or folders (sections `public:` and `private:`).\n"
	    "  --log-level  error, warn, info (default) or debug; overrides `log_level`\n"
	    "\n"
	    "Exit status: 0 clean stop, 1 runtime failure (port in use, io_uring),\n"
	    "2 usage or settings error (incl. certificates and keys).\n");
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ "log-level", required_argument, NULL, 'l' },
		{ NULL, 0, NULL, 0 },
	};
	const char *level = NULL;
	struct proxy_conf pc;
	enum proxy_role role;
	char err[1024];
	int c, lvl, rc;

	log_init("proxy", LOG_LVL_INFO);
	while ((c = getopt_long(argc, argv, "hVl:", opts, NULL)) != -1) {
		switch (c) {
		case 'h':
			usage(stdout);
			return 0;
		case 'V':
			printf("proxy %s\n", HP_VERSION);
			return 0;
		case 'l':
			level = optarg;
			break;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (argc - optind != 2 || strcmp(argv[optind], "run") != 0) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[optind + 1], "public") == 0)
		role = PROXY_PUBLIC;
	else if (strcmp(argv[optind + 1], "private") == 0)
		role = PROXY_PRIVATE;
	else {
		log_errorx("unknown role '%s' (public or private)", argv[optind + 1]);
		return 2;
	}
	if (level && log_level_parse(level) < 0) {
		log_errorx("--log-level: unknown level '%s'", level);
		return 2;
	}
	if (proxy_conf_load(getenv("PROXY_SETTINGS"), role, &pc, err, sizeof(err)) < 0) {
		log_errorx("settings: %s", err);
		return 2;
	}
	if (level == NULL)
		level = pc.pc_log_level;
	if ((lvl = log_level_parse(level)) < 0) {
		log_errorx("settings: log_level: unknown level '%s'", level);
		proxy_conf_free(&pc);
		return 2;
	}
	log_init(role == PROXY_PUBLIC ? "proxy-public" : "proxy-private", (enum log_level)lvl);
	rc = role == PROXY_PUBLIC ? public_run(&pc) : private_run(&pc);
	proxy_conf_free(&pc);
	return rc;
}
