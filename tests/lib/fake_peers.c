#include "fake_peers.h"

#include <stdlib.h>

#include "svch.h"

#define MAX_SERVICES 8

struct fake_peers {
	pl_rpc_server *server;
	pl_rpc_service svc[MAX_SERVICES];
	const pl_rpc_service *svcs[MAX_SERVICES + 1];
	size_t n;
};

int
fake_peers_start(fake_peers **out, const char *listen, int workers,
                 pl_rpc_handler handler,
                 const ProtobufCServiceDescriptor *const *descs, size_t n)
{
	pl_rpc_server_config c = { 0 };
	fake_peers *p;

	*out = NULL;
	if (n > MAX_SERVICES || (p = calloc(1, sizeof(*p))) == NULL)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const ProtobufCServiceDescriptor *d = descs[i];
		pl_rpc_method *t = calloc(d->n_methods + 1, sizeof(*t));
		if (t == NULL) {
			fake_peers_stop(p);
			return -1;
		}
		for (unsigned k = 0; k < d->n_methods; k++) {
			t[k].name = d->methods[k].name;
			t[k].handler = handler;
			t[k].access = PL_CALLER_PUBLIC;
		}
		p->svc[i].desc = d;
		p->svc[i].methods = t;
		p->svcs[i] = &p->svc[i];
		p->n = i + 1;
	}
	c.name = "fake-peers";
	c.listen = listen;
	c.workers = workers;
	c.secret = SVCH_SECRET;
	if (pl_rpc_server_open(&p->server, &c, p->svcs) != PL_OK ||
	    pl_rpc_server_start(p->server) != PL_OK) {
		fake_peers_stop(p);
		return -1;
	}
	*out = p;
	return 0;
}

void
fake_peers_stop(fake_peers *p)
{
	if (p == NULL)
		return;
	if (p->server != NULL)
		pl_rpc_server_close(p->server);
	for (size_t i = 0; i < p->n; i++)
		free((void *)p->svc[i].methods);
	free(p);
}
