/* catalog: loads and validates the connector catalog (schemas/catalog/<id>.json) and answers
 * lookups: connectors, native event types -> catalog event names, actions and their metadata. */
#ifndef HF_CATALOG_H
#define HF_CATALOG_H

#include <stdbool.h>
#include <stddef.h>

#include "json.h"
#include "util.h"

typedef struct hf_catalog hf_catalog;
typedef struct hf_connector hf_connector;
typedef struct hf_action hf_action;

/* Loads every "*.json" file of dir (one connector each; the id must equal the file name without
 * ".json") and validates it structurally. On any error returns NULL with one line in err naming
 * the file and the field path, e.g.
 *   xero.json: actions[0].inputs[1].type: "strng" is not one of string|number|...
 *   klaviyo.json: availability: missing
 * An unreadable directory or one without connector files is an error too. Ids cannot repeat: each
 * one equals its file's name. The caller owns the result; free it with hf_catalog_free. The
 * catalog is immutable after loading, so threads may share it. */
HF_MUST_CHECK hf_catalog *hf_catalog_load(const char *dir, char *err, size_t errlen);
void hf_catalog_free(hf_catalog *c);

/* The directory: HOOKFLOW_CATALOG_DIR if set (environment or config file), else
 * HOOKFLOW_SOURCE_DIR "/schemas/catalog". The string is static or the environment's. */
const char *hf_catalog_default_dir(void);

/* Connectors in the stable order: xero, quickbooks, hubspot, klaviyo, twilio, meta, then any
 * others by id. Every pointer below is owned by the catalog and lives as long as it does. */
size_t hf_catalog_count(const hf_catalog *c);
const hf_connector *hf_catalog_at(const hf_catalog *c, size_t i);
/* NULL if there is no connector with this id. */
const hf_connector *hf_catalog_find(const hf_catalog *c, const char *id);

const char *hf_connector_id(const hf_connector *k);
const char *hf_connector_name(const hf_connector *k);
const char *hf_connector_category(const hf_connector *k);
bool hf_connector_is_beta(const hf_connector *k);

/* The catalog event name for a platform-native type (e.g. "INVOICE.CREATE" ->
 * "invoices.created"), or NULL if the catalog has none. Case-sensitive. */
const char *hf_connector_event_for_native(const hf_connector *k, const char *native_type);
bool hf_connector_has_event(const hf_connector *k, const char *event);
/* NULL if the connector has no such action. */
const hf_action *hf_connector_action(const hf_connector *k, const char *action_id);

/* Raw JSON subtrees for richer use (validation, simulation), owned by the catalog: the
 * connector's whole document, an action's object, and an event's sample_payload (NULL if the
 * connector has no such event). */
hf_json hf_connector_json(const hf_connector *k);
hf_json hf_action_json(const hf_action *a);
const char *hf_action_id(const hf_action *a);
bool hf_action_simulatable(const hf_action *a);
hf_json hf_connector_sample_payload(const hf_connector *k, const char *event);

/* The whole catalog as compact JSON {"connectors":[...]}, each connector exactly as its file
 * (members in file order), connectors in the stable order above. Built once at load; owned by
 * the catalog. len may be NULL. */
const char *hf_catalog_json(const hf_catalog *c, size_t *len);

#endif
