/* main.c - placeholder until the hyper command lands. */
#include <stdio.h>
#include "log.h"
int main(int argc, char **argv)
{
	(void)argc; (void)argv;
	fprintf(stderr, "hyper: not built yet\n");
	return 2;
}
