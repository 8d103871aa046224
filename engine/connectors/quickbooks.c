/* quickbooks: the QuickBooks Online Accounting API actions (sales receipt, invoice) with
 * minorversion 75 and a requestid for safe retries, and the reading of its answers and Faults. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "connector.h"

/* Intuit accepts requestid values of up to 50 characters (batch operations aside). */
#define QBO_REQUESTID_MAX 50
#define QBO_MINOR_VERSION "75"

/* "Name":{"value":"v"} when v is set. */
static void ref(connector_output *o, const char *name, const char *value)
{
    connector_output_opt_nested(o, name, "value", value);
}

/* "Line":[...] from lines[] objects with amount, item_id, description, quantity, unit_price. */
static int lines_member(connector_output *o, hf_json lines, char *err, size_t errlen)
{
    connector_output_key(o, "Line");
    hf_buf_putc(o->buf, '[');
    for (size_t i = 0; i < hf_json_len(lines); i++) {
        hf_json item = hf_json_at(lines, i);
        char where[40];
        snprintf(where, sizeof where, "lines[%zu].", i);
        if (!hf_json_is_object(item))
            return hf_err(err, errlen, "param \"lines[%zu]\" must be an object", i);
        const char *amount, *item_id, *desc, *qty, *price;
        if (connector_param_number(item, where, "amount", true, &amount, err, errlen) ||
            connector_param_string(item, where, "item_id", true, &item_id, err, errlen) ||
            connector_param_string(item, where, "description", false, &desc, err, errlen) ||
            connector_param_number(item, where, "quantity", false, &qty, err, errlen) ||
            connector_param_number(item, where, "unit_price", false, &price, err, errlen))
            return -1;
        if (i)
            hf_buf_putc(o->buf, ',');
        connector_output line, detail;
        connector_output_begin(&line, o->buf);
        connector_output_opt_str(&line, "DetailType", "SalesItemLineDetail");
        connector_output_opt_raw(&line, "Amount", amount);
        connector_output_opt_str(&line, "Description", desc);
        connector_output_key(&line, "SalesItemLineDetail");
        connector_output_begin(&detail, o->buf);
        ref(&detail, "ItemRef", item_id);
        connector_output_opt_raw(&detail, "Qty", qty);
        connector_output_opt_raw(&detail, "UnitPrice", price);
        connector_output_end(&detail);
        connector_output_end(&line);
    }
    hf_buf_putc(o->buf, ']');
    return 0;
}

static int sales_receipt_body(hf_json p, hf_buf *b, char *err, size_t errlen)
{
    const char *customer, *date, *class_id, *deposit, *method, *note;
    hf_json lines;
    if (connector_param_array(p, NULL, "lines", true, &lines, err, errlen) ||
        connector_param_string(p, NULL, "customer_id", false, &customer, err, errlen) ||
        connector_param_string(p, NULL, "txn_date", false, &date, err, errlen) ||
        connector_param_string(p, NULL, "class_id", false, &class_id, err, errlen) ||
        connector_param_string(p, NULL, "deposit_account_id", false, &deposit, err, errlen) ||
        connector_param_string(p, NULL, "payment_method_id", false, &method, err, errlen) ||
        connector_param_string(p, NULL, "private_note", false, &note, err, errlen))
        return -1;
    connector_output o;
    connector_output_begin(&o, b);
    if (lines_member(&o, lines, err, errlen) != 0)
        return -1;
    ref(&o, "CustomerRef", customer);
    connector_output_opt_str(&o, "TxnDate", date);
    ref(&o, "ClassRef", class_id);
    ref(&o, "DepositToAccountRef", deposit);
    ref(&o, "PaymentMethodRef", method);
    connector_output_opt_str(&o, "PrivateNote", note);
    connector_output_end(&o);
    return 0;
}

static int invoice_body(hf_json p, hf_buf *b, char *err, size_t errlen)
{
    const char *customer, *due, *class_id, *email, *note;
    hf_json lines;
    if (connector_param_string(p, NULL, "customer_id", true, &customer, err, errlen) ||
        connector_param_array(p, NULL, "lines", true, &lines, err, errlen) ||
        connector_param_string(p, NULL, "due_date", false, &due, err, errlen) ||
        connector_param_string(p, NULL, "class_id", false, &class_id, err, errlen) ||
        connector_param_string(p, NULL, "bill_email", false, &email, err, errlen) ||
        connector_param_string(p, NULL, "private_note", false, &note, err, errlen))
        return -1;
    connector_output o;
    connector_output_begin(&o, b);
    if (lines_member(&o, lines, err, errlen) != 0)
        return -1;
    ref(&o, "CustomerRef", customer);
    connector_output_opt_str(&o, "DueDate", due);
    ref(&o, "ClassRef", class_id);
    connector_output_opt_nested(&o, "BillEmail", "Address", email);
    connector_output_opt_str(&o, "PrivateNote", note);
    connector_output_end(&o);
    return 0;
}

