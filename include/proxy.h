/* proxy.h - the two proxy roles, each run until SIGINT/SIGTERM. */
#ifndef HP_PROXY_H
#define HP_PROXY_H

struct proxy_conf;

/* Return the process exit status: 0 on a clean stop, 1 on a runtime failure
 * (a listener that cannot be bound, ...). */
int public_run(struct proxy_conf *pc);
int private_run(struct proxy_conf *pc);

#endif
