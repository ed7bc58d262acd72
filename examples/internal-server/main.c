/* placeholder */
#include <stdio.h>
int main(void) { fprintf(stderr, "internal-server: not built yet\n"); return 2; }
