/* hookflow-ingest: the webhook front end (command line and start-up). */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        printf("hookflow-ingest %s\n", HOOKFLOW_VERSION);
        return 0;
    }
    fprintf(stderr, "hookflow-ingest: not built yet\n");
    return 1;
}