static int qbo_build(const char *action, hf_json params, const connector_conn *conn,
                     const char *base_url, const char *idempotency_key, connector_request *out,
                     char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (connector_check_call(params, conn, "realmId", err, errlen) != 0)
        return -1;
    hf_buf body = {0};
    const char *entity;
    int rc;
    if (strcmp(action, "create_sales_receipt") == 0)
        entity = "salesreceipt", rc = sales_receipt_body(params, &body, err, errlen);
    else if (strcmp(action, "create_invoice") == 0)
        entity = "invoice", rc = invoice_body(params, &body, err, errlen);
    else
        entity = NULL, rc = hf_err(err, errlen, "quickbooks has no action \"%s\"", action);
    if (rc != 0) {
        hf_buf_free(&body);
        return -1;
    }
    hf_buf url = {0};
    const char *base = base_url ? base_url : engine_connector_base_url("quickbooks");
    connector_url_account(&url, base, "/v3/company/", conn->account);
    hf_buf_printf(&url, "/%s?minorversion=" QBO_MINOR_VERSION, entity);
    char *key = connector_idempotency_key(idempotency_key, QBO_REQUESTID_MAX);
    if (key) {
        hf_buf_puts(&url, "&requestid=");
        connector_url_escape(&url, key);
    }
    free(key);
    connector_request_start(out, "POST", hf_buf_steal(&url));
    connector_request_header(out, "Authorization: Bearer %s", conn->access_token);
    connector_request_header(out, "Accept: application/json");
    connector_request_header(out, "Content-Type: application/json");
    connector_request_body(out, &body);
    return 0;
}

/* A member by either capitalisation: Intuit's gateway answers {"fault":{"error":[...]}} where
 * the API answers {"Fault":{"Error":[...]}}. */
static hf_json get_either(hf_json v, const char *upper, const char *lower)
{
    hf_json m = hf_json_get(v, upper);
    return m ? m : hf_json_get(v, lower);
}

/* Appends "Message: Detail (code N)" of each Fault error to line; false when the answer has no
 * Fault. */
static bool fault_text(hf_json answer, hf_buf *line)
{
    hf_json fault = get_either(answer, "Fault", "fault");
    if (!fault)
        return false;
    hf_json errors = get_either(fault, "Error", "error");
    for (size_t i = 0; i < hf_json_len(errors); i++) {
        hf_json e = hf_json_at(errors, i);
        const char *msg = hf_json_str(get_either(e, "Message", "message"));
        const char *detail = hf_json_str(get_either(e, "Detail", "detail"));
        const char *code = hf_json_scalar_text(get_either(e, "code", "Code"));
        if (line->len)
            hf_buf_puts(line, "; ");
        hf_buf_printf(line, "%s", msg ? msg : "error");
        if (detail && (!msg || strcmp(detail, msg) != 0))
            hf_buf_printf(line, ": %s", detail);
        if (code)
            hf_buf_printf(line, " (code %s)", code);
    }
    if (!line->len) {
        const char *type = hf_json_str(hf_json_get(fault, "type"));
        hf_buf_printf(line, "%s", type ? type : "Fault");
    }
    return true;
}

static connector_outcome qbo_interpret(const char *action, const connector_request *sent,
                                       long status, const char *body, size_t body_len,
                                       hf_buf *output, char *err, size_t errlen)
{
    const char *entity = strcmp(action, "create_sales_receipt") == 0 ? "SalesReceipt"
                         : strcmp(action, "create_invoice") == 0     ? "Invoice"
                                                                     : NULL;
    if (!entity) {
        hf_err(err, errlen, "quickbooks has no action \"%s\"", action);
        return CONNECTOR_FAIL;
    }
    hf_json answer = connector_parse_answer(body, body_len);
    connector_outcome outcome = connector_classify(status);
    hf_buf line = {0};
    bool fault = fault_text(answer, &line);
    if (outcome == CONNECTOR_OK && fault) {
        outcome = CONNECTOR_FAIL; /* a Fault inside a 2xx is still a refusal */
    } else if (outcome == CONNECTOR_OK) {
        hf_json e = hf_json_get(answer, entity);
        connector_output o;
        connector_output_begin(&o, output);
        connector_output_string(&o, "id", hf_json_get(e, "Id"));
        connector_output_string(&o, "doc_number", hf_json_get(e, "DocNumber"));
        connector_output_string(&o, "txn_date", hf_json_get(e, "TxnDate"));
        if (strcmp(entity, "Invoice") == 0)
            connector_output_string(&o, "due_date", hf_json_get(e, "DueDate"));
        connector_output_number(&o, "total_amt", hf_json_get(e, "TotalAmt"));
        if (strcmp(entity, "Invoice") == 0)
            connector_output_number(&o, "balance", hf_json_get(e, "Balance"));
        else
            connector_output_string(&o, "class_id", hf_json_path(e, "ClassRef", "value", NULL));
        connector_output_string(&o, "sync_token", hf_json_get(e, "SyncToken"));
        connector_output_raw(&o, answer, body_len);
        connector_output_end(&o);
    } else if (status == 409) {
        /* The same requestid still in progress: retrying with it cannot duplicate. */
        outcome = CONNECTOR_RETRY;
    }
    if (outcome != CONNECTOR_OK)
        connector_error(err, errlen, status, line.data);
    hf_buf_free(&line);
    hf_json_free(answer);
    return outcome;
}

const engine_connector engine_connector_quickbooks = {
    .id = "quickbooks",
    .idempotency = "query:requestid",
    .build = qbo_build,
    .interpret = qbo_interpret,
};
