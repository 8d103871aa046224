/* catalog_cmd: `hookflow-engine catalog` loads and validates the connector catalog and prints it
 * as JSON, so operators and CI can check the catalog data without a database. */
#include <stdio.h>
#include <string.h>

#include "catalog.h"
#include "engine_cli.h"

static void catalog_usage(FILE *out)
{
    fprintf(out,
            "usage: hookflow-engine catalog [--dir DIR]\n\n"
            "Loads and validates every connector file of the catalog directory and prints the\n"
            "catalog as one line of JSON {\"connectors\":[...]}.\n\n"
            "  --dir DIR  the catalog directory (default: HOOKFLOW_CATALOG_DIR, else %s)\n"
            "  --help     this text\n\n"
            "Exit status: 0 printed, 1 the catalog is invalid (one line on stderr), 2 bad usage.\n",
            HOOKFLOW_SOURCE_DIR "/schemas/catalog");
}

int engine_cmd_catalog(int argc, char **argv)
{
    const char *dir = NULL;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            catalog_usage(stdout);
            return 0;
        }
        if (strcmp(arg, "--dir") == 0) {
            dir = i + 1 < argc ? argv[++i] : "";
        } else if (strncmp(arg, "--dir=", 6) == 0) {
            dir = arg + 6;
        } else {
            fprintf(stderr, "hookflow-engine: catalog: unknown option '%s' (try --help)\n", arg);
            return 2;
        }
    }
    if (dir && !*dir) {
        fprintf(stderr, "hookflow-engine: catalog: --dir needs a directory\n");
        return 2;
    }
    if (!dir)
        dir = hf_catalog_default_dir();

    char err[512];
    hf_catalog *catalog = hf_catalog_load(dir, err, sizeof err);
    if (!catalog) {
        fprintf(stderr, "hookflow-engine: catalog: %s\n", err);
        return 1;
    }
    size_t len = 0;
    const char *json = hf_catalog_json(catalog, &len);
    fwrite(json, 1, len, stdout);
    fputc('\n', stdout);
    int rc = 0;
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "hookflow-engine: catalog: cannot write the catalog to stdout\n");
        rc = 1;
    }
    hf_catalog_free(catalog);
    return rc;
}
