/* engine_cli: the subcommands of hookflow-engine; each takes argv from its own name on. */
#ifndef ENGINE_CLI_H
#define ENGINE_CLI_H

typedef struct engine_command {
    const char *name;
    const char *summary;
    int (*run)(int argc, char **argv);
} engine_command;

int engine_cmd_migrate(int argc, char **argv);
int engine_cmd_catalog(int argc, char **argv);
int engine_cmd_apply(int argc, char **argv);
int engine_cmd_work(int argc, char **argv);
int engine_cmd_serve(int argc, char **argv);
int engine_cmd_prune(int argc, char **argv);

#endif
