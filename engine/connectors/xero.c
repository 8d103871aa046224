/* xero: the Xero Accounting API actions (create invoice, contact, payment) with the tenant
 * header and an Idempotency-Key, and the reading of Xero's answers and validation errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "connector.h"

/* Xero accepts Idempotency-Key values of up to 128 characters. */
#define XERO_IDEMPOTENCY_KEY_MAX 128

static const char *const invoice_types[] = {"ACCREC", "ACCPAY", NULL};
static const char *const invoice_statuses[] = {"DRAFT", "SUBMITTED", "AUTHORISED", NULL};

/* {"Invoices":[{...}]} from contact_id, line_items, type, status, date, due_date, reference,
 * currency_code. */
static int invoice_body(hf_json p, hf_buf *b, char *err, size_t errlen)
{
    const char *contact, *type, *status, *date, *due, *reference, *currency;
    hf_json lines;
    if (connector_param_string(p, NULL, "contact_id", true, &contact, err, errlen) ||
        connector_param_array(p, NULL, "line_items", true, &lines, err, errlen) ||
        connector_param_enum(p, NULL, "type", invoice_types, "ACCREC", &type, err, errlen) ||
        connector_param_enum(p, NULL, "status", invoice_statuses, "DRAFT", &status, err, errlen) ||
        connector_param_string(p, NULL, "date", false, &date, err, errlen) ||
        connector_param_string(p, NULL, "due_date", false, &due, err, errlen) ||
        connector_param_string(p, NULL, "reference", false, &reference, err, errlen) ||
        connector_param_string(p, NULL, "currency_code", false, &currency, err, errlen))
        return -1;

    connector_output inv;
    hf_buf_puts(b, "{\"Invoices\":[");
    connector_output_begin(&inv, b);
    connector_output_opt_str(&inv, "Type", type);
    connector_output_opt_nested(&inv, "Contact", "ContactID", contact);
    connector_output_key(&inv, "LineItems");
    hf_buf_putc(b, '[');
    for (size_t i = 0; i < hf_json_len(lines); i++) {
        hf_json item = hf_json_at(lines, i);
        char where[48];
        snprintf(where, sizeof where, "line_items[%zu].", i);
        if (!hf_json_is_object(item))
            return hf_err(err, errlen, "param \"line_items[%zu]\" must be an object", i);
        const char *desc, *qty, *unit, *account, *tax;
        if (connector_param_string(item, where, "description", true, &desc, err, errlen) ||
            connector_param_number(item, where, "quantity", true, &qty, err, errlen) ||
            connector_param_number(item, where, "unit_amount", true, &unit, err, errlen) ||
            connector_param_string(item, where, "account_code", true, &account, err, errlen) ||
            connector_param_string(item, where, "tax_type", false, &tax, err, errlen))
            return -1;
        if (i)
            hf_buf_putc(b, ',');
        connector_output line;
        connector_output_begin(&line, b);
        connector_output_opt_str(&line, "Description", desc);
        connector_output_opt_raw(&line, "Quantity", qty);
        connector_output_opt_raw(&line, "UnitAmount", unit);
        connector_output_opt_str(&line, "AccountCode", account);
        connector_output_opt_str(&line, "TaxType", tax);
        connector_output_end(&line);
    }
    hf_buf_putc(b, ']');
    connector_output_opt_str(&inv, "Status", status);
    connector_output_opt_str(&inv, "Date", date);
    connector_output_opt_str(&inv, "DueDate", due);
    connector_output_opt_str(&inv, "Reference", reference);
    connector_output_opt_str(&inv, "CurrencyCode", currency);
    connector_output_end(&inv);
    hf_buf_puts(b, "]}");
    return 0;
}

/* {"Contacts":[{...}]} from name, email, first_name, last_name, phone, account_number. */
static int contact_body(hf_json p, hf_buf *b, char *err, size_t errlen)
{
    const char *name, *email, *first, *last, *phone, *number;
    if (connector_param_string(p, NULL, "name", true, &name, err, errlen) ||
        connector_param_string(p, NULL, "email", false, &email, err, errlen) ||
        connector_param_string(p, NULL, "first_name", false, &first, err, errlen) ||
        connector_param_string(p, NULL, "last_name", false, &last, err, errlen) ||
        connector_param_string(p, NULL, "phone", false, &phone, err, errlen) ||
        connector_param_string(p, NULL, "account_number", false, &number, err, errlen))
        return -1;
    connector_output c;
    hf_buf_puts(b, "{\"Contacts\":[");
    connector_output_begin(&c, b);
    connector_output_opt_str(&c, "Name", name);
    connector_output_opt_str(&c, "EmailAddress", email);
    connector_output_opt_str(&c, "FirstName", first);
    connector_output_opt_str(&c, "LastName", last);
    connector_output_opt_str(&c, "AccountNumber", number);
    if (phone) {
        connector_output ph;
        connector_output_key(&c, "Phones");
        hf_buf_putc(b, '[');
        connector_output_begin(&ph, b);
        connector_output_opt_str(&ph, "PhoneType", "DEFAULT");
        connector_output_opt_str(&ph, "PhoneNumber", phone);
        connector_output_end(&ph);
        hf_buf_putc(b, ']');
    }
    connector_output_end(&c);
    hf_buf_puts(b, "]}");
    return 0;
}

