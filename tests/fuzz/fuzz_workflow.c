/* fuzz_workflow: drives wf_parse and wf_validate (against the real catalog) with arbitrary
 * definitions. A parsed definition must be a consistent graph (a topological order that is a
 * permutation, edge counts that add up, every id found again); wf_validate must report a schema
 * or cycle problem exactly when wf_parse fails, and every problem must be well-formed. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "catalog.h"
#include "json.h"
#include "util.h"
#include "workflow.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static hf_catalog *cat;

static void check_def(const wf_def *d)
{
    check(d->name && d->trigger_connector && d->trigger_event && d->doc);
    check(d->nnodes >= 1 && d->nnodes <= WF_MAX_NODES && d->nedges <= WF_MAX_EDGES);
    size_t *pos = xcalloc(d->nnodes, sizeof *pos);
    bool *seen = xcalloc(d->nnodes, sizeof *seen);
    for (size_t i = 0; i < d->nnodes; i++) {
        check(d->topo[i] < d->nnodes && !seen[d->topo[i]]);
        seen[d->topo[i]] = true;
        pos[d->topo[i]] = i;
    }
    size_t nin = 0, nout = 0;
    for (size_t i = 0; i < d->nnodes; i++) {
        const wf_node *n = &d->nodes[i];
        check(n->id && wf_node_index(d, n->id) == (ssize_t)i);
        check(n->retry.max_attempts >= 1 && n->retry.max_attempts <= 20);
        check(n->retry.max_ms >= n->retry.initial_ms);
        check(n->timeout_ms >= 100 && n->timeout_ms <= 300000);
        switch (n->type) {
        case WF_ACTION:
            check(n->connector && n->action && hf_json_is_object(n->params));
            break;
        case WF_CONDITION:
            check(n->condition != NULL);
            break;
        case WF_TRANSFORM:
            check(n->output != NULL);
            break;
        case WF_DELAY:
            check(n->until ? n->delay_ms == 0 : n->delay_ms >= 0 && n->delay_ms <= WF_MAX_DELAY_MS);
            break;
        }
        nin += n->nin;
        nout += n->nout;
        for (size_t k = 0; k < n->nout; k++)
            check(d->edges[n->out_edges[k]].from == i);
    }
    check(nin == d->nedges && nout == d->nedges);
    for (size_t j = 0; j < d->nedges; j++) {
        const wf_edge *e = &d->edges[j];
        check(pos[e->from] < pos[e->to]);
        check(e->when == -1 ||
              (e->when >= 0 && e->when <= 1 && d->nodes[e->from].type == WF_CONDITION));
    }
    free(pos);
    free(seen);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!cat) {
        const char *src = getenv("HOOKFLOW_SOURCE_DIR");
        char *dir = xasprintf("%s/schemas/catalog", src ? src : HOOKFLOW_SOURCE_DIR);
        cat = hf_catalog_load(dir, NULL, 0);
        free(dir);
        check(cat != NULL);
    }
    if (size > 256 * 1024)
        return 0;
    char err[512] = "";
    wf_def *d = wf_parse((const char *)data, size, err, sizeof err);
    if (d)
        check_def(d);
    else
        check(err[0] != '\0');

    wf_problems p = {0};
    wf_validate((const char *)data, size, cat, &p);
    check(p.n <= WF_MAX_PROBLEMS);
    bool structural = false;
    for (size_t i = 0; i < p.n; i++) {
        const wf_problem *pr = &p.items[i];
        check(pr->path && pr->code && pr->message && pr->message[0]);
        structural |= strcmp(pr->code, "schema") == 0 || strcmp(pr->code, "cycle") == 0;
    }
    check(structural == (d == NULL));
    /* wf_parse reports the first structural problem wf_validate lists. */
    if (!d && p.n && strcmp(p.items[0].code, "schema") == 0 && p.items[0].path[0])
        check(strncmp(err, p.items[0].path, strlen(p.items[0].path)) == 0);
    wf_problems_free(&p);
    wf_free(d);
    return 0;
}
