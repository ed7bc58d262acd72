/* main.c - placeholder until the proxy command lands. */
#include <stdio.h>
#include "log.h"
int main(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "proxy: not built yet\n");
	return 2;
}