/* {"Payments":[{...}]} from invoice_id, account_code, amount, date, reference. */
static int payment_body(hf_json p, hf_buf *b, char *err, size_t errlen)
{
    const char *invoice, *account, *amount, *date, *reference;
    if (connector_param_string(p, NULL, "invoice_id", true, &invoice, err, errlen) ||
        connector_param_string(p, NULL, "account_code", true, &account, err, errlen) ||
        connector_param_number(p, NULL, "amount", true, &amount, err, errlen) ||
        connector_param_string(p, NULL, "date", false, &date, err, errlen) ||
        connector_param_string(p, NULL, "reference", false, &reference, err, errlen))
        return -1;
    connector_output pay;
    hf_buf_puts(b, "{\"Payments\":[");
    connector_output_begin(&pay, b);
    connector_output_opt_nested(&pay, "Invoice", "InvoiceID", invoice);
    connector_output_opt_nested(&pay, "Account", "Code", account);
    connector_output_opt_raw(&pay, "Amount", amount);
    connector_output_opt_str(&pay, "Date", date);
    connector_output_opt_str(&pay, "Reference", reference);
    connector_output_end(&pay);
    hf_buf_puts(b, "]}");
    return 0;
}

static int xero_build(const char *action, hf_json params, const connector_conn *conn,
                      const char *base_url, const char *idempotency_key, connector_request *out,
                      char *err, size_t errlen)
{
    memset(out, 0, sizeof *out);
    if (connector_check_call(params, conn, "tenantId", err, errlen) != 0)
        return -1;
    hf_buf body = {0};
    const char *collection;
    int rc;
    if (strcmp(action, "create_invoice") == 0)
        collection = "Invoices", rc = invoice_body(params, &body, err, errlen);
    else if (strcmp(action, "create_contact") == 0)
        collection = "Contacts", rc = contact_body(params, &body, err, errlen);
    else if (strcmp(action, "create_payment") == 0)
        collection = "Payments", rc = payment_body(params, &body, err, errlen);
    else
        collection = NULL, rc = hf_err(err, errlen, "xero has no action \"%s\"", action);
    if (rc != 0) {
        hf_buf_free(&body);
        return -1;
    }
    const char *base = base_url ? base_url : engine_connector_base_url("xero");
    /* PUT creates (POST would create or update). */
    connector_request_start(out, "PUT", connector_url(base, "/api.xro/2.0/%s", collection));
    connector_request_header(out, "Authorization: Bearer %s", conn->access_token);
    connector_request_header(out, "Xero-Tenant-Id: %s", conn->account);
    connector_request_header(out, "Accept: application/json");
    connector_request_header(out, "Content-Type: application/json");
    char *key = connector_idempotency_key(idempotency_key, XERO_IDEMPOTENCY_KEY_MAX);
    if (key)
        connector_request_header(out, "Idempotency-Key: %s", key);
    free(key);
    connector_request_body(out, &body);
    return 0;
}

/* Appends every ValidationErrors[].Message of one element to line, "; " between. */
static void append_validation_errors(hf_json element, hf_buf *line)
{
    hf_json errors = hf_json_get(element, "ValidationErrors");
    for (size_t j = 0; j < hf_json_len(errors); j++) {
        const char *m = hf_json_str(hf_json_get(hf_json_at(errors, j), "Message"));
        if (m)
            hf_buf_printf(line, "%s%s", line->len ? "; " : "", m);
    }
}

/* Xero's error text: the elements' validation messages, else Message, Detail or Title. */
static void xero_error_text(hf_json answer, hf_buf *line)
{
    hf_json elements = hf_json_get(answer, "Elements");
    for (size_t i = 0; i < hf_json_len(elements); i++)
        append_validation_errors(hf_json_at(elements, i), line);
    if (line->len)
        return;
    static const char *const keys[] = {"Message", "Detail", "Title"};
    for (size_t i = 0; i < HF_ARRAY_LEN(keys); i++) {
        const char *m = hf_json_str(hf_json_get(answer, keys[i]));
        if (m && m[0]) {
            hf_buf_puts(line, m);
            return;
        }
    }
}

