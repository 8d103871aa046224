/* workflow: the workflow definition — parsing it into a checked node graph (wf_parse) and
 * validating it against the connector catalog, reporting every problem at once (wf_validate).
 * The format is described in docs/workflows.md and schemas/workflow.schema.json. */
#ifndef WF_WORKFLOW_H
#define WF_WORKFLOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "catalog.h"
#include "expr.h"
#include "json.h"
#include "util.h"

/* Bounds of a definition. */
#define WF_MAX_NODES 256
#define WF_MAX_EDGES 1024
#define WF_MAX_NAME 200
#define WF_MAX_DELAY_MS (31LL * 24 * 3600 * 1000)
/* wf_validate stops collecting after this many problems (the last one says so). */
#define WF_MAX_PROBLEMS 200

typedef enum { WF_ACTION, WF_CONDITION, WF_TRANSFORM, WF_DELAY } wf_node_type;

/* Retry policy: attempt k (k >= 2) waits min(initial_ms * multiplier^(k-2), max_ms). */
typedef struct wf_retry {
    int max_attempts;           /* 1..20, default 3 (1: no retry) */
    int64_t initial_ms, max_ms; /* default 1000, 60000 */
    double multiplier;          /* 1..10, default 2.0 */
} wf_retry;

typedef struct wf_node {
    const char *id;
    wf_node_type type;
    const char *connector, *action; /* action */
    hf_json params;                 /* action params template (object; {} when absent) */
    wf_expr *condition;             /* condition: the parsed "if" */
    hf_json output;                 /* transform template */
    int64_t delay_ms;               /* delay: a fixed wait (0 when until is used) */
    hf_json until;                  /* delay: a template rendering to an RFC 3339 time, or NULL */
    wf_retry retry;
    int64_t timeout_ms; /* 100..300000, default 10000 */
    hf_json metadata;   /* the builder's embedded catalog metadata, or NULL */
    size_t *out_edges;  /* indexes into def->edges, in document order */
    size_t nout;
    size_t nin; /* incoming edge count */
} wf_node;

typedef struct wf_edge {
    size_t from, to;
    int when; /* -1: always, 0: when the condition is false, 1: when true */
} wf_edge;

typedef struct wf_def {
    const char *name;
    const char *trigger_connector, *trigger_event;
    wf_expr *filter; /* may be NULL */
    wf_node *nodes;
    size_t nnodes;
    wf_edge *edges;
    size_t nedges;
    size_t *topo; /* node indexes in a topological order (among ready nodes, document order) */
    hf_json doc;  /* the parsed document, owned */
} wf_def;

/* Parses and checks structure, types, bounds, ids, edges and acyclicity (not the catalog: see
 * wf_validate). Every string above points into doc; expressions are parsed and every template
 * is checked to parse. NULL and err naming the JSON path of the first problem
 * ("nodes[2].retry.max_attempts: must be an integer 1..20", "edges[1]: cycle: a -> b -> a").
 * The caller owns the result (free with wf_free); it is immutable, so threads may share it. */
wf_def *wf_parse(const char *json, size_t len, char *err, size_t errlen);
void wf_free(wf_def *d);
/* The index of the node with this id, -1 if none. */
ssize_t wf_node_index(const wf_def *d, const char *id);

typedef struct wf_problem {
    char *path;       /* JSON path into the definition ("nodes[2].params.to"; "" for the root) */
    const char *code; /* static: schema, cycle, unreachable, unknown_connector, ... */
    char *message;    /* the reason, without the path */
} wf_problem;

typedef struct wf_problems {
    wf_problem *items;
    size_t n, cap;
} wf_problems;

/* Frees every item (out stays usable, empty). */
void wf_problems_free(wf_problems *p);

/* Validates a definition text against the catalog and appends EVERY problem to out (which the
 * caller zero-initialises and frees with wf_problems_free); none means valid. Codes:
 *   schema             structure, type or bound (everything wf_parse rejects but cycles)
 *   cycle              the edges close a cycle (one problem per cycle found)
 *   unreachable        a node that can never run: not reachable from a root through edges that
 *                      can be taken, where an edge leaving a condition whose "if" is constant
 *                      (reads no path) can only be taken on that constant's branch; also a
 *                      trigger filter that is constantly false (path "trigger.filter")
 *   unknown_connector, unknown_action, unknown_event   not in the catalog
 *   missing_param, unknown_param, param_type           action params against the inputs
 *   unknown_field      a template or expression reads a field the run context does not have:
 *                      event.<m> outside the envelope, event.payload.* against the trigger
 *                      event's sample_payload, tenant.<m> outside {id,slug,name,environment},
 *                      nodes.<id>.<m> outside {status,output,branch}, nodes.<id>.output.*
 *                      against the action's output.fields (object fields are open), a
 *                      transform's output template, {result} (condition), {until} (delay)
 *   not_upstream       nodes.<id> names a node that is not upstream (or does not exist)
 *   stale_metadata     an embedded metadata member differs from the catalog's action
 * Connection, scope and Beta-approval checks need the database and are the API's. cat may be
 * NULL (catalog checks are skipped). */
void wf_validate(const char *json, size_t len, const hf_catalog *cat, wf_problems *out);

#endif
