/* hookflow-engine: the workflow engine's command line (migrate, catalog, ...). */
#include <stdio.h>
#include <string.h>

#include "engine_cli.h"

static const engine_command commands[] = {
    {"migrate", "apply schemas/migrations to HOOKFLOW_DATABASE_URL", engine_cmd_migrate},
    {"catalog", "print the connector catalog as JSON", engine_cmd_catalog},
    {"work", "run an engine worker (intake + executor)", engine_cmd_work},
    {"apply", "load tenants, connections and workflows from a JSON file", engine_cmd_apply},
    {"serve", "run the admin HTTP API (workflows, catalog, runs, integrations)", engine_cmd_serve},
    {"prune", "delete finished runs and event ids past their retention", engine_cmd_prune},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: hookflow-engine <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out,
            "\n  --help     this text (or '<command> --help')\n  --version  print the version\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
        strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("hookflow-engine %s\n", HOOKFLOW_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "hookflow-engine: unknown command '%s' (try --help)\n", argv[1]);
    return 2;
}