/* Xero's JSON dates: "/Date(1521331200000+0000)/" (epoch ms) -> "2018-03-18"; anything else
 * as given. */
static void output_xero_date(connector_output *o, const char *key, hf_json v)
{
    const char *s = hf_json_str(v);
    long long ms;
    char day[16];
    if (s && sscanf(s, "/Date(%lld", &ms) == 1) {
        time_t t = (time_t)(ms / 1000);
        struct tm tm;
        if (gmtime_r(&t, &tm) && strftime(day, sizeof day, "%Y-%m-%d", &tm)) {
            connector_output_cstr(o, key, day);
            return;
        }
    }
    connector_output_string(o, key, v);
}

static void output_invoice(connector_output *o, hf_json inv)
{
    connector_output_string(o, "invoice_id", hf_json_get(inv, "InvoiceID"));
    connector_output_string(o, "invoice_number", hf_json_get(inv, "InvoiceNumber"));
    connector_output_string(o, "type", hf_json_get(inv, "Type"));
    connector_output_string(o, "status", hf_json_get(inv, "Status"));
    connector_output_string(o, "contact_id", hf_json_path(inv, "Contact", "ContactID", NULL));
    connector_output_number(o, "sub_total", hf_json_get(inv, "SubTotal"));
    connector_output_number(o, "total_tax", hf_json_get(inv, "TotalTax"));
    connector_output_number(o, "total", hf_json_get(inv, "Total"));
    connector_output_number(o, "amount_due", hf_json_get(inv, "AmountDue"));
    connector_output_string(o, "currency_code", hf_json_get(inv, "CurrencyCode"));
}

static void output_contact(connector_output *o, hf_json c)
{
    connector_output_string(o, "contact_id", hf_json_get(c, "ContactID"));
    connector_output_string(o, "name", hf_json_get(c, "Name"));
    connector_output_string(o, "email", hf_json_get(c, "EmailAddress"));
    connector_output_string(o, "contact_status", hf_json_get(c, "ContactStatus"));
}

static void output_payment(connector_output *o, hf_json p)
{
    connector_output_string(o, "payment_id", hf_json_get(p, "PaymentID"));
    connector_output_string(o, "invoice_id", hf_json_path(p, "Invoice", "InvoiceID", NULL));
    connector_output_number(o, "amount", hf_json_get(p, "Amount"));
    output_xero_date(o, "date", hf_json_get(p, "Date"));
    connector_output_string(o, "status", hf_json_get(p, "Status"));
}

static connector_outcome xero_interpret(const char *action, const connector_request *sent,
                                        long status, const char *body, size_t body_len,
                                        hf_buf *output, char *err, size_t errlen)
{
    const char *collection = strcmp(action, "create_invoice") == 0   ? "Invoices"
                             : strcmp(action, "create_contact") == 0 ? "Contacts"
                             : strcmp(action, "create_payment") == 0 ? "Payments"
                                                                     : NULL;
    if (!collection) {
        hf_err(err, errlen, "xero has no action \"%s\"", action);
        return CONNECTOR_FAIL;
    }
    hf_json answer = connector_parse_answer(body, body_len);
    connector_outcome outcome = connector_classify(status);
    hf_json item = hf_json_at(hf_json_get(answer, collection), 0);
    /* With summarizeErrors=false Xero answers 200 and flags the element instead. */
    if (outcome == CONNECTOR_OK && hf_json_len(hf_json_get(item, "ValidationErrors")) > 0) {
        hf_buf line = {0};
        append_validation_errors(item, &line);
        connector_error(err, errlen, status, line.data);
        hf_buf_free(&line);
        hf_json_free(answer);
        return CONNECTOR_FAIL;
    }
    if (outcome == CONNECTOR_OK) {
        connector_output o;
        connector_output_begin(&o, output);
        if (strcmp(collection, "Invoices") == 0)
            output_invoice(&o, item);
        else if (strcmp(collection, "Contacts") == 0)
            output_contact(&o, item);
        else
            output_payment(&o, item);
        connector_output_raw(&o, answer, body_len);
        connector_output_end(&o);
    } else {
        /* 409: a request with the same Idempotency-Key is still being processed; retrying with
         * that key cannot duplicate anything. */
        if (status == 409)
            outcome = CONNECTOR_RETRY;
        hf_buf line = {0};
        xero_error_text(answer, &line);
        connector_error(err, errlen, status, line.data);
        hf_buf_free(&line);
    }
    hf_json_free(answer);
    return outcome;
}

const engine_connector engine_connector_xero = {
    .id = "xero",
    .idempotency = "header:Idempotency-Key",
    .build = xero_build,
    .interpret = xero_interpret,
};
