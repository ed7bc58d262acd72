/* route.h - the Hyper server's routing (route.c, SPEC section 3): the
 * request handlers of the two ingress channels, which deliver a call to the
 * local operator or forward it to a peer's Hyper server over mutual TLS. */
#ifndef HP_ROUTE_H
#define HP_ROUTE_H

#include <stddef.h>

struct hyper;
struct jsonrpc_call;

/* The jsonrpc_server channel (local applications) and the peer_server
 * channel (other Hyper servers).  arg: the hyper. */
void route_local(void *arg, struct jsonrpc_call *call);
void route_peer(void *arg, struct jsonrpc_call *call);
/* Split "<operator>.<method>" at the last dot; 0 or -1 when malformed. */
int  route_split(const char *full, char *op, size_t oplen, const char **method);
/* Free the peer_client pools (h_peers). */
void route_peers_free(struct hyper *h);

#endif
