/* test_db_api: the engine API (engine/api: server, workflows, runs, connections, catalog) in
 * process against real PostgreSQL (fixture unit_pg). engine_cmd_serve runs on a thread of this
 * test, configured through the environment; each test makes its own tenant with SQL, talks HTTP
 * to the server with bearer tokens signed here, and checks statuses, JSON members and the rows
 * the API wrote (or did not write). HubSpot's OAuth token endpoint is a fake in this process
 * (HOOKFLOW_CONNECTOR_HUBSPOT_TOKEN_URL) that records each exchange and answers as scripted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <curl/curl.h>
#include <event2/buffer.h>
#include <event2/http.h>

#include "api/auth.h"
#include "catalog.h"
#include "connectors/connector.h"
#include "crypto.h"
#include "engine_cli.h"
#include "http_server.h"
#include "json.h"
#include "pg_fixture.h"
#include "tokens.h"
#include "util.h"

#define JWT_KEY "unit-api-jwt-key-0123456789abcdef-0123456789"
#define OTHER_KEY "not-the-api-jwt-key-0123456789abcdef-01234"
#define TOKEN_KEY_HEX "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define MAX_BODY 8192
#define PUBLIC_URL "https://admin.example.test/"
#define HUBSPOT_CLIENT_ID "hubspot-client-id-123"
#define HUBSPOT_CLIENT_SECRET "hubspot-client-secret-456"
/* Where the fake token endpoint listens (HOOKFLOW_CONNECTOR_HUBSPOT_TOKEN_URL). */
#define FAKE_TOKEN_PATH "/hubspot/oauth/2026-03/token"
#define QUICKBOOKS_CLIENT_ID "qb-client-id"
#define QUICKBOOKS_AUTHORIZE "http://127.0.0.1:9/qb/authorize?prompt=consent"
#define MISSING_UUID "00000000-0000-4000-8000-000000000000"

/* A definition that validates once the tenant has a hubspot connection: a trigger and a delay. */
#define DEF_DELAY(name, ms)                                                                        \
    "{\"name\":\"" name                                                                            \
    "\",\"trigger\":{\"connector\":\"hubspot\",\"event\":\"contact.created\"},"                    \
    "\"nodes\":[{\"id\":\"wait\",\"type\":\"delay\",\"delay_ms\":" #ms "}],\"edges\":[]}"
/* One hubspot action (needs the crm.objects.contacts.write scope). */
#define DEF_UPSERT(name)                                                                           \
    "{\"name\":\"" name                                                                            \
    "\",\"trigger\":{\"connector\":\"hubspot\",\"event\":\"contact.created\"},"                    \
    "\"nodes\":[{\"id\":\"crm\",\"type\":\"action\",\"connector\":\"hubspot\","                    \
    "\"action\":\"upsert_contact\",\"params\":{\"email\":\"a@example.com\"}}],\"edges\":[]}"

static PGconn *db;
static char secrets_dir[64];
static char base_url[64];
static pthread_t server_thread;
static atomic_int server_exited;
static int server_rc;

/* ---- SQL ------------------------------------------------------------------------------------ */

/* Runs sql on the test's database with n text parameters given inline (NULL: SQL NULL); the
 * first column of the first row as a new string (NULL for none or SQL NULL). */
static char *sql_value(const char *sql, int n, ...)
{
    const char *params[16];
    assert_true(n <= 16);
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        params[i] = va_arg(ap, const char *);
    va_end(ap);
    return pgf_value_params(db, sql, n, params);
}

/* sql_value of a count(*) (or any integer) query. */
static long sql_long(const char *sql, const char *p1, const char *p2)
{
    char *v = sql_value(sql, p2 ? 2 : p1 ? 1 : 0, p1, p2);
    long n = v ? atol(v) : -1;
    free(v);
    return n;
}

/* Fails unless sql (one or two parameters) yields exactly want. */
static void assert_sql(const char *want, const char *sql, const char *p1, const char *p2)
{
    char *v = sql_value(sql, p2 ? 2 : 1, p1, p2);
    if (!v || strcmp(v, want) != 0) {
        char got[512];
        snprintf(got, sizeof got, "%s", v ? v : "(null)");
        free(v);
        fail_msg("%s: want \"%s\", got \"%s\"", sql, want, got);
    }
    free(v);
}

/* ---- tokens and tenants --------------------------------------------------------------------- */

static void b64url(const void *data, size_t n, hf_buf *out)
{
    char *text = xmalloc(4 * (n / 3 + 1) + 1);
    api_base64url_encode(data, n, text);
    hf_buf_puts(out, text);
    free(text);
}

/* An HS256 JWT for sub in tenant/branch, expiring at exp, signed with key, into out. */
static void mint(char *out, size_t cap, const char *key, const char *sub, const char *tenant,
                 const char *branch, long long exp)
{
    static const char header[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
    char payload[512];
    snprintf(payload, sizeof payload,
             "{\"sub\":\"%s\",\"tenant\":\"%s\",\"branch\":\"%s\",\"exp\":%lld}", sub, tenant,
             branch, exp);
    hf_buf t = {0};
    b64url(header, strlen(header), &t);
    hf_buf_putc(&t, '.');
    b64url(payload, strlen(payload), &t);
    unsigned char mac[HF_SHA256_LEN];
    hf_hmac_sha256(key, strlen(key), t.data, t.len, mac);
    hf_buf_putc(&t, '.');
    b64url(mac, sizeof mac, &t);
    assert_true(t.len < cap);
    memcpy(out, t.data, t.len + 1);
    hf_buf_free(&t);
}

typedef struct tenant {
    char id[40];
    char slug[32];
    char admin[1024];  /* admin@<slug>, role admin in branch main */
    char viewer[1024]; /* viewer@<slug>, role viewer in branch main */
} tenant;

/* A tenant with branch main, an admin and a viewer, and their tokens. */
static void tenant_make(tenant *t, const char *slug, const char *environment)
{
    memset(t, 0, sizeof *t);
    snprintf(t->slug, sizeof t->slug, "%s", slug);
    char *id = sql_value("INSERT INTO tenants (slug, name, environment) VALUES ($1, $1, $2)"
                         " RETURNING id",
                         2, slug, environment);
    snprintf(t->id, sizeof t->id, "%s", id);
    free(id);
    free(sql_value("INSERT INTO branches (tenant_id, branch) VALUES ($1, 'main')", 1, t->id));
    char admin[64], viewer[64];
    snprintf(admin, sizeof admin, "admin@%s", slug);
    snprintf(viewer, sizeof viewer, "viewer@%s", slug);
    free(sql_value("INSERT INTO role_mappings (tenant_id, branch, subject, role) VALUES"
                   " ($1, 'main', $2, 'admin'), ($1, 'main', $3, 'viewer')",
                   3, t->id, admin, viewer));
    long long exp = (long long)time(NULL) + 600;
    mint(t->admin, sizeof t->admin, JWT_KEY, admin, t->id, "main", exp);
    mint(t->viewer, sizeof t->viewer, JWT_KEY, viewer, t->id, "main", exp);
}

/* A workflow of tenant_id with version 1 = definition, created at created_at (NULL: now), in one
 * transaction (the current-version key is checked at commit). Caller frees the id. */
static char *workflow_insert(const char *tenant_id, const char *name, const char *definition,
                             const char *created_at, bool enabled)
{
    free(sql_value("BEGIN", 0));
    char *id = sql_value("INSERT INTO workflows (tenant_id, name, enabled, trigger_connector,"
                         " trigger_event, created_at) VALUES ($1, $2, $3::boolean, 'hubspot',"
                         " 'contact.created', coalesce($4::timestamptz, now())) RETURNING id",
                         4, tenant_id, name, enabled ? "t" : "f", created_at);
    free(sql_value("INSERT INTO workflow_versions (workflow_id, version, definition)"
                   " VALUES ($1, 1, $2::jsonb)",
                   2, id, definition));
    free(sql_value("COMMIT", 0));
    return id;
}

/* A run of the workflow (version 1) with status, created at created_at. Caller frees the id. */
static char *run_insert(const char *tenant_id, const char *workflow_id, const char *event_id,
                        const char *status, const char *created_at)
{
    return sql_value(
        "INSERT INTO runs (tenant_id, workflow_id, workflow_version, event_id, ordering_key,"
        " ordering_seq, status, trigger, created_at, finished_at) VALUES ($1, $2, 1, $3,"
        " 'hubspot:1', 1, $4, '{\"id\":\"ev\",\"payload\":{}}', $5::timestamptz,"
        " CASE WHEN $4 IN ('succeeded', 'failed', 'cancelled') THEN $5::timestamptz END)"
        " RETURNING id",
        5, tenant_id, workflow_id, event_id, status, created_at);
}

/* ---- HTTP ----------------------------------------------------------------------------------- */

typedef struct reply {
    long status;
    hf_buf body;
    hf_buf headers;
    hf_json json; /* the body parsed, when it is JSON */
} reply;

static size_t collect(char *p, size_t size, size_t n, void *arg)
{
    hf_buf_append(arg, p, size * n);
    return size * n;
}

/* One request to the server; header is one more header line (or NULL). The curl result. */
static CURLcode perform(reply *r, const char *method, const char *path, const char *token,
                        const char *body, const char *header, long timeout_ms)
{
    memset(r, 0, sizeof *r);
    CURL *curl = curl_easy_init();
    char *url = xconcat(base_url, path, NULL);
    struct curl_slist *h = NULL;
    char auth[1100];
    if (token) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", token);
        h = curl_slist_append(h, auth);
    }
    if (body && !(header && strncasecmp(header, "Content-Type:", 13) == 0))
        h = curl_slist_append(h, "Content-Type: application/json");
    if (header)
        h = curl_slist_append(h, header);
    h = curl_slist_append(h, "Expect:");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, h);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r->body);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &r->headers);
    if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(curl, CURLOPT_HTTPGET, 1L);
    } else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    } else {
        /* Always a Content-Length, so an empty body is not read until the connection closes. */
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
        curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    curl_slist_free_all(h);
    curl_easy_cleanup(curl);
    free(url);
    if (r->body.len && (r->body.data[0] == '{' || r->body.data[0] == '['))
        r->json = hf_json_parse(r->body.data, r->body.len, NULL, 0);
    return rc;
}

static void reply_free(reply *r)
{
    hf_json_free(r->json);
    hf_buf_free(&r->body);
    hf_buf_free(&r->headers);
    memset(r, 0, sizeof *r);
}

/* perform, failing the test when no answer came. */
static void call(reply *r, const char *method, const char *path, const char *token,
                 const char *body, const char *header)
{
    CURLcode rc = perform(r, method, path, token, body, header, 15000);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, path, curl_easy_strerror(rc));
}

/* The value of response header name (case-insensitive), "" when absent. */
static const char *reply_header(const reply *r, const char *name, char *out, size_t outlen)
{
    size_t n = strlen(name);
    out[0] = '\0';
    for (const char *line = r->headers.data; line && *line;) {
        const char *end = strstr(line, "\r\n");
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            snprintf(out, outlen, "%.*s", (int)(len - (size_t)(v - line)), v);
        }
        line = end ? end + 2 : line + len;
    }
    return out;
}

static const char *jstr(hf_json v, const char *key)
{
    return hf_json_str(hf_json_get(v, key));
}

static void expect_status(const reply *r, long status)
{
    if (r->status != status)
        fail_msg("want HTTP %ld, got %ld: %s", status, r->status, r->body.data ? r->body.data : "");
}

/* The reply is status with {"error": error, "detail": ...} whose detail equals detail (exact) or
 * contains it (exact == false). */
static void expect_error_as(const reply *r, long status, const char *error, const char *detail,
                            bool exact)
{
    expect_status(r, status);
    const char *e = jstr(r->json, "error"), *d = jstr(r->json, "detail");
    bool ok = e && d && strcmp(e, error) == 0 &&
              (exact ? strcmp(d, detail) == 0 : strstr(d, detail) != NULL);
    if (!ok)
        fail_msg("want %s \"%s\", got %s", error, detail, r->body.data ? r->body.data : "");
    char ct[128];
    assert_string_equal(reply_header(r, "Content-Type", ct, sizeof ct), "application/json");
}

static void expect_error(const reply *r, long status, const char *error, const char *detail)
{
    expect_error_as(r, status, error, detail, true);
}

static void assert_jstr(hf_json v, const char *key, const char *want)
{
    const char *got = jstr(v, key);
    if (!got || strcmp(got, want) != 0)
        fail_msg("member %s: want \"%s\", got \"%s\"", key, want, got ? got : "(absent)");
}

static void assert_jbool(hf_json v, const char *key, bool want)
{
    hf_json m = hf_json_get(v, key);
    if (want ? !YAJL_IS_TRUE(m) : !YAJL_IS_FALSE(m))
        fail_msg("member %s: want %s", key, want ? "true" : "false");
}

static void assert_jint(hf_json v, const char *key, long long want)
{
    long long got = 0;
    if (!hf_json_int(hf_json_get(v, key), &got) || got != want)
        fail_msg("member %s: want %lld, got %lld", key, want, got);
}

/* The problem of a problems array with this path and code, or fails. */
static hf_json find_problem(hf_json problems, const char *path, const char *code)
{
    for (size_t i = 0; i < hf_json_len(problems); i++) {
        hf_json p = hf_json_at(problems, i);
        const char *pp = jstr(p, "path"), *pc = jstr(p, "code");
        if (pp && pc && strcmp(pp, path) == 0 && strcmp(pc, code) == 0)
            return p;
    }
    fail_msg("no problem %s at %s", code, path);
    return NULL;
}

/* ---- a fake OAuth token endpoint: records what it receives, answers as scripted ------------- */

typedef struct token_request {
    char method[8];
    char *uri, *content_type, *accept, *authorization, *body;
} token_request;

#define FAKE_MAX_REQUESTS 8

static struct {
    hf_http_server *server;
    char url[96];         /* http://127.0.0.1:<port> */
    pthread_mutex_t lock; /* guards everything below */
    token_request got[FAKE_MAX_REQUESTS];
    int n; /* requests received (beyond the table: counted, not kept) */
    int status;
    char *body; /* the answer to every request */
} fake;

static char *header_copy(struct evhttp_request *req, const char *name)
{
    const char *v = evhttp_find_header(evhttp_request_get_input_headers(req), name);
    return v ? xstrdup(v) : NULL;
}

static void token_request_free(token_request *r)
{
    free(r->uri);
    free(r->content_type);
    free(r->accept);
    free(r->authorization);
    free(r->body);
    memset(r, 0, sizeof *r);
}

/* On the fake's own thread: no cmocka assertions here. */
static void fake_handle(struct evhttp_request *req, void *arg)
{
    (void)arg;
    token_request r = {0};
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
    snprintf(r.method, sizeof r.method, "%s",
             cmd == EVHTTP_REQ_POST  ? "POST"
             : cmd == EVHTTP_REQ_GET ? "GET"
                                     : "OTHER");
    r.uri = xstrdup(evhttp_request_get_uri(req));
    r.content_type = header_copy(req, "Content-Type");
    r.accept = header_copy(req, "Accept");
    r.authorization = header_copy(req, "Authorization");
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t n = evbuffer_get_length(in);
    r.body = xmalloc(n + 1);
    evbuffer_remove(in, r.body, n);
    r.body[n] = '\0';
    pthread_mutex_lock(&fake.lock);
    if (fake.n < FAKE_MAX_REQUESTS)
        fake.got[fake.n] = r;
    else
        token_request_free(&r);
    fake.n++;
    int status = fake.status;
    char *body = xstrdup(fake.body);
    pthread_mutex_unlock(&fake.lock);
    hf_http_reply_json(req, status, body, strlen(body));
    free(body);
}

/* Forgets what was received; from now on every request is answered status with body. */
static void fake_answer(int status, const char *body)
{
    pthread_mutex_lock(&fake.lock);
    for (int i = 0; i < fake.n && i < FAKE_MAX_REQUESTS; i++)
        token_request_free(&fake.got[i]);
    fake.n = 0;
    fake.status = status;
    free(fake.body);
    fake.body = xstrdup(body);
    pthread_mutex_unlock(&fake.lock);
}

static int fake_count(void)
{
    pthread_mutex_lock(&fake.lock);
    int n = fake.n;
    pthread_mutex_unlock(&fake.lock);
    return n;
}

/* Request i as received (its strings stay the fake's until the next fake_answer). */
static token_request fake_at(int i)
{
    pthread_mutex_lock(&fake.lock);
    bool have = i < fake.n && i < FAKE_MAX_REQUESTS;
    token_request r = have ? fake.got[i] : (token_request){0};
    pthread_mutex_unlock(&fake.lock);
    if (!have)
        fail_msg("the fake token endpoint has no request %d", i);
    return r;
}

/* Starts the fake on a free port of 127.0.0.1; false when it cannot. */
static bool fake_start(void)
{
    pthread_mutex_init(&fake.lock, NULL);
    fake.status = 500;
    fake.body =
        xstrdup("{\"error\":\"server_error\",\"error_description\":\"no answer scripted\"}");
    char err[256] = "";
    hf_http_options o = {.listen = "127.0.0.1:0",
                         .threads = 1,
                         .max_body = 1 << 16,
                         .max_headers = 16384,
                         .timeout_ms = 10000,
                         .max_connections = 16};
    fake.server = hf_http_server_new(&o, fake_handle, NULL, err, sizeof err);
    if (!fake.server) {
        fprintf(stderr, "test_db_api: fake token endpoint: %s\n", err);
        return false;
    }
    hf_http_server_start(fake.server);
    snprintf(fake.url, sizeof fake.url, "http://127.0.0.1:%d", hf_http_server_port(fake.server));
    return true;
}

static void fake_stop(void)
{
    if (fake.server)
        hf_http_server_free(fake.server);
    fake.server = NULL;
    for (int i = 0; i < fake.n && i < FAKE_MAX_REQUESTS; i++)
        token_request_free(&fake.got[i]);
    fake.n = 0;
    free(fake.body);
    fake.body = NULL;
    pthread_mutex_destroy(&fake.lock);
}

/* ---- form bodies ---------------------------------------------------------------------------- */

static int hex_digit(char c)
{
    return c >= '0' && c <= '9'   ? c - '0'
           : c >= 'a' && c <= 'f' ? c - 'a' + 10
           : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                  : -1;
}

/* s[0..n) of an application/x-www-form-urlencoded body decoded ('+' is a space), as a new string;
 * NULL when a % escape is malformed. */
static char *form_decode(const char *s, size_t n)
{
    hf_buf out = {0};
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            hf_buf_putc(&out, ' ');
        } else if (s[i] == '%') {
            int hi = i + 2 < n ? hex_digit(s[i + 1]) : -1;
            int lo = i + 2 < n ? hex_digit(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                hf_buf_free(&out);
                return NULL;
            }
            hf_buf_putc(&out, (char)(hi * 16 + lo));
            i += 2;
        } else {
            hf_buf_putc(&out, s[i]);
        }
    }
    return hf_buf_steal(&out);
}

/* The field names of a form body in order, comma-separated, into out. */
static const char *form_names(const char *body, char *out, size_t outlen)
{
    hf_buf names = {0};
    for (const char *p = body; *p;) {
        size_t len = strcspn(p, "&");
        size_t klen = strcspn(p, "=&");
        char *name = form_decode(p, klen);
        if (names.len)
            hf_buf_putc(&names, ',');
        hf_buf_puts(&names, name ? name : "(malformed)");
        free(name);
        p += len;
        if (*p)
            p++;
    }
    snprintf(out, outlen, "%s", names.data ? names.data : "");
    hf_buf_free(&names);
    return out;
}

/* The decoded value of the form field name (its first occurrence), or NULL. Caller frees. */
static char *form_field(const char *body, const char *name)
{
    for (const char *p = body; *p;) {
        size_t len = strcspn(p, "&");
        size_t klen = strcspn(p, "=&");
        char *key = form_decode(p, klen);
        bool match = key && strcmp(key, name) == 0;
        free(key);
        if (match)
            return klen < len ? form_decode(p + klen + 1, len - klen - 1) : xstrdup("");
        p += len;
        if (*p)
            p++;
    }
    return NULL;
}

/* Fails unless the form field name of body is want. */
static void assert_form(const char *body, const char *name, const char *want)
{
    char *got = form_field(body, name);
    bool ok = got && strcmp(got, want) == 0;
    char shown[512];
    snprintf(shown, sizeof shown, "%s", got ? got : "(absent)");
    free(got);
    if (!ok)
        fail_msg("form field %s: want \"%s\", got \"%s\" in %s", name, want, shown, body);
}

/* ---- the server ----------------------------------------------------------------------------- */

static void *serve_main(void *arg)
{
    (void)arg;
    static char name[] = "serve";
    char *argv[] = {name, NULL};
    server_rc = engine_cmd_serve(1, argv);
    atomic_store(&server_exited, 1);
    return NULL;
}

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
        perror("test_db_api: free port");
        abort();
    }
    close(fd);
    return ntohs(a.sin_port);
}

static void write_secret(const char *rel, const char *value)
{
    char path[160];
    snprintf(path, sizeof path, "%s/%s", secrets_dir, rel);
    char *slash = strrchr(path, '/');
    *slash = '\0';
    mkdir(path, 0700);
    *slash = '/';
    FILE *f = fopen(path, "w");
    if (!f || fputs(value, f) < 0 || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

static const char *const secret_files[] = {"api/jwt_key", "engine/token_key", "hubspot/client_id",
                                           "hubspot/client_secret", "quickbooks/client_id"};

static void remove_secrets(void)
{
    char path[160];
    for (size_t i = 0; i < sizeof secret_files / sizeof secret_files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", secrets_dir, secret_files[i]);
        unlink(path);
        *strrchr(path, '/') = '\0';
        rmdir(path);
    }
    rmdir(secrets_dir);
}

/* True when the server on base_url is ours: healthy, and it verifies a token signed with this
 * test's key (a tenant without roles gets 403; any other server would say 401 or 404). */
static bool server_is_ours(void)
{
    reply r;
    CURLcode rc = perform(&r, "GET", "/healthz", NULL, NULL, NULL, 1000);
    bool up = rc == CURLE_OK && r.status == 200 && r.body.data &&
              strcmp(r.body.data, "{\"status\":\"ok\"}") == 0;
    reply_free(&r);
    if (!up)
        return false;
    char token[1024];
    mint(token, sizeof token, JWT_KEY, "probe", MISSING_UUID, "main", (long long)time(NULL) + 60);
    rc = perform(&r, "GET", "/api/workflows", token, NULL, NULL, 5000);
    bool ours = rc == CURLE_OK && r.status == 403;
    reply_free(&r);
    return ours;
}

/* Starts engine_cmd_serve on a free port and polls (with a deadline) until it answers. */
static bool server_start(void)
{
    for (int attempt = 0; attempt < 5; attempt++) {
        char listen[32];
        int port = free_port();
        snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
        snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d", port);
        setenv("HOOKFLOW_API_LISTEN", listen, 1);
        atomic_store(&server_exited, 0);
        if (pthread_create(&server_thread, NULL, serve_main, NULL) != 0)
            return false;
        int64_t deadline = hf_now_ms() + 30000;
        while (hf_now_ms() < deadline && !atomic_load(&server_exited)) {
            if (server_is_ours() && !atomic_load(&server_exited))
                return true;
            struct timespec pause = {0, 20 * 1000 * 1000};
            nanosleep(&pause, NULL);
        }
        if (!atomic_load(&server_exited)) { /* running but never answering: give up */
            pthread_kill(server_thread, SIGTERM);
            pthread_join(server_thread, NULL);
            return false;
        }
        pthread_join(server_thread, NULL); /* the port was taken meanwhile: another one */
    }
    return false;
}

static int setup(void **state)
{
    (void)state;
    char *url = pgf_database("unit_api_main");
    db = pgf_connect(url);
    snprintf(secrets_dir, sizeof secrets_dir, "/tmp/hf_unit_api_XXXXXX");
    if (!mkdtemp(secrets_dir))
        abort();
    write_secret("api/jwt_key", JWT_KEY "\n");
    write_secret("engine/token_key", TOKEN_KEY_HEX "\n");
    write_secret("hubspot/client_id", HUBSPOT_CLIENT_ID "\n");
    write_secret("hubspot/client_secret", HUBSPOT_CLIENT_SECRET "\n");
    write_secret("quickbooks/client_id", QUICKBOOKS_CLIENT_ID "\n");
    setenv("HOOKFLOW_DATABASE_URL", url, 1);
    free(url);
    setenv("HOOKFLOW_SECRETS_DIR", secrets_dir, 1);
    setenv("HOOKFLOW_API_THREADS", "2", 1);
    setenv("HOOKFLOW_API_PUBLIC_URL", PUBLIC_URL, 1);
    setenv("HOOKFLOW_API_MAX_BODY_BYTES", "8192", 1);
    setenv("HOOKFLOW_SHUTDOWN_TIMEOUT_MS", "2000", 1);
    setenv("HOOKFLOW_LOG_LEVEL", "warn", 1);
    setenv("HOOKFLOW_LOG_FORMAT", "text", 1);
    setenv("HOOKFLOW_CONNECTOR_QUICKBOOKS_AUTHORIZE_URL", QUICKBOOKS_AUTHORIZE, 1);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    /* Only the server's sigwait may take these: block them here, before its thread exists, so
     * every thread inherits the mask. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    /* HubSpot's token endpoint (and its API base, so that no account lookup leaves this process
     * unseen) is the fake; the settings are read on every exchange, set here before any. */
    if (!fake_start())
        return -1;
    char *token_url = xconcat(fake.url, FAKE_TOKEN_PATH, NULL);
    char *api_base = xconcat(fake.url, "/hubspot-api", NULL);
    setenv("HOOKFLOW_CONNECTOR_HUBSPOT_TOKEN_URL", token_url, 1);
    setenv("HOOKFLOW_CONNECTOR_HUBSPOT_BASE_URL", api_base, 1);
    free(token_url);
    free(api_base);
    if (!server_start()) {
        fprintf(stderr, "test_db_api: the API server did not start (rc %d)\n", server_rc);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    pthread_kill(server_thread, SIGTERM);
    pthread_join(server_thread, NULL);
    int rc = server_rc;
    fake_stop();
    curl_global_cleanup();
    remove_secrets();
    PQfinish(db);
    if (rc != 0) {
        fprintf(stderr, "test_db_api: engine_cmd_serve returned %d after SIGTERM\n", rc);
        return -1;
    }
    return 0;
}

/* ---- server.c ------------------------------------------------------------------------------- */

/* No token, another scheme, a bad signature, an expired or malformed token: 401 in JSON with a
 * Bearer challenge, and the handler never runs. */
static void unauthenticated_requests_get_401(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "auth", "production");
    reply r;
    char h[256];

    call(&r, "GET", "/api/workflows", NULL, NULL, NULL);
    expect_error(&r, 401, "unauthorized", "a bearer token is required");
    assert_string_equal(reply_header(&r, "WWW-Authenticate", h, sizeof h),
                        "Bearer realm=\"hookflow\"");
    assert_string_equal(reply_header(&r, "Cache-Control", h, sizeof h), "no-store");
    reply_free(&r);

    call(&r, "GET", "/api/workflows", NULL, NULL, "Authorization: Basic YWxpY2U6cHc=");
    expect_error(&r, 401, "unauthorized", "a bearer token is required");
    reply_free(&r);

    char token[1024];
    mint(token, sizeof token, OTHER_KEY, "admin@auth", t.id, "main", (long long)time(NULL) + 600);
    call(&r, "POST", "/api/workflows", token, "{\"definition\":" DEF_DELAY("Nope", 1) "}", NULL);
    expect_error(&r, 401, "unauthorized", "token signature does not verify");
    assert_string_equal(reply_header(&r, "WWW-Authenticate", h, sizeof h),
                        "Bearer realm=\"hookflow\", error=\"invalid_token\", "
                        "error_description=\"token signature does not verify\"");
    assert_null(strstr(r.body.data, strrchr(token, '.') + 1));
    reply_free(&r);

    mint(token, sizeof token, JWT_KEY, "admin@auth", t.id, "main", (long long)time(NULL) - 3600);
    call(&r, "GET", "/api/workflows", token, NULL, NULL);
    expect_error(&r, 401, "unauthorized", "token expired");
    reply_free(&r);

    call(&r, "GET", "/api/workflows", "not-a-jwt", NULL, NULL);
    expect_error(&r, 401, "unauthorized", "token is not three non-empty base64url parts");
    reply_free(&r);

    assert_int_equal(sql_long("SELECT count(*) FROM workflows WHERE tenant_id = $1", t.id, NULL),
                     0);
    assert_int_equal(sql_long("SELECT count(*) FROM audit_log WHERE tenant_id = $1", t.id, NULL),
                     0);
}

/* Only the admin role of the token's branch may use the API: a viewer's write (and read), a
 * subject without a mapping, an admin of another branch and an unknown tenant get 403. */
static void non_admins_get_403(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "roles", "production");
    reply r;
    call(&r, "POST", "/api/workflows", t.viewer, "{\"definition\":" DEF_DELAY("Viewer", 1) "}",
         NULL);
    expect_error(&r, 403, "forbidden", "only admins of the branch may use this API");
    reply_free(&r);
    call(&r, "GET", "/api/workflows", t.viewer, NULL, NULL);
    expect_error(&r, 403, "forbidden", "only admins of the branch may use this API");
    reply_free(&r);

    long long exp = (long long)time(NULL) + 600;
    char token[1024];
    mint(token, sizeof token, JWT_KEY, "stranger@roles", t.id, "main", exp);
    call(&r, "POST", "/api/workflows", token, "{\"definition\":" DEF_DELAY("Stranger", 1) "}",
         NULL);
    expect_error(&r, 403, "forbidden", "you have no role in this tenant's branch");
    reply_free(&r);
    mint(token, sizeof token, JWT_KEY, "admin@roles", t.id, "east", exp);
    call(&r, "GET", "/api/workflows", token, NULL, NULL);
    expect_error(&r, 403, "forbidden", "you have no role in this tenant's branch");
    reply_free(&r);
    mint(token, sizeof token, JWT_KEY, "admin@roles", MISSING_UUID, "main", exp);
    call(&r, "GET", "/api/workflows", token, NULL, NULL);
    expect_error(&r, 403, "forbidden", "you have no role in this tenant's branch");
    reply_free(&r);

    assert_int_equal(sql_long("SELECT count(*) FROM workflows WHERE tenant_id = $1", t.id, NULL),
                     0);
    call(&r, "GET", "/api/workflows", t.admin, NULL, NULL);
    expect_status(&r, 200);
    reply_free(&r);
}

/* Unknown paths are 404 and known paths with another method 405 with Allow, before any token is
 * looked at; a path parameter that decodes to a '/' matches nothing; the ops endpoints answer. */
static void unknown_routes_and_methods(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "routes", "production");
    reply r;
    char h[128];
    call(&r, "GET", "/api/nope", t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "no such endpoint");
    reply_free(&r);
    call(&r, "GET", "/api/nope", NULL, NULL, NULL);
    expect_error(&r, 404, "not_found", "no such endpoint");
    reply_free(&r);
    call(&r, "GET", "/api/workflows/a/b/c", t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "no such endpoint");
    reply_free(&r);

    call(&r, "PATCH", "/api/workflows", t.admin, "{}", NULL);
    expect_error(&r, 405, "method_not_allowed", "PATCH is not allowed here; use GET, POST");
    assert_string_equal(reply_header(&r, "Allow", h, sizeof h), "GET, POST");
    reply_free(&r);
    call(&r, "DELETE", "/api/runs/" MISSING_UUID, NULL, NULL, NULL);
    expect_error(&r, 405, "method_not_allowed", "DELETE is not allowed here; use GET");
    assert_string_equal(reply_header(&r, "Allow", h, sizeof h), "GET");
    reply_free(&r);
    call(&r, "POST", "/healthz", NULL, NULL, NULL);
    expect_error(&r, 405, "method_not_allowed", "use GET");
    assert_string_equal(reply_header(&r, "Allow", h, sizeof h), "GET, HEAD");
    reply_free(&r);

    call(&r, "GET", "/api/workflows/a%2Fb", t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "no such resource");
    reply_free(&r);

    call(&r, "GET", "/readyz", NULL, NULL, NULL);
    expect_status(&r, 200);
    assert_string_equal(r.body.data, "{\"status\":\"ready\"}");
    reply_free(&r);
    /* The request id a client sends comes back. */
    call(&r, "GET", "/api/nope", NULL, NULL, "X-Request-Id: routes-req-1");
    assert_string_equal(reply_header(&r, "X-Request-Id", h, sizeof h), "routes-req-1");
    reply_free(&r);
}

/* Bodies over HOOKFLOW_API_MAX_BODY_BYTES get 413; malformed JSON 400 with the byte position;
 * a non-object 400; another media type 415 (a +json one is JSON); a member given twice 400. None
 * of them writes anything. */
static void bad_bodies_are_refused(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "bodies", "production");
    reply r;

    hf_buf big = {0};
    hf_buf_puts(&big, "{\"name\":\"");
    while (big.len < MAX_BODY + 1000)
        hf_buf_putc(&big, 'x');
    hf_buf_puts(&big, "\"}");
    call(&r, "POST", "/api/workflows", t.admin, big.data, NULL);
    expect_error(&r, 413, "payload_too_large", "the body is larger than 8192 bytes");
    reply_free(&r);
    /* Exactly at the limit the body reaches the handler (whose own rule refuses the name). */
    hf_buf_reset(&big);
    hf_buf_puts(&big, "{\"definition\":" DEF_DELAY("Exact", 1) ",\"name\":\"");
    while (big.len < MAX_BODY - 2)
        hf_buf_putc(&big, 'x');
    hf_buf_puts(&big, "\"}");
    assert_int_equal(big.len, MAX_BODY);
    call(&r, "POST", "/api/workflows", t.admin, big.data, NULL);
    expect_error(&r, 400, "invalid_field", "name must be at most 200 characters");
    reply_free(&r);
    hf_buf_free(&big);

    static const struct {
        const char *body;
        long position;
    } malformed[] = {
        {"{\"name\":\"x\",}", 12},
        {"{\"definition\":", 14},
        {"{\"name\":\"\xff\"}", 9},
        {"{\"name\" \"x\"}", 8},
    };
    for (size_t i = 0; i < sizeof malformed / sizeof malformed[0]; i++) {
        call(&r, "POST", "/api/workflows", t.admin, malformed[i].body, NULL);
        char want[64];
        snprintf(want, sizeof want, "malformed JSON at byte %ld: ", malformed[i].position);
        expect_error_as(&r, 400, "malformed_json", want, false);
        assert_int_equal(strncmp(jstr(r.json, "detail"), want, strlen(want)), 0);
        assert_jint(r.json, "position", malformed[i].position);
        reply_free(&r);
    }

    call(&r, "POST", "/api/workflows", t.admin, "[1,2]", NULL);
    expect_error(&r, 400, "invalid_body", "the body must be a JSON object");
    reply_free(&r);
    call(&r, "POST", "/api/workflows", t.admin, "{\"name\":\"n\"}", "Content-Type: text/plain");
    expect_error(&r, 415, "unsupported_media_type", "the body must be application/json");
    reply_free(&r);
    call(&r, "POST", "/api/workflows", t.admin, "{\"name\":\"n\"}",
         "Content-Type: application/problem+json; charset=utf-8");
    expect_error(&r, 400, "invalid_field", "definition is required");
    reply_free(&r);
    call(&r, "POST", "/api/workflows", t.admin,
         "{\"definition\":" DEF_DELAY("A", 1) ",\"definition\":" DEF_DELAY("B", 1) "}", NULL);
    expect_error(&r, 400, "duplicate_field", "the field \"definition\" appears more than once");
    reply_free(&r);

    assert_int_equal(sql_long("SELECT count(*) FROM workflows WHERE tenant_id = $1", t.id, NULL),
                     0);
    assert_int_equal(sql_long("SELECT count(*) FROM audit_log WHERE tenant_id = $1", t.id, NULL),
                     0);
}

/* Another tenant's workflow and run are 404 to every endpoint that names them, exactly like ids
 * that do not exist, and stay as they were. */
static void other_tenants_objects_are_404(void **state)
{
    (void)state;
    tenant a, b;
    tenant_make(&a, "scope-a", "production");
    tenant_make(&b, "scope-b", "production");
    char *wf = workflow_insert(b.id, "B's", DEF_DELAY("B's", 5), NULL, false);
    char *run = run_insert(b.id, wf, "hubspot:ev-b", "failed", "2024-03-01T00:00:00Z");
    char path[128];
    reply r;

    snprintf(path, sizeof path, "/api/workflows/%s", wf);
    call(&r, "GET", path, a.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "workflow not found");
    reply_free(&r);
    call(&r, "PUT", path, a.admin, "{\"definition\":" DEF_DELAY("Taken", 9) "}", NULL);
    expect_error(&r, 404, "not_found", "workflow not found");
    reply_free(&r);
    call(&r, "DELETE", path, a.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "workflow not found");
    reply_free(&r);
    static const char *const actions[] = {"enable", "disable", "validate", "simulate"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "/api/workflows/%s/%s", wf, actions[i]);
        call(&r, "POST", path, a.admin, NULL, NULL);
        expect_error(&r, 404, "not_found", "workflow not found");
        reply_free(&r);
    }
    snprintf(path, sizeof path, "/api/workflows/%s/runs", wf);
    call(&r, "GET", path, a.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "workflow not found");
    reply_free(&r);
    snprintf(path, sizeof path, "/api/runs/%s", run);
    call(&r, "GET", path, a.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "run not found");
    reply_free(&r);
    snprintf(path, sizeof path, "/api/runs/%s/retry", run);
    call(&r, "POST", path, a.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "run not found");
    reply_free(&r);
    call(&r, "GET", "/api/workflows", a.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_int_equal(hf_json_len(hf_json_get(r.json, "workflows")), 0);
    reply_free(&r);

    /* B sees both. */
    snprintf(path, sizeof path, "/api/runs/%s", run);
    call(&r, "GET", path, b.admin, NULL, NULL);
    expect_status(&r, 200);
    reply_free(&r);
    assert_sql("1|false|1|failed|1",
               "SELECT w.current_version || '|' || (w.deleted_at IS NOT NULL) || '|' ||"
               " (SELECT count(*) FROM workflow_versions v WHERE v.workflow_id = w.id) || '|' ||"
               " r.status || '|' || r.generation FROM workflows w JOIN runs r"
               " ON r.workflow_id = w.id WHERE w.id = $1 AND r.id = $2",
               wf, run);
    assert_int_equal(
        sql_long("SELECT count(*) FROM audit_log WHERE tenant_id IN ($1, $2)", a.id, b.id), 0);
    free(run);
    free(wf);
}

/* ---- workflows_api.c ------------------------------------------------------------------------ */

/* POST /api/workflows: 201 with Location and the workflow (name from the definition when none is
 * given), its version 1 row and the audit row with the request id and branch; a second live
 * workflow with the same name is 409 and writes nothing. */
static void create_writes_version_and_audit(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "create", "production");
    static const char def[] = DEF_DELAY("Pickup", 1500);
    reply r;
    char h[128];
    call(&r, "POST", "/api/workflows", t.admin, "{\"definition\":" DEF_DELAY("Pickup", 1500) "}",
         "X-Request-Id: create-req-1");
    expect_status(&r, 201);
    const char *id = jstr(r.json, "id");
    assert_non_null(id);
    assert_true(api_is_uuid(id));
    char wf[40];
    snprintf(wf, sizeof wf, "%s", id);
    char location[96];
    snprintf(location, sizeof location, "/api/workflows/%s", wf);
    assert_string_equal(reply_header(&r, "Location", h, sizeof h), location);
    assert_jstr(r.json, "name", "Pickup");
    assert_jbool(r.json, "enabled", false);
    assert_jint(r.json, "version", 1);
    assert_string_equal(hf_json_str(hf_json_path(r.json, "trigger", "connector", NULL)), "hubspot");
    assert_string_equal(hf_json_str(hf_json_path(r.json, "trigger", "event", NULL)),
                        "contact.created");
    assert_jstr(r.json, "version_created_by", "admin@create");
    hf_json node = hf_json_at(hf_json_path(r.json, "definition", "nodes", NULL), 0);
    assert_jstr(node, "id", "wait");
    assert_jint(node, "delay_ms", 1500);
    assert_int_equal(strlen(jstr(r.json, "created_at")), 27); /* 2024-01-01T00:00:00.000000Z */
    reply_free(&r);

    assert_sql("Pickup|false|1|hubspot|contact.created",
               "SELECT name || '|' || enabled || '|' || current_version || '|' ||"
               " trigger_connector || '|' || trigger_event FROM workflows"
               " WHERE id = $1 AND tenant_id = $2",
               wf, t.id);
    assert_sql("1|1|admin@create|true",
               "SELECT count(*) || '|' || min(version) || '|' || min(created_by) || '|' ||"
               " bool_and(definition = $2::jsonb) FROM workflow_versions WHERE workflow_id = $1",
               wf, def);
    assert_sql("1|admin@create|workflow.created|workflow|Pickup|1|false|create-req-1|main",
               "SELECT count(*) OVER () || '|' || actor || '|' || action || '|' || subject_type"
               " || '|' || (detail->>'name') || '|' || (detail->>'version') || '|' ||"
               " (detail->>'enabled') || '|' || (detail->>'request_id') || '|' ||"
               " (detail->>'branch') FROM audit_log WHERE tenant_id = $1 AND subject_id = $2",
               t.id, wf);

    call(&r, "POST", "/api/workflows", t.admin,
         "{\"name\":\"Pickup 2\",\"definition\":" DEF_DELAY("Pickup", 1500) "}", NULL);
    expect_status(&r, 201);
    assert_jstr(r.json, "name", "Pickup 2");
    reply_free(&r);

    call(&r, "POST", "/api/workflows", t.admin,
         "{\"name\":\"Pickup\",\"definition\":" DEF_DELAY("Other", 1) "}", NULL);
    expect_error(&r, 409, "name_taken", "another live workflow of this tenant has the name");
    reply_free(&r);
    assert_int_equal(sql_long("SELECT count(*) FROM workflows WHERE tenant_id = $1", t.id, NULL),
                     2);
    assert_int_equal(sql_long("SELECT count(*) FROM audit_log WHERE tenant_id = $1", t.id, NULL),
                     2);

    call(&r, "GET", location, t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jstr(r.json, "id", wf);
    assert_jstr(r.json, "name", "Pickup");
    reply_free(&r);
}

/* Every kind of bad create is refused with a status and a detail that names the problem, and
 * leaves no workflow, version or audit row behind. */
static void invalid_workflows_write_nothing(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "invalid", "production");
    static const struct {
        const char *body;
        long status;
        const char *error, *detail;
    } cases[] = {
        {"{}", 400, "invalid_field", "definition is required"},
        {"{\"definition\":" DEF_DELAY("X", 1) ",\"colour\":\"red\"}", 400, "unknown_field",
         "unknown field(s): colour (allowed: name, definition, enabled)"},
        {"{\"definition\":[1]}", 400, "invalid_definition", "definition must be a JSON object"},
        {"{\"definition\":{\"name\":\"X\",\"trigger\":{\"connector\":\"hubspot\","
         "\"event\":\"contact.created\"},\"nodes\":[{\"id\":\"a\",\"type\":\"teleport\"}],"
         "\"edges\":[]}}",
         400, "invalid_definition",
         "nodes[0].type: must be one of action, condition, transform, delay"},
        {"{\"definition\":{\"name\":\"X\",\"trigger\":{\"connector\":\"hubspot\","
         "\"event\":\"contact.created\"},\"nodes\":[{\"id\":\"a\",\"type\":\"delay\","
         "\"delay_ms\":1},{\"id\":\"b\",\"type\":\"delay\",\"delay_ms\":1}],"
         "\"edges\":[{\"from\":\"a\",\"to\":\"b\"},{\"from\":\"b\",\"to\":\"a\"}]}}",
         400, "invalid_definition", "cycle: "},
        {"{\"name\":\"\",\"definition\":" DEF_DELAY("X", 1) "}", 400, "invalid_field",
         "name must not be empty"},
        {"{\"name\":7,\"definition\":" DEF_DELAY("X", 1) "}", 400, "invalid_field",
         "name must be a string"},
        {"{\"enabled\":\"yes\",\"definition\":" DEF_DELAY("X", 1) "}", 400, "invalid_field",
         "enabled must be true or false"},
        {"{\"name\":\"a\\u0001b\",\"definition\":" DEF_DELAY("X", 1) "}", 400, "invalid_field",
         "name must not contain control characters"},
        /* The definition's name, which becomes the workflow's when none is given, too. */
        {"{\"definition\":" DEF_DELAY("a\\u0001b", 1) "}", 400, "invalid_definition",
         "name: must not contain control characters"},
    };
    reply r;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        call(&r, "POST", "/api/workflows", t.admin, cases[i].body, NULL);
        expect_error_as(&r, cases[i].status, cases[i].error, cases[i].detail,
                        strcmp(cases[i].detail, "cycle: ") != 0);
        reply_free(&r);
    }
    call(&r, "POST", "/api/workflows", t.admin,
         "{\"definition\":" DEF_DELAY("X", 1) ",\"colour\":\"red\"}", NULL);
    assert_string_equal(hf_json_str(hf_json_at(hf_json_get(r.json, "fields"), 0)), "colour");
    reply_free(&r);

    /* An enabled workflow must validate: unknown actions and connectors are named. */
    call(&r, "POST", "/api/workflows", t.admin,
         "{\"enabled\":true,\"definition\":{\"name\":\"X\",\"trigger\":{\"connector\":"
         "\"hubspot\",\"event\":\"contact.created\"},\"nodes\":[{\"id\":\"crm\",\"type\":"
         "\"action\",\"connector\":\"hubspot\",\"action\":\"teleport\",\"params\":{}},"
         "{\"id\":\"far\",\"type\":\"action\",\"connector\":\"myspace\",\"action\":\"poke\","
         "\"params\":{}}],\"edges\":[]}}",
         NULL);
    expect_error_as(&r, 422, "validation_failed", "an enabled workflow must validate: ", false);
    hf_json problems = hf_json_get(r.json, "problems");
    assert_string_equal(
        jstr(find_problem(problems, "nodes[0].action", "unknown_action"), "message"),
        "hubspot has no action 'teleport' (actions: create_contact, upsert_contact)");
    assert_string_equal(
        jstr(find_problem(problems, "nodes[1].connector", "unknown_connector"), "message"),
        "no connector 'myspace' in the catalog");
    find_problem(problems, "trigger.connector", "missing_connection");
    char want[160];
    snprintf(want, sizeof want, "an enabled workflow must validate: %zu problems, the first at '",
             hf_json_len(problems));
    assert_int_equal(strncmp(jstr(r.json, "detail"), want, strlen(want)), 0);
    reply_free(&r);

    assert_int_equal(sql_long("SELECT count(*) FROM workflows WHERE tenant_id = $1", t.id, NULL),
                     0);
    assert_int_equal(sql_long("SELECT count(*) FROM workflow_versions v JOIN workflows w"
                              " ON w.id = v.workflow_id WHERE w.tenant_id = $1",
                              t.id, NULL),
                     0);
    assert_int_equal(sql_long("SELECT count(*) FROM audit_log WHERE tenant_id = $1", t.id, NULL),
                     0);
}

/* A draft (not enabled) may be incomplete: it is saved, and validate lists its problems. */
static void drafts_are_saved_and_validated(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "drafts", "production");
    reply r;
    call(&r, "POST", "/api/workflows", t.admin,
         "{\"definition\":{\"name\":\"Draft\",\"trigger\":{\"connector\":\"hubspot\","
         "\"event\":\"contact.created\"},\"nodes\":[{\"id\":\"crm\",\"type\":\"action\","
         "\"connector\":\"hubspot\",\"action\":\"teleport\",\"params\":{}}],\"edges\":[]}}",
         NULL);
    expect_status(&r, 201);
    char path[128];
    snprintf(path, sizeof path, "/api/workflows/%s/validate", jstr(r.json, "id"));
    reply_free(&r);
    call(&r, "POST", path, t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jbool(r.json, "valid", false);
    assert_jbool(r.json, "draft", false);
    assert_jint(r.json, "version", 1);
    find_problem(hf_json_get(r.json, "problems"), "nodes[0].action", "unknown_action");
    reply_free(&r);
    /* A draft definition in the body is validated instead of the stored one. */
    call(&r, "POST", path, t.admin, "{\"definition\":{\"name\":\"D\"}}", NULL);
    expect_status(&r, 200);
    assert_jbool(r.json, "draft", true);
    assert_true(YAJL_IS_NULL(hf_json_get(r.json, "version")));
    assert_jbool(r.json, "valid", false);
    reply_free(&r);
}

/* PUT saves a new immutable version when the definition changed, keeps the version when only the
 * name changed, writes nothing for an identical PUT, and refuses to enable an invalid one. */
static void update_creates_new_version(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "update", "production");
    reply r;
    call(&r, "POST", "/api/workflows", t.admin, "{\"definition\":" DEF_DELAY("Orig", 1000) "}",
         NULL);
    expect_status(&r, 201);
    char wf[40], path[96];
    snprintf(wf, sizeof wf, "%s", jstr(r.json, "id"));
    snprintf(path, sizeof path, "/api/workflows/%s", wf);
    reply_free(&r);

    call(&r, "PUT", path, t.admin, "{\"definition\":" DEF_DELAY("Orig", 2000) "}", NULL);
    expect_status(&r, 200);
    assert_jint(r.json, "version", 2);
    assert_jstr(r.json, "name", "Orig");
    assert_jint(hf_json_at(hf_json_path(r.json, "definition", "nodes", NULL), 0), "delay_ms", 2000);
    reply_free(&r);
    assert_sql("2|1000|2000",
               "SELECT w.current_version || '|' || (SELECT v.definition#>>'{nodes,0,delay_ms}'"
               " FROM workflow_versions v WHERE v.workflow_id = w.id AND v.version = 1) || '|' ||"
               " (SELECT v.definition#>>'{nodes,0,delay_ms}' FROM workflow_versions v"
               " WHERE v.workflow_id = w.id AND v.version = 2) FROM workflows w WHERE w.id = $1",
               wf, NULL);
    assert_sql("1|2|1|true",
               "SELECT count(*) || '|' || max(detail->>'version') || '|' ||"
               " max(detail->>'previous_version') || '|' || max(detail->>'new_version')"
               " FROM audit_log WHERE subject_id = $1 AND action = 'workflow.updated'",
               wf, NULL);

    /* The same definition again: nothing to save. */
    call(&r, "PUT", path, t.admin, "{\"definition\":" DEF_DELAY("Orig", 2000) "}", NULL);
    expect_status(&r, 200);
    assert_jint(r.json, "version", 2);
    reply_free(&r);
    assert_int_equal(
        sql_long("SELECT count(*) FROM workflow_versions WHERE workflow_id = $1", wf, NULL), 2);
    assert_int_equal(sql_long("SELECT count(*) FROM audit_log WHERE subject_id = $1"
                              " AND action = 'workflow.updated'",
                              wf, NULL),
                     1);

    /* Only the name: same version, an audit row saying so. */
    call(&r, "PUT", path, t.admin,
         "{\"name\":\"Renamed\",\"definition\":" DEF_DELAY("Orig", 2000) "}", NULL);
    expect_status(&r, 200);
    assert_jint(r.json, "version", 2);
    assert_jstr(r.json, "name", "Renamed");
    reply_free(&r);
    assert_int_equal(
        sql_long("SELECT count(*) FROM workflow_versions WHERE workflow_id = $1", wf, NULL), 2);
    assert_sql("2|false|Renamed",
               "SELECT count(*) OVER () || '|' || (detail->>'new_version') || '|' ||"
               " (detail->>'name') FROM audit_log WHERE subject_id = $1"
               " AND action = 'workflow.updated' ORDER BY id DESC LIMIT 1",
               wf, NULL);

    call(&r, "PUT", path, t.admin, "{\"name\":\"N\"}", NULL);
    expect_error(&r, 400, "invalid_field",
                 "definition is required (PUT saves a new version of the definition)");
    reply_free(&r);
    /* Enabling needs a clean validation: this tenant has no hubspot connection. */
    call(&r, "PUT", path, t.admin, "{\"enabled\":true,\"definition\":" DEF_DELAY("Orig", 3000) "}",
         NULL);
    expect_error_as(&r, 422, "validation_failed", "an enabled workflow must validate", false);
    assert_string_equal(
        jstr(find_problem(hf_json_get(r.json, "problems"), "trigger.connector",
                          "missing_connection"),
             "message"),
        "the tenant has no active hubspot connection (HubSpot Journeys): connect it under "
        "/api/integrations/hubspot");
    reply_free(&r);
    assert_sql("2|false|Renamed|2",
               "SELECT current_version || '|' || enabled || '|' || name || '|' ||"
               " (SELECT count(*) FROM workflow_versions WHERE workflow_id = $1)"
               " FROM workflows WHERE id = $1",
               wf, NULL);
}

/* One request made on a thread of its own while the test holds a lock it will wait for. */
typedef struct blocked_call {
    const char *method, *path, *token, *body;
    reply r;
} blocked_call;

static void *blocked_call_main(void *arg)
{
    blocked_call *b = arg;
    call(&b->r, b->method, b->path, b->token, b->body, NULL);
    return NULL;
}

/* Makes b while another session holds workflow wf locked in a transaction that saves version
 * `version` of it (as a PUT does), and commits that transaction once b waits for the lock. */
static void call_behind_a_concurrent_update(blocked_call *b, const char *wf, int version)
{
    PGconn *other = pgf_connect(getenv("HOOKFLOW_DATABASE_URL"));
    char sql[512];
    pgf_exec(other, "BEGIN");
    snprintf(sql, sizeof sql,
             "INSERT INTO workflow_versions (workflow_id, version, definition, created_by)"
             " SELECT workflow_id, %d, definition, 'another-admin' FROM workflow_versions"
             " WHERE workflow_id = '%s' AND version = %d",
             version, wf, version - 1);
    pgf_exec(other, sql);
    snprintf(sql, sizeof sql, "UPDATE workflows SET current_version = %d WHERE id = '%s'", version,
             wf);
    pgf_exec(other, sql);
    pthread_t thread;
    pthread_create(&thread, NULL, blocked_call_main, b);
    int64_t deadline = hf_now_ms() + 10000;
    while (sql_long("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND wait_event_type = 'Lock'",
                    NULL, NULL) < 1) {
        if (hf_now_ms() > deadline)
            fail_msg("the %s never waited for the workflow's lock", b->method);
        usleep(10000);
    }
    pgf_exec(other, "COMMIT");
    pthread_join(thread, NULL);
    PQfinish(other);
}

/* A change that waited for the workflow's lock behind another change of it is made after that
 * one: it used to read the workflow joined to the version it had seen before the other change
 * committed, find no row and answer 404 (the admin's disable or new version was lost). */
static void changes_waiting_behind_another_change_are_made_after_it(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "update-race", "production");
    reply r;
    call(&r, "POST", "/api/workflows", t.admin, "{\"definition\":" DEF_DELAY("Race", 1000) "}",
         NULL);
    expect_status(&r, 201);
    char wf[40], path[96], disable[112];
    snprintf(wf, sizeof wf, "%s", jstr(r.json, "id"));
    snprintf(path, sizeof path, "/api/workflows/%s", wf);
    snprintf(disable, sizeof disable, "/api/workflows/%s/disable", wf);
    reply_free(&r);

    blocked_call put = {.method = "PUT",
                        .path = path,
                        .token = t.admin,
                        .body = "{\"definition\":" DEF_DELAY("Race", 3000) "}"};
    call_behind_a_concurrent_update(&put, wf, 2);
    expect_status(&put.r, 200);
    assert_jint(put.r.json, "version", 3);
    reply_free(&put.r);
    assert_sql("3|3000|3",
               "SELECT w.current_version || '|' || (SELECT v.definition#>>'{nodes,0,delay_ms}'"
               " FROM workflow_versions v WHERE v.workflow_id = w.id AND v.version = 3) || '|' ||"
               " (SELECT count(*) FROM workflow_versions v WHERE v.workflow_id = w.id)"
               " FROM workflows w WHERE w.id = $1",
               wf, NULL);

    blocked_call off = {.method = "POST", .path = disable, .token = t.admin};
    call_behind_a_concurrent_update(&off, wf, 4);
    expect_status(&off.r, 200);
    reply_free(&off.r);
    assert_sql("4|false", "SELECT current_version || '|' || enabled FROM workflows WHERE id = $1",
               wf, NULL);
}

/* enable refuses (422) a workflow whose connector is not connected or lacks a scope an action
 * needs, then succeeds once it has them; enable and disable write audit rows. */
static void enable_needs_connection_and_scopes(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "enable", "production");
    char *wf = workflow_insert(t.id, "Upsert", DEF_UPSERT("Upsert"), NULL, false);
    char path[128];
    snprintf(path, sizeof path, "/api/workflows/%s/enable", wf);
    reply r;
    call(&r, "POST", path, t.admin, NULL, NULL);
    expect_error_as(&r, 422, "validation_failed", "an enabled workflow must validate", false);
    find_problem(hf_json_get(r.json, "problems"), "trigger.connector", "missing_connection");
    find_problem(hf_json_get(r.json, "problems"), "nodes[0].connector", "missing_connection");
    reply_free(&r);

    free(sql_value("INSERT INTO connections (tenant_id, connector, account, status,"
                   " granted_scopes) VALUES ($1, 'hubspot', 'portal-enable', 'active',"
                   " '{crm.objects.contacts.read}')",
                   1, t.id));
    call(&r, "POST", path, t.admin, NULL, NULL);
    expect_error_as(&r, 422, "validation_failed", "an enabled workflow must validate", false);
    hf_json problems = hf_json_get(r.json, "problems");
    assert_int_equal(hf_json_len(problems), 1);
    assert_string_equal(jstr(find_problem(problems, "nodes[0].action", "missing_scope"), "message"),
                        "the hubspot connection was not granted the scope "
                        "'crm.objects.contacts.write' that upsert_contact needs: authorise it "
                        "again");
    reply_free(&r);
    assert_sql("false", "SELECT enabled::text FROM workflows WHERE id = $1", wf, NULL);

    free(sql_value("UPDATE connections SET granted_scopes = '{crm.objects.contacts.read,"
                   "crm.objects.contacts.write}' WHERE tenant_id = $1",
                   1, t.id));
    call(&r, "POST", path, t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jbool(r.json, "enabled", true);
    reply_free(&r);
    call(&r, "POST", path, t.admin, "{\"force\":true}", NULL);
    expect_error(&r, 400, "unknown_field", "unknown field(s): force (allowed: none)");
    reply_free(&r);
    snprintf(path, sizeof path, "/api/workflows/%s/disable", wf);
    call(&r, "POST", path, t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jbool(r.json, "enabled", false);
    reply_free(&r);
    assert_sql("workflow.enabled,workflow.disabled",
               "SELECT string_agg(action, ',' ORDER BY id) FROM audit_log WHERE subject_id = $1",
               wf, NULL);
    assert_sql("false", "SELECT enabled::text FROM workflows WHERE id = $1", wf, NULL);
    free(wf);
}

/* Collects the ids of every page of path (which ends in limit=N), following next_cursor. */
static size_t list_all(const char *token, const char *path, const char *array, char ids[][40],
                       size_t max, size_t *pages)
{
    size_t n = 0;
    char *cursor = NULL;
    *pages = 0;
    for (;;) {
        char url[512];
        snprintf(url, sizeof url, "%s%s%s", path, cursor ? "&cursor=" : "", cursor ? cursor : "");
        free(cursor);
        cursor = NULL;
        reply r;
        call(&r, "GET", url, token, NULL, NULL);
        expect_status(&r, 200);
        (*pages)++;
        hf_json items = hf_json_get(r.json, array);
        for (size_t i = 0; i < hf_json_len(items); i++) {
            assert_true(n < max);
            snprintf(ids[n++], 40, "%s", jstr(hf_json_at(items, i), "id"));
        }
        const char *next = jstr(r.json, "next_cursor");
        if (next)
            cursor = xstrdup(next);
        else
            assert_true(YAJL_IS_NULL(hf_json_get(r.json, "next_cursor")));
        reply_free(&r);
        if (!cursor || *pages > 20)
            break;
    }
    free(cursor);
    return n;
}

/* The listing is newest first with a keyset cursor on (created_at, id): limit=1 pages through
 * every live workflow of the tenant exactly once, ties included; deleted workflows and other
 * tenants' are never listed; bad parameters are 400. */
static void list_pages_with_cursor(void **state)
{
    (void)state;
    tenant t, other;
    tenant_make(&t, "list", "production");
    tenant_make(&other, "list-other", "production");
    char *w1 = workflow_insert(t.id, "w1", DEF_DELAY("w1", 1), "2024-01-01T00:00:01Z", false);
    char *w2 = workflow_insert(t.id, "w2", DEF_DELAY("w2", 1), "2024-01-01T00:00:02Z", false);
    char *w3 = workflow_insert(t.id, "w3", DEF_DELAY("w3", 1), "2024-01-01T00:00:02Z", false);
    char *w4 = workflow_insert(t.id, "w4", DEF_DELAY("w4", 1), "2024-01-01T00:00:03Z", true);
    char *w5 = workflow_insert(t.id, "w5", DEF_DELAY("w5", 1), "2024-01-01T00:00:04Z", false);
    char *wo = workflow_insert(other.id, "wo", DEF_DELAY("wo", 1), "2024-01-01T00:00:05Z", false);
    free(sql_value("UPDATE workflows SET deleted_at = now() WHERE id = $1", 1, w5));
    /* Ties on created_at go by id, descending. */
    const char *hi = strcmp(w2, w3) > 0 ? w2 : w3, *lo = hi == w2 ? w3 : w2;
    const char *want[] = {w4, hi, lo, w1};

    char ids[16][40];
    size_t pages = 0;
    size_t n = list_all(t.admin, "/api/workflows?limit=1", "workflows", ids, 16, &pages);
    assert_int_equal(n, 4);
    assert_int_equal(pages, 4);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(ids[i], want[i]);
    n = list_all(t.admin, "/api/workflows?limit=3", "workflows", ids, 16, &pages);
    assert_int_equal(n, 4);
    assert_int_equal(pages, 2);
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(ids[i], want[i]);

    reply r;
    call(&r, "GET", "/api/workflows", t.admin, NULL, NULL);
    expect_status(&r, 200);
    hf_json items = hf_json_get(r.json, "workflows");
    assert_int_equal(hf_json_len(items), 4);
    assert_true(YAJL_IS_NULL(hf_json_get(r.json, "next_cursor")));
    hf_json first = hf_json_at(items, 0);
    assert_jstr(first, "name", "w4");
    assert_jbool(first, "enabled", true);
    assert_jstr(first, "created_at", "2024-01-01T00:00:03.000000Z");
    assert_null(hf_json_get(first, "definition")); /* summaries only */
    reply_free(&r);

    call(&r, "GET", "/api/workflows?enabled=true", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_int_equal(hf_json_len(hf_json_get(r.json, "workflows")), 1);
    assert_jstr(hf_json_at(hf_json_get(r.json, "workflows"), 0), "id", w4);
    reply_free(&r);
    call(&r, "GET", "/api/workflows?enabled=false&limit=2", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_int_equal(hf_json_len(hf_json_get(r.json, "workflows")), 2);
    assert_non_null(jstr(r.json, "next_cursor"));
    reply_free(&r);

    static const struct {
        const char *query, *detail;
    } bad[] = {
        {"?limit=0", "limit: must be a whole number from 1 to 100"},
        {"?limit=101", "limit: must be a whole number from 1 to 100"},
        {"?limit=ten", "limit: must be a whole number from 1 to 100"},
        {"?enabled=maybe", "enabled: must be true or false"},
        {"?cursor=bogus", "cursor: is not a cursor of this listing (pass next_cursor back "
                          "unchanged)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char url[128];
        snprintf(url, sizeof url, "/api/workflows%s", bad[i].query);
        call(&r, "GET", url, t.admin, NULL, NULL);
        expect_error(&r, 400, "invalid_parameter", bad[i].detail);
        reply_free(&r);
    }
    free(w1);
    free(w2);
    free(w3);
    free(w4);
    free(w5);
    free(wo);
}

/* DELETE is soft: 204 with no body, deleted_at set and the workflow disabled, its versions kept;
 * then 404 everywhere, out of the listing, its name free again; audited. */
static void delete_is_soft_and_audited(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "delete", "production");
    reply r;
    call(&r, "POST", "/api/workflows", t.admin, "{\"definition\":" DEF_DELAY("Gone", 1) "}", NULL);
    expect_status(&r, 201);
    char wf[40], path[96];
    snprintf(wf, sizeof wf, "%s", jstr(r.json, "id"));
    snprintf(path, sizeof path, "/api/workflows/%s", wf);
    reply_free(&r);
    free(sql_value("UPDATE workflows SET enabled = true WHERE id = $1", 1, wf));

    call(&r, "DELETE", path, t.admin, NULL, NULL);
    expect_status(&r, 204);
    assert_int_equal(r.body.len, 0);
    reply_free(&r);
    assert_sql("true|false|1",
               "SELECT (deleted_at IS NOT NULL) || '|' || enabled || '|' ||"
               " (SELECT count(*) FROM workflow_versions WHERE workflow_id = $1)"
               " FROM workflows WHERE id = $1",
               wf, NULL);
    assert_sql("workflow.deleted|Gone|1",
               "SELECT action || '|' || (detail->>'name') || '|' || (detail->>'version')"
               " FROM audit_log WHERE subject_id = $1 ORDER BY id DESC LIMIT 1",
               wf, NULL);

    call(&r, "GET", path, t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "workflow not found");
    reply_free(&r);
    call(&r, "DELETE", path, t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "workflow not found");
    reply_free(&r);
    call(&r, "DELETE", "/api/workflows/not-a-uuid", t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "workflow not found");
    reply_free(&r);
    call(&r, "GET", "/api/workflows", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_int_equal(hf_json_len(hf_json_get(r.json, "workflows")), 0);
    reply_free(&r);
    call(&r, "POST", "/api/workflows", t.admin, "{\"definition\":" DEF_DELAY("Gone", 1) "}", NULL);
    expect_status(&r, 201);
    reply_free(&r);
    assert_int_equal(sql_long("SELECT count(*) FROM audit_log WHERE tenant_id = $1"
                              " AND action = 'workflow.deleted'",
                              t.id, NULL),
                     1);
}

/* ---- runs_api.c ----------------------------------------------------------------------------- */

/* A workflow's runs, newest first, filtered by status and by a [from, to) range, paged by
 * cursor without gaps or repeats; other workflows' runs never appear; bad filters are 400. */
static void runs_list_filters_and_pages(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "runs", "production");
    char *wf = workflow_insert(t.id, "R", DEF_DELAY("R", 1), NULL, false);
    char *other = workflow_insert(t.id, "S", DEF_DELAY("S", 1), NULL, false);
    char *r1 = run_insert(t.id, wf, "hubspot:e1", "succeeded", "2024-02-01T00:00:01Z");
    char *r2 = run_insert(t.id, wf, "hubspot:e2", "failed", "2024-02-01T00:00:02Z");
    char *r3 = run_insert(t.id, wf, "hubspot:e3", "failed", "2024-02-01T00:00:03Z");
    char *r4 = run_insert(t.id, wf, "hubspot:e4", "running", "2024-02-01T00:00:04Z");
    char *r5 = run_insert(t.id, wf, "hubspot:e5", "pending", "2024-02-01T00:00:05Z");
    char *rx = run_insert(t.id, other, "hubspot:e6", "failed", "2024-02-01T00:00:03Z");
    char base[128];
    snprintf(base, sizeof base, "/api/workflows/%s/runs", wf);

    static const struct {
        const char *query;
        int want[5]; /* run numbers, newest first, 0-terminated */
    } filters[] = {
        {"", {5, 4, 3, 2, 1}},
        {"?status=failed", {3, 2}},
        {"?status=failed,succeeded", {3, 2, 1}},
        {"?status=pending,%20running", {5, 4}},
        {"?from=2024-02-01T00:00:02Z&to=2024-02-01T00:00:04Z", {3, 2}},
        {"?from=2024-02-01T00:00:04Z", {5, 4}},
        {"?status=failed&to=2024-02-01T00:00:03Z", {2}},
    };
    const char *runs[] = {NULL, r1, r2, r3, r4, r5};
    reply r;
    for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++) {
        char url[256];
        snprintf(url, sizeof url, "%s%s", base, filters[i].query);
        call(&r, "GET", url, t.admin, NULL, NULL);
        expect_status(&r, 200);
        hf_json list = hf_json_get(r.json, "runs");
        size_t n = 0;
        while (n < 5 && filters[i].want[n])
            n++;
        if (hf_json_len(list) != n)
            fail_msg("%s: want %zu runs, got %s", filters[i].query, n, r.body.data);
        for (size_t k = 0; k < n; k++)
            assert_jstr(hf_json_at(list, k), "id", runs[filters[i].want[k]]);
        assert_jint(r.json, "limit", 50);
        assert_true(YAJL_IS_NULL(hf_json_get(r.json, "next_cursor")));
        reply_free(&r);
    }

    call(&r, "GET", base, t.admin, NULL, NULL);
    hf_json third = hf_json_at(hf_json_get(r.json, "runs"), 2);
    assert_jstr(third, "workflow_id", wf);
    assert_jstr(third, "status", "failed");
    assert_jstr(third, "event_id", "hubspot:e3");
    assert_jint(third, "workflow_version", 1);
    assert_jint(third, "generation", 1);
    assert_jstr(third, "created_at", "2024-02-01T00:00:03.000000Z");
    assert_jstr(third, "finished_at", "2024-02-01T00:00:03.000000Z");
    reply_free(&r);

    char ids[16][40];
    size_t pages = 0;
    char url[256];
    snprintf(url, sizeof url, "%s?limit=2", base);
    size_t n = list_all(t.admin, url, "runs", ids, 16, &pages);
    assert_int_equal(n, 5);
    assert_int_equal(pages, 3);
    for (size_t i = 0; i < 5; i++)
        assert_string_equal(ids[i], runs[5 - i]);
    snprintf(url, sizeof url, "%s?limit=1&status=failed", base);
    n = list_all(t.admin, url, "runs", ids, 16, &pages);
    assert_int_equal(n, 2);
    assert_string_equal(ids[0], r3);
    assert_string_equal(ids[1], r2);

    static const struct {
        const char *query, *detail;
    } bad[] = {
        {"?status=bogus", "status: \"bogus\" is not a run status (one of pending, running, "
                          "waiting, succeeded, failed, cancelled)"},
        {"?status=", "status: is empty (one or more of pending, running, waiting, succeeded, "
                     "failed, cancelled, comma-separated)"},
        {"?from=yesterday", "from: \"yesterday\" is not an RFC 3339 date-time"},
        {"?to=2024-13-01", "to: \"2024-13-01\" is not an RFC 3339 date-time"},
        {"?from=2024-02-02T00:00:00Z&to=2024-02-01T00:00:00Z",
         "from: \"2024-02-02T00:00:00Z\" is after to"},
        {"?limit=0", "limit: \"0\" must be an integer from 1 to 100"},
        {"?limit=500", "limit: \"500\" must be an integer from 1 to 100"},
        {"?cursor=bogus", "cursor: is not a cursor of this listing (pass next_cursor back "
                          "unchanged)"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(url, sizeof url, "%s%s", base, bad[i].query);
        call(&r, "GET", url, t.admin, NULL, NULL);
        expect_error(&r, 400, "invalid_parameter", bad[i].detail);
        reply_free(&r);
    }
    call(&r, "GET", "/api/workflows/" MISSING_UUID "/runs", t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "workflow not found");
    reply_free(&r);
    call(&r, "GET", "/api/workflows/nope/runs", t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "workflow not found");
    reply_free(&r);
    free(wf);
    free(other);
    free(r1);
    free(r2);
    free(r3);
    free(r4);
    free(r5);
    free(rx);
}

/* One run with its workflow's name and its node attempts; unknown or malformed ids are 404; only
 * failed or cancelled runs may be retried. */
static void run_get_shows_attempts(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "runget", "production");
    char *wf = workflow_insert(t.id, "Getter", DEF_DELAY("Getter", 1), NULL, false);
    char *run = run_insert(t.id, wf, "hubspot:g1", "running", "2024-02-03T00:00:00Z");
    free(sql_value("INSERT INTO node_attempts (run_id, node_id, attempt, status, error,"
                   " idempotency_key, finished_at) VALUES ($1, 'wait', 1, 'failed', 'boom',"
                   " 'key-wait', now())",
                   1, run));
    char path[128];
    snprintf(path, sizeof path, "/api/runs/%s", run);
    reply r;
    call(&r, "GET", path, t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jstr(r.json, "id", run);
    assert_jstr(r.json, "workflow_id", wf);
    assert_jstr(r.json, "workflow_name", "Getter");
    assert_jstr(r.json, "status", "running");
    assert_jstr(r.json, "ordering_key", "hubspot:1");
    assert_jint(r.json, "current_version", 1);
    assert_string_equal(hf_json_str(hf_json_path(r.json, "trigger", "id", NULL)), "ev");
    hf_json attempts = hf_json_get(r.json, "attempts");
    assert_int_equal(hf_json_len(attempts), 1);
    hf_json a = hf_json_at(attempts, 0);
    assert_jstr(a, "node_id", "wait");
    assert_jstr(a, "status", "failed");
    assert_jstr(a, "error", "boom");
    assert_jint(a, "attempt", 1);
    assert_jint(a, "generation", 1);
    assert_jbool(a, "current", true);
    assert_jbool(a, "carried_over", false);
    reply_free(&r);

    call(&r, "GET", "/api/runs/" MISSING_UUID, t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "run not found");
    reply_free(&r);
    call(&r, "GET", "/api/runs/123", t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "run not found");
    reply_free(&r);
    snprintf(path, sizeof path, "/api/runs/%s/retry", run);
    call(&r, "POST", path, t.admin, NULL, NULL);
    expect_error(&r, 409, "run_not_retryable",
                 "only failed or cancelled runs can be retried; this run is running");
    reply_free(&r);
    assert_sql("running|1", "SELECT status || '|' || generation FROM runs WHERE id = $1", run,
               NULL);
    free(run);
    free(wf);
}

/* ---- connections_api.c ---------------------------------------------------------------------- */

/* The integrations list: every catalog connector in catalog order with the tenant's connection
 * state and the Beta approval rule (production only), and never a token or its ciphertext. */
static void integrations_list_hides_tokens(void **state)
{
    (void)state;
    tenant t, sbx;
    tenant_make(&t, "conns", "production");
    tenant_make(&sbx, "conns-sbx", "sandbox");
    /* The "sealed tokens" are recognisable bytes: SECRET-ACCESS / SECRET-REFRESH. */
    free(sql_value(
        "INSERT INTO connections (tenant_id, connector, account, status, granted_scopes,"
        " access_token_enc, refresh_token_enc, token_expires_at, connected_by) VALUES"
        " ($1, 'hubspot', 'portal-77', 'active',"
        " '{crm.objects.contacts.read,crm.objects.contacts.write}',"
        " '\\x5345435245542d414343455353', '\\x5345435245542d52454652455348',"
        " '2030-01-01T00:00:00Z', 'admin@conns'),"
        " ($1, 'xero', 'xero-org-1', 'disabled', '{}', '\\x5345435245542d414343455353', NULL,"
        " NULL, NULL)",
        1, t.id));
    reply r;
    call(&r, "GET", "/api/integrations", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_null(strstr(r.body.data, "SECRET"));
    assert_null(strstr(r.body.data, "5345435245542d")); /* as hex */
    assert_null(strstr(r.body.data, "U0VDUkVU"));       /* as base64 */
    assert_null(strstr(r.body.data, "token_enc"));
    assert_null(strstr(r.body.data, "access_token"));
    hf_json list = hf_json_get(r.json, "integrations");
    static const char *const ids[] = {"xero", "quickbooks", "hubspot", "klaviyo", "twilio", "meta"};
    assert_int_equal(hf_json_len(list), 6);
    for (size_t i = 0; i < 6; i++)
        assert_jstr(hf_json_at(list, i), "connector", ids[i]);

    hf_json hub = hf_json_at(list, 2);
    assert_jstr(hub, "name", "HubSpot Journeys");
    assert_jstr(hub, "availability", "GA");
    assert_jstr(hub, "auth", "oauth2");
    assert_jstr(hub, "status", "active");
    assert_jbool(hub, "connected", true);
    assert_jstr(hub, "account", "portal-77");
    assert_int_equal(hf_json_len(hf_json_get(hub, "granted_scopes")), 2);
    assert_int_equal(hf_json_len(hf_json_get(hub, "scopes")), 3);
    assert_jbool(hf_json_get(hub, "approval"), "required", false);
    assert_true(YAJL_IS_NULL(hf_json_get(hub, "message")));
    hf_json conn = hf_json_at(hf_json_get(hub, "connections"), 0);
    assert_jbool(conn, "has_refresh_token", true);
    assert_jstr(conn, "token_expires_at", "2030-01-01T00:00:00.000000Z");
    assert_jstr(conn, "connected_by", "admin@conns");
    assert_true(api_is_uuid(jstr(conn, "id")));

    hf_json kla = hf_json_at(list, 3);
    assert_jstr(kla, "availability", "Beta");
    assert_jstr(kla, "status", "not_connected");
    assert_jbool(kla, "connected", false);
    assert_true(YAJL_IS_NULL(hf_json_get(kla, "account")));
    assert_int_equal(hf_json_len(hf_json_get(kla, "connections")), 0);
    assert_jbool(hf_json_get(kla, "approval"), "required", true);
    assert_jbool(hf_json_get(kla, "approval"), "approved", false);
    assert_jstr(kla, "message",
                "klaviyo is in Beta: a support approval is required before enabling it in "
                "production");
    assert_jstr(hf_json_at(list, 4), "auth", "basic");
    assert_jstr(hf_json_at(list, 0), "status", "disabled");
    assert_jbool(hf_json_at(hf_json_get(hf_json_at(list, 0), "connections"), 0),
                 "has_refresh_token", false);
    reply_free(&r);

    call(&r, "GET", "/api/integrations/hubspot", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jstr(r.json, "connector", "hubspot");
    assert_jstr(r.json, "account", "portal-77");
    assert_null(strstr(r.body.data, "SECRET"));
    assert_null(strstr(r.body.data, "5345435245542d"));
    reply_free(&r);
    call(&r, "GET", "/api/integrations/myspace", t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "connector not found");
    reply_free(&r);

    /* A sandbox tenant needs no approval; and sees none of the other tenant's connections. */
    call(&r, "GET", "/api/integrations", sbx.admin, NULL, NULL);
    expect_status(&r, 200);
    list = hf_json_get(r.json, "integrations");
    assert_jbool(hf_json_get(hf_json_at(list, 3), "approval"), "required", false);
    assert_true(YAJL_IS_NULL(hf_json_get(hf_json_at(list, 3), "message")));
    assert_jstr(hf_json_at(list, 2), "status", "not_connected");
    reply_free(&r);
}

/* disable turns the tenant's connections off (and drops an unfinished authorisation); enable
 * needs an authorised connection and, for a Beta connector in production, a support approval;
 * every change is audited, every refusal writes nothing. */
static void connections_disable_and_enable(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "toggle", "production");
    free(sql_value(
        "INSERT INTO connections (tenant_id, connector, account, status, access_token_enc)"
        " VALUES ($1, 'hubspot', 'portal-t', 'active', '\\x01'),"
        " ($1, 'klaviyo', 'kla-t', 'disabled', '\\x02')",
        1, t.id));
    free(sql_value("INSERT INTO connections (tenant_id, connector, status) VALUES"
                   " ($1, 'xero', 'pending')",
                   1, t.id));
    reply r;
    call(&r, "POST", "/api/integrations/hubspot/disable", t.viewer, NULL, NULL);
    expect_error(&r, 403, "forbidden", "only admins of the branch may use this API");
    reply_free(&r);
    assert_sql("active", "SELECT status FROM connections WHERE tenant_id = $1 AND connector = $2",
               t.id, "hubspot");

    call(&r, "POST", "/api/integrations/hubspot/disable", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jstr(r.json, "connector", "hubspot");
    assert_jstr(r.json, "status", "disabled");
    reply_free(&r);
    assert_sql("disabled", "SELECT status FROM connections WHERE tenant_id = $1 AND connector = $2",
               t.id, "hubspot");
    assert_sql("admin@toggle|connector|[\"portal-t\"]",
               "SELECT actor || '|' || subject_type || '|' || (detail->'accounts')::text"
               " FROM audit_log WHERE tenant_id = $1 AND action = 'integration.disabled'"
               " AND subject_id = $2",
               t.id, "hubspot");

    call(&r, "POST", "/api/integrations/xero/disable", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jstr(r.json, "status", "not_connected");
    reply_free(&r);
    assert_int_equal(sql_long("SELECT count(*) FROM connections WHERE tenant_id = $1"
                              " AND connector = $2",
                              t.id, "xero"),
                     0);
    call(&r, "POST", "/api/integrations/quickbooks/disable", t.admin, NULL, NULL);
    expect_error(&r, 409, "not_connected", "quickbooks is not connected");
    reply_free(&r);

    call(&r, "POST", "/api/integrations/hubspot/enable", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jstr(r.json, "status", "active");
    reply_free(&r);
    call(&r, "POST", "/api/integrations/xero/enable", t.admin, NULL, NULL);
    expect_error(&r, 409, "not_connected",
                 "xero is not connected: authorise it first (POST .../oauth/start)");
    reply_free(&r);
    call(&r, "POST", "/api/integrations/twilio/enable", t.admin, NULL, NULL);
    expect_error(&r, 409, "not_connected",
                 "twilio is not connected: authorise it first (PUT .../credentials)");
    reply_free(&r);

    call(&r, "POST", "/api/integrations/klaviyo/enable", t.admin, NULL, NULL);
    expect_error(&r, 403, "beta_not_approved",
                 "klaviyo is in Beta: a support approval is required before enabling it in "
                 "production");
    reply_free(&r);
    assert_sql("disabled", "SELECT status FROM connections WHERE tenant_id = $1 AND connector = $2",
               t.id, "klaviyo");
    free(sql_value("INSERT INTO support_approvals (tenant_id, connector, approved_by) VALUES"
                   " ($1, 'klaviyo', 'support@hookflow')",
                   1, t.id));
    call(&r, "POST", "/api/integrations/klaviyo/enable", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jstr(r.json, "status", "active");
    assert_jbool(hf_json_get(r.json, "approval"), "approved", true);
    assert_jstr(hf_json_get(r.json, "approval"), "approved_by", "support@hookflow");
    reply_free(&r);
    assert_sql("integration.disabled,integration.disabled,integration.enabled,"
               "integration.enabled",
               "SELECT string_agg(action, ',' ORDER BY id) FROM audit_log WHERE tenant_id = $1",
               t.id, NULL);
}

/* Twilio credentials (no remote platform): the auth token is stored sealed under the token key,
 * bound to its connection, and never comes back in any answer; bad credentials and OAuth
 * connectors are refused without writing anything. */
static void twilio_credentials_are_sealed(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "creds", "production");
    static const char sid[] = "AC0123456789abcdef0123456789abcdef";
    static const char auth_token[] = "tok-0123456789abcdef";
    reply r;
    call(&r, "PUT", "/api/integrations/twilio/credentials", t.admin,
         "{\"account_sid\":\"AC0123\",\"auth_token\":\"tok-0123456789abcdef\"}", NULL);
    expect_error(&r, 400, "invalid_field",
                 "account_sid: must be \"AC\" followed by 32 hexadecimal digits");
    reply_free(&r);
    call(&r, "PUT", "/api/integrations/twilio/credentials", t.admin,
         "{\"account_sid\":\"AC0123456789abcdef0123456789abcdef\",\"auth_token\":\"short\"}", NULL);
    expect_error(&r, 400, "invalid_field",
                 "auth_token: must be 16 to 256 printable ASCII characters without spaces");
    reply_free(&r);
    call(&r, "PUT", "/api/integrations/hubspot/credentials", t.admin, "{}", NULL);
    expect_error(&r, 400, "credentials_not_supported",
                 "hubspot connects with OAuth: POST /api/integrations/hubspot/oauth/start instead");
    reply_free(&r);
    assert_int_equal(sql_long("SELECT count(*) FROM connections WHERE tenant_id = $1", t.id, NULL),
                     0);
    assert_int_equal(sql_long("SELECT count(*) FROM audit_log WHERE tenant_id = $1", t.id, NULL),
                     0);

    call(&r, "PUT", "/api/integrations/twilio/credentials", t.admin,
         "{\"account_sid\":\"AC0123456789abcdef0123456789abcdef\","
         "\"auth_token\":\"tok-0123456789abcdef\"}",
         NULL);
    expect_status(&r, 200);
    assert_jstr(r.json, "connector", "twilio");
    assert_jstr(r.json, "status", "active");
    assert_jstr(r.json, "account", sid);
    assert_null(strstr(r.body.data, auth_token));
    reply_free(&r);
    call(&r, "GET", "/api/integrations", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_null(strstr(r.body.data, auth_token));
    reply_free(&r);

    char *sealed_hex = sql_value("SELECT encode(access_token_enc, 'hex') FROM connections"
                                 " WHERE tenant_id = $1 AND connector = 'twilio' AND account = $2"
                                 " AND status = 'active' AND connected_by = 'admin@creds'"
                                 " AND position(convert_to($3, 'UTF8') IN access_token_enc) = 0",
                                 3, t.id, sid, auth_token);
    assert_non_null(sealed_hex);
    size_t sealed_len = strlen(sealed_hex) / 2;
    assert_int_equal(sealed_len, strlen(auth_token) + ENGINE_TOKEN_OVERHEAD);
    unsigned char *sealed = xmalloc(sealed_len);
    assert_true(hf_hex_decode(sealed_hex, strlen(sealed_hex), sealed, sealed_len));
    unsigned char key[ENGINE_TOKEN_KEY_LEN];
    assert_true(hf_hex_decode(TOKEN_KEY_HEX, 64, key, sizeof key));
    engine_keyring *keys = engine_keyring_from_raw(key);
    char *context = engine_token_context("twilio", sid, "access");
    char *opened = engine_token_open(keys, context, sealed, sealed_len);
    assert_non_null(opened);
    assert_string_equal(opened, auth_token);
    free(opened);
    free(context);
    /* Bound to its row: another account's context does not open it. */
    context = engine_token_context("twilio", "AC00000000000000000000000000000000", "access");
    assert_null(engine_token_open(keys, context, sealed, sealed_len));
    free(context);
    engine_keyring_free(keys);
    free(sealed);
    free(sealed_hex);
    assert_sql("integration.connected|connection|credentials|AC0123456789abcdef0123456789abcdef",
               "SELECT action || '|' || subject_type || '|' || (detail->>'via') || '|' ||"
               " (detail->>'account') FROM audit_log WHERE tenant_id = $1",
               t.id, NULL);
}

/* The query value of name in url ("" when absent), into out. */
static const char *url_param(const char *url, const char *name, char *out, size_t outlen)
{
    char key[64];
    snprintf(key, sizeof key, "&%s=", name);
    const char *p = strstr(url, key);
    if (!p) {
        snprintf(key, sizeof key, "?%s=", name);
        p = strstr(url, key);
    }
    out[0] = '\0';
    if (p) {
        p += strlen(key);
        snprintf(out, outlen, "%.*s", (int)strcspn(p, "&"), p);
    }
    return out;
}

/* OAuth start: the authorize URL with client id, redirect URI, the catalog's scopes, a fresh
 * state and an S256 PKCE challenge whose verifier is stored sealed next to the state's hash (never
 * the state itself); one pending placeholder connection; refusals write nothing. The callback
 * consumes a state once, for its connector only; a denial is reported as the platform said. */
static void oauth_start_and_state(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "oauth", "production");
    reply r;
    call(&r, "POST", "/api/integrations/hubspot/oauth/start", t.admin, NULL, NULL);
    expect_status(&r, 201);
    char st[64], challenge[64], redirect[160];
    snprintf(st, sizeof st, "%s", jstr(r.json, "state"));
    assert_int_equal(strlen(st), 43);
    unsigned char raw[64];
    assert_int_equal(api_base64url_decode(st, strlen(st), raw, sizeof raw), 32);
    snprintf(redirect, sizeof redirect, "%s", jstr(r.json, "redirect_uri"));
    assert_string_equal(redirect,
                        "https://admin.example.test/api/integrations/hubspot/oauth/callback");
    const char *url = jstr(r.json, "authorize_url");
    url_param(url, "code_challenge", challenge, sizeof challenge);
    assert_int_equal(strlen(challenge), 43);
    char want[1024];
    snprintf(want, sizeof want,
             "https://app.hubspot.com/oauth/authorize?client_id=" HUBSPOT_CLIENT_ID
             "&redirect_uri=https%%3A%%2F%%2Fadmin.example.test%%2Fapi%%2Fintegrations%%2Fhubspot"
             "%%2Foauth%%2Fcallback&response_type=code&scope=crm.objects.contacts.read"
             "%%20crm.objects.contacts.write%%20automation&state=%s&code_challenge=%s"
             "&code_challenge_method=S256",
             st, challenge);
    assert_string_equal(url, want);
    hf_json scopes = hf_json_get(r.json, "scopes");
    assert_int_equal(hf_json_len(scopes), 3);
    assert_string_equal(hf_json_str(hf_json_at(scopes, 2)), "automation");
    assert_int_equal(strlen(jstr(r.json, "expires_at")), 27);
    reply_free(&r);

    /* The state's row: found by its hash, on behalf of this admin, good for ten minutes. */
    unsigned char hash[HF_SHA256_LEN];
    char hash_hex[2 * HF_SHA256_LEN + 1];
    hf_sha256(st, strlen(st), hash);
    hf_hex_encode(hash, sizeof hash, hash_hex);
    assert_sql("hubspot|main|admin@oauth|https://admin.example.test/api/integrations/hubspot/"
               "oauth/callback|{crm.objects.contacts.read,crm.objects.contacts.write,automation}"
               "|true|true",
               "SELECT connector || '|' || branch || '|' || created_by || '|' || redirect_uri ||"
               " '|' || scopes::text || '|' || (used_at IS NULL AND account IS NULL) || '|' ||"
               " (expires_at BETWEEN now() + interval '9 minutes' AND now() + interval '11"
               " minutes') FROM oauth_states WHERE state_hash = decode($1, 'hex')"
               " AND tenant_id = $2",
               hash_hex, t.id);
    assert_int_equal(sql_long("SELECT count(*) FROM oauth_states WHERE position(convert_to($1,"
                              " 'UTF8') IN code_verifier_enc) > 0 OR redirect_uri LIKE '%' || $1"
                              " || '%'",
                              st, NULL),
                     0);
    /* PKCE: the sealed verifier opens under the token key and hashes to the challenge. */
    char *sealed_hex = sql_value("SELECT encode(code_verifier_enc, 'hex') FROM oauth_states"
                                 " WHERE state_hash = decode($1, 'hex')",
                                 1, hash_hex);
    size_t sealed_len = strlen(sealed_hex) / 2;
    unsigned char *sealed = xmalloc(sealed_len);
    assert_true(hf_hex_decode(sealed_hex, strlen(sealed_hex), sealed, sealed_len));
    unsigned char key[ENGINE_TOKEN_KEY_LEN];
    assert_true(hf_hex_decode(TOKEN_KEY_HEX, 64, key, sizeof key));
    engine_keyring *keys = engine_keyring_from_raw(key);
    char *context = engine_token_context("hubspot", hash_hex, "pkce_verifier");
    char *verifier = engine_token_open(keys, context, sealed, sealed_len);
    assert_non_null(verifier);
    assert_int_equal(strlen(verifier), 43);
    unsigned char digest[HF_SHA256_LEN];
    hf_sha256(verifier, strlen(verifier), digest);
    char expect_challenge[64];
    api_base64url_encode(digest, sizeof digest, expect_challenge);
    assert_string_equal(challenge, expect_challenge);
    free(verifier);
    free(context);
    engine_keyring_free(keys);
    free(sealed);
    free(sealed_hex);

    assert_sql("pending|{crm.objects.contacts.read,crm.objects.contacts.write,automation}|1",
               "SELECT status || '|' || requested_scopes::text || '|' || count(*) OVER ()"
               " FROM connections WHERE tenant_id = $1 AND connector = $2 AND account IS NULL",
               t.id, "hubspot");
    assert_sql("integration.oauth_started|connector|hubspot|https://admin.example.test/api/"
               "integrations/hubspot/oauth/callback",
               "SELECT action || '|' || subject_type || '|' || subject_id || '|' ||"
               " (detail->>'redirect_uri') FROM audit_log WHERE tenant_id = $1",
               t.id, NULL);

    /* Again, naming an account: a new state, still one placeholder. */
    call(&r, "POST", "/api/integrations/hubspot/oauth/start", t.admin, "{\"account\":\"portal-9\"}",
         NULL);
    expect_status(&r, 201);
    char st2[64];
    snprintf(st2, sizeof st2, "%s", jstr(r.json, "state"));
    assert_string_not_equal(st2, st);
    reply_free(&r);
    assert_int_equal(sql_long("SELECT count(*) FROM oauth_states WHERE tenant_id = $1"
                              " AND connector = $2",
                              t.id, "hubspot"),
                     2);
    assert_int_equal(sql_long("SELECT count(*) FROM oauth_states WHERE tenant_id = $1"
                              " AND account = $2",
                              t.id, "portal-9"),
                     1);
    assert_int_equal(sql_long("SELECT count(*) FROM connections WHERE tenant_id = $1", t.id, NULL),
                     1);

    /* A configured authorize URL that already has a query gets '&'. */
    call(&r, "POST", "/api/integrations/quickbooks/oauth/start", t.admin, "{}", NULL);
    expect_status(&r, 201);
    snprintf(want, sizeof want,
             QUICKBOOKS_AUTHORIZE "&client_id=" QUICKBOOKS_CLIENT_ID
                                  "&redirect_uri=https%%3A%%2F%%2Fadmin.example.test%%2Fapi%%2F"
                                  "integrations%%2Fquickbooks%%2Foauth%%2Fcallback&response_type="
                                  "code&scope=com.intuit.quickbooks.accounting&state=");
    assert_int_equal(strncmp(jstr(r.json, "authorize_url"), want, strlen(want)), 0);
    reply_free(&r);

    /* Refusals, each writing nothing. */
    long states = sql_long("SELECT count(*) FROM oauth_states", NULL, NULL);
    long audits = sql_long("SELECT count(*) FROM audit_log", NULL, NULL);
    call(&r, "POST", "/api/integrations/hubspot/oauth/start", t.admin,
         "{\"account\":\"bad account!\"}", NULL);
    expect_error(&r, 400, "invalid_field",
                 "account: must be 1 to 128 characters of letters, digits and . _ : -");
    reply_free(&r);
    call(&r, "POST", "/api/integrations/hubspot/oauth/start", t.admin, "{\"acount\":\"x\"}", NULL);
    expect_error(&r, 400, "unknown_field", "unknown field(s): acount (allowed: account)");
    reply_free(&r);
    call(&r, "POST", "/api/integrations/twilio/oauth/start", t.admin, NULL, NULL);
    expect_error(&r, 400, "oauth_not_supported",
                 "twilio does not use OAuth: PUT /api/integrations/twilio/credentials instead");
    reply_free(&r);
    call(&r, "POST", "/api/integrations/xero/oauth/start", t.admin, NULL, NULL);
    expect_error(&r, 503, "not_configured", "the secret xero/client_id is not configured");
    reply_free(&r);
    call(&r, "POST", "/api/integrations/myspace/oauth/start", t.admin, NULL, NULL);
    expect_error(&r, 404, "not_found", "connector not found");
    reply_free(&r);
    call(&r, "POST", "/api/integrations/hubspot/oauth/start", t.viewer, NULL, NULL);
    expect_error(&r, 403, "forbidden", "only admins of the branch may use this API");
    reply_free(&r);
    assert_int_equal(sql_long("SELECT count(*) FROM oauth_states", NULL, NULL), states);
    assert_int_equal(sql_long("SELECT count(*) FROM audit_log", NULL, NULL), audits);
    assert_int_equal(sql_long("SELECT count(*) FROM connections WHERE tenant_id = $1"
                              " AND connector = $2",
                              t.id, "xero"),
                     0);

    /* The callback (no bearer token): the state is bound to its connector, used once. */
    char path[512];
    snprintf(path, sizeof path, "/api/integrations/xero/oauth/callback?state=%s&code=abc", st2);
    call(&r, "GET", path, NULL, NULL, NULL);
    expect_error(&r, 400, "invalid_state",
                 "unknown, expired or already used state: start the authorisation again");
    reply_free(&r);
    call(&r, "GET", "/api/integrations/hubspot/oauth/callback?code=abc", NULL, NULL, NULL);
    expect_error(&r, 400, "invalid_state",
                 "state is missing: start the authorisation from the integrations page");
    reply_free(&r);
    snprintf(path, sizeof path,
             "/api/integrations/hubspot/oauth/callback?state=%s&error=access_denied"
             "&error_description=The%%20user%%20declined",
             st);
    call(&r, "GET", path, NULL, NULL, NULL);
    expect_error(&r, 400, "access_denied", "The user declined");
    reply_free(&r);
    assert_sql("true",
               "SELECT (used_at IS NOT NULL)::text FROM oauth_states"
               " WHERE state_hash = decode($1, 'hex')",
               hash_hex, NULL);
    assert_sql("admin@oauth|access_denied",
               "SELECT actor || '|' || (detail->>'error') FROM audit_log WHERE tenant_id = $1"
               " AND action = 'integration.oauth_denied'",
               t.id, NULL);
    snprintf(path, sizeof path, "/api/integrations/hubspot/oauth/callback?state=%s&code=abc", st);
    call(&r, "GET", path, NULL, NULL, NULL);
    expect_error(&r, 400, "invalid_state",
                 "unknown, expired or already used state: start the authorisation again");
    reply_free(&r);
    assert_int_equal(sql_long("SELECT count(*) FROM oauth_states WHERE tenant_id = $1"
                              " AND used_at IS NOT NULL",
                              t.id, NULL),
                     1);
}

/* ---- the OAuth callback's code exchange (against the fake token endpoint) ------------------- */

/* What POST .../oauth/start gave: the state, the PKCE challenge and the redirect URI. */
typedef struct oauth_started {
    char state[64], challenge[64], redirect[160], hash_hex[2 * HF_SHA256_LEN + 1];
} oauth_started;

/* Starts HubSpot's authorisation for t's admin. */
static void oauth_begin(const tenant *t, oauth_started *s)
{
    reply r;
    call(&r, "POST", "/api/integrations/hubspot/oauth/start", t->admin, NULL, NULL);
    expect_status(&r, 201);
    snprintf(s->state, sizeof s->state, "%s", jstr(r.json, "state"));
    snprintf(s->redirect, sizeof s->redirect, "%s", jstr(r.json, "redirect_uri"));
    url_param(jstr(r.json, "authorize_url"), "code_challenge", s->challenge, sizeof s->challenge);
    assert_int_equal(strlen(s->state), 43);
    assert_int_equal(strlen(s->challenge), 43);
    reply_free(&r);
    unsigned char hash[HF_SHA256_LEN];
    hf_sha256(s->state, strlen(s->state), hash);
    hf_hex_encode(hash, sizeof hash, s->hash_hex);
}

/* GET HubSpot's callback with state and code (already URL-encoded); header as for call. */
static void oauth_finish(reply *r, const char *state, const char *code_query, const char *header)
{
    char path[512];
    snprintf(path, sizeof path, "/api/integrations/hubspot/oauth/callback?state=%s&code=%s", state,
             code_query);
    call(r, "GET", path, NULL, NULL, header);
}

/* The state has been used, and another callback with it is refused before the platform is asked
 * again. */
static void expect_state_spent(const oauth_started *s)
{
    assert_sql("true",
               "SELECT (used_at IS NOT NULL)::text FROM oauth_states"
               " WHERE state_hash = decode($1, 'hex')",
               s->hash_hex, NULL);
    int before = fake_count();
    reply r;
    oauth_finish(&r, s->state, "another-code", NULL);
    expect_error(&r, 400, "invalid_state",
                 "unknown, expired or already used state: start the authorisation again");
    reply_free(&r);
    assert_int_equal(fake_count(), before);
}

/* The token stored in column access_token_enc or refresh_token_enc (slot "access" / "refresh") of
 * the tenant's HubSpot connection to account, opened with the token key under its context;
 * fails unless it is sealed (plain not among its bytes, the size of a sealed plain). */
static void expect_sealed(const char *tenant_id, const char *account, const char *slot,
                          const char *plain)
{
    char *sealed_hex = sql_value("SELECT encode(CASE WHEN $3 = 'access' THEN access_token_enc"
                                 " ELSE refresh_token_enc END, 'hex') FROM connections"
                                 " WHERE tenant_id = $1 AND connector = 'hubspot' AND account = $2",
                                 3, tenant_id, account, slot);
    if (!sealed_hex)
        fail_msg("no sealed %s token stored for hubspot account %s", slot, account);
    size_t sealed_len = strlen(sealed_hex) / 2;
    unsigned char *sealed = xmalloc(sealed_len);
    assert_true(hf_hex_decode(sealed_hex, strlen(sealed_hex), sealed, sealed_len));
    assert_int_equal(sealed_len, strlen(plain) + ENGINE_TOKEN_OVERHEAD);
    assert_null(memmem(sealed, sealed_len, plain, strlen(plain)));
    unsigned char key[ENGINE_TOKEN_KEY_LEN];
    assert_true(hf_hex_decode(TOKEN_KEY_HEX, 64, key, sizeof key));
    engine_keyring *keys = engine_keyring_from_raw(key);
    char *context = engine_token_context("hubspot", account, slot);
    char *opened = engine_token_open(keys, context, sealed, sealed_len);
    bool ok = opened && strcmp(opened, plain) == 0;
    free(opened);
    free(context);
    engine_keyring_free(keys);
    free(sealed);
    free(sealed_hex);
    if (!ok)
        fail_msg("the stored %s token does not open to \"%s\"", slot, plain);
}

/* Nothing of a failed exchange was stored: the tenant keeps only its pending placeholder (no
 * account, no token), no connection to account exists, and the only audit row is the start. */
static void expect_nothing_stored(const tenant *t, const char *account)
{
    assert_sql("pending|true|true|true|0|1",
               "SELECT status || '|' || (account IS NULL) || '|' || (access_token_enc IS NULL AND"
               " refresh_token_enc IS NULL) || '|' || (token_expires_at IS NULL AND connected_at IS"
               " NULL) || '|' || token_version || '|' || count(*) OVER () FROM connections"
               " WHERE tenant_id = $1",
               t->id, NULL);
    assert_int_equal(sql_long("SELECT count(*) FROM connections WHERE account = $1", account, NULL),
                     0);
    assert_sql("integration.oauth_started",
               "SELECT string_agg(action, ',' ORDER BY id) FROM audit_log WHERE tenant_id = $1",
               t->id, NULL);
}

/* The full callback: the code goes to the token endpoint as HubSpot wants it (form, client
 * credentials in the form, the start's redirect URI and the PKCE verifier of its challenge); the
 * tokens are stored sealed in the now active connection with the expiry the platform gave; one
 * audit row; the admin is sent back to the integrations page; the state is used up. */
static void oauth_callback_exchanges_code(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "oauthok", "production");
    static const char access[] = "hs-access-0001-abcdef", refresh[] = "hs-refresh-0001-abcdef";
    fake_answer(200, "{\"access_token\":\"hs-access-0001-abcdef\","
                     "\"refresh_token\":\"hs-refresh-0001-abcdef\",\"expires_in\":1800,"
                     "\"token_type\":\"bearer\",\"hub_id\":9100001,"
                     "\"scope\":\"crm.objects.contacts.read automation\"}");
    oauth_started s;
    oauth_begin(&t, &s);
    assert_int_equal(fake_count(), 0);

    reply r;
    oauth_finish(&r, s.state, "c0de%2F%2B%20x", NULL); /* the code "c0de/+ x" */
    expect_status(&r, 302);
    char h[256];
    assert_string_equal(reply_header(&r, "Location", h, sizeof h),
                        "https://admin.example.test/automation/integrations?connected=hubspot");
    assert_string_equal(reply_header(&r, "Cache-Control", h, sizeof h), "no-store");
    assert_int_equal(r.body.len, 0);
    reply_free(&r);

    /* What the token endpoint received: exactly one exchange. */
    assert_int_equal(fake_count(), 1);
    token_request got = fake_at(0);
    assert_string_equal(got.method, "POST");
    assert_string_equal(got.uri, FAKE_TOKEN_PATH);
    assert_non_null(got.content_type);
    assert_string_equal(got.content_type, "application/x-www-form-urlencoded");
    assert_non_null(got.accept);
    assert_string_equal(got.accept, "application/json");
    assert_null(got.authorization); /* HubSpot takes the client credentials in the form */
    char names[256];
    assert_string_equal(form_names(got.body, names, sizeof names),
                        "grant_type,code,redirect_uri,code_verifier,client_id,client_secret");
    assert_form(got.body, "grant_type", "authorization_code");
    assert_form(got.body, "code", "c0de/+ x");
    assert_form(got.body, "redirect_uri", s.redirect);
    assert_form(got.body, "client_id", HUBSPOT_CLIENT_ID);
    assert_form(got.body, "client_secret", HUBSPOT_CLIENT_SECRET);
    char *verifier = form_field(got.body, "code_verifier");
    assert_non_null(verifier);
    assert_int_equal(strlen(verifier), 43);
    unsigned char digest[HF_SHA256_LEN];
    hf_sha256(verifier, strlen(verifier), digest);
    char challenge[64];
    api_base64url_encode(digest, sizeof digest, challenge);
    assert_string_equal(challenge, s.challenge);
    /* Byte for byte, as the connector encodes a form. */
    char want[1024];
    snprintf(want, sizeof want,
             "grant_type=authorization_code&code=c0de%%2F%%2B+x&redirect_uri=https%%3A%%2F%%2F"
             "admin.example.test%%2Fapi%%2Fintegrations%%2Fhubspot%%2Foauth%%2Fcallback"
             "&code_verifier=%s&client_id=" HUBSPOT_CLIENT_ID
             "&client_secret=" HUBSPOT_CLIENT_SECRET,
             verifier);
    assert_string_equal(got.body, want);
    free(verifier);

    /* The connection: the placeholder filled in, active, with the token's scopes and expiry. */
    assert_sql("9100001|active|{crm.objects.contacts.read,automation}|{crm.objects.contacts.read,"
               "crm.objects.contacts.write,automation}|admin@oauthok|1|1",
               "SELECT account || '|' || status || '|' || granted_scopes::text || '|' ||"
               " requested_scopes::text || '|' || connected_by || '|' || token_version || '|' ||"
               " count(*) OVER () FROM connections WHERE tenant_id = $1 AND connector = $2",
               t.id, "hubspot");
    assert_sql("true|true",
               "SELECT (token_expires_at = connected_at + interval '1800 seconds') || '|' ||"
               " (token_expires_at BETWEEN now() + interval '1800 seconds' - interval '2 minutes'"
               " AND now() + interval '1800 seconds') FROM connections WHERE tenant_id = $1",
               t.id, NULL);
    expect_sealed(t.id, "9100001", "access", access);
    expect_sealed(t.id, "9100001", "refresh", refresh);

    /* One audit row for the connection, on behalf of the admin who started. */
    assert_sql("integration.oauth_started,integration.connected",
               "SELECT string_agg(action, ',' ORDER BY id) FROM audit_log WHERE tenant_id = $1",
               t.id, NULL);
    assert_sql("admin@oauthok|connection|true|hubspot|9100001|active|oauth|"
               "[\"crm.objects.contacts.read\", \"automation\"]",
               "SELECT a.actor || '|' || a.subject_type || '|' || (a.subject_id = c.id::text) ||"
               " '|' || (a.detail->>'connector') || '|' || (a.detail->>'account') || '|' ||"
               " (a.detail->>'status') || '|' || (a.detail->>'via') || '|' ||"
               " (a.detail->'granted_scopes')::text FROM audit_log a JOIN connections c"
               " ON c.tenant_id = a.tenant_id WHERE a.tenant_id = $1"
               " AND a.action = 'integration.connected'",
               t.id, NULL);

    /* The view shows the connection, never a token. */
    call(&r, "GET", "/api/integrations/hubspot", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_jstr(r.json, "status", "active");
    assert_jstr(r.json, "account", "9100001");
    assert_jbool(r.json, "connected", true);
    assert_null(strstr(r.body.data, access));
    assert_null(strstr(r.body.data, refresh));
    reply_free(&r);

    expect_state_spent(&s);
}

/* A token that comes with an error status is not taken: 502 saying so (the detail names the
 * status), nothing stored; the state was spent before the exchange, so it cannot be retried. */
static void oauth_callback_token_with_error_status(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "oauthtok400", "production");
    fake_answer(400, "{\"access_token\":\"leak-access-0002\",\"refresh_token\":"
                     "\"leak-refresh-0002\",\"expires_in\":1800,\"hub_id\":9100002}");
    oauth_started s;
    oauth_begin(&t, &s);
    reply r;
    oauth_finish(&r, s.state, "code-0002", NULL);
    expect_error(&r, 502, "token_exchange_failed",
                 "hubspot refused the authorization code (HTTP 400): a token came with a status "
                 "that is not a success");
    assert_null(strstr(r.body.data, "leak-"));
    reply_free(&r);
    assert_int_equal(fake_count(), 1);
    assert_form(fake_at(0).body, "code", "code-0002");
    expect_nothing_stored(&t, "9100002");
    expect_state_spent(&s);
}

/* The token endpoint refuses the code (RFC 6749 error, with or without a stray access token, on
 * a 400 or even a 200): 502 with the platform's reason; nothing stored; the state is spent. */
static void oauth_callback_refused_code(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "oauthrefused", "production");
    static const struct {
        int status;
        const char *body, *detail;
    } cases[] = {
        {400,
         "{\"error\":\"invalid_grant\",\"error_description\":\"authorization code expired\","
         "\"hub_id\":9100003}",
         "hubspot refused the authorization code (HTTP 400): token endpoint error: invalid_grant: "
         "authorization code expired"},
        {400, "{\"access_token\":\"x\",\"error\":\"invalid_grant\",\"hub_id\":9100003}",
         "hubspot refused the authorization code (HTTP 400): token endpoint error: invalid_grant"},
        {200, "{\"access_token\":\"x\",\"error\":\"invalid_grant\",\"hub_id\":9100003}",
         "hubspot refused the authorization code (HTTP 200): token endpoint error: invalid_grant"},
        {400, "{\"status\":\"BAD_AUTH_CODE\",\"message\":\"missing or unknown auth code\"}",
         "hubspot refused the authorization code (HTTP 400): token endpoint error: BAD_AUTH_CODE: "
         "missing or unknown auth code"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fake_answer(cases[i].status, cases[i].body);
        oauth_started s;
        oauth_begin(&t, &s);
        reply r;
        oauth_finish(&r, s.state, "code-0003", NULL);
        expect_error(&r, 502, "token_exchange_failed", cases[i].detail);
        reply_free(&r);
        assert_int_equal(fake_count(), 1);
        assert_form(fake_at(0).body, "grant_type", "authorization_code");
        assert_sql("integration.oauth_started",
                   "SELECT string_agg(DISTINCT action, ',') FROM audit_log WHERE tenant_id = $1",
                   t.id, NULL);
        assert_int_equal(
            sql_long("SELECT count(*) FROM audit_log WHERE tenant_id = $1", t.id, NULL),
            (long)i + 1);
        assert_sql("pending|true|true|1",
                   "SELECT status || '|' || (account IS NULL) || '|' || (access_token_enc IS NULL"
                   " AND refresh_token_enc IS NULL AND token_expires_at IS NULL) || '|' ||"
                   " count(*) OVER () FROM connections WHERE tenant_id = $1",
                   t.id, NULL);
        assert_int_equal(
            sql_long("SELECT count(*) FROM connections WHERE account = $1", "9100003", NULL), 0);
        expect_state_spent(&s);
    }
}

/* An absurd expires_in is stored as at most a year (ENGINE_OAUTH_MAX_EXPIRES_S); without a
 * refresh token none is stored. Asked for JSON, the callback answers with the integration. */
static void oauth_callback_caps_expires_in(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "oauthcap", "production");
    static const char access[] = "hs-access-0004-abcdef";
    fake_answer(200, "{\"access_token\":\"hs-access-0004-abcdef\",\"expires_in\":9000000000000,"
                     "\"hub_id\":\"9100004\"}");
    oauth_started s;
    oauth_begin(&t, &s);
    reply r;
    oauth_finish(&r, s.state, "code-0004", "Accept: application/json");
    expect_status(&r, 200);
    assert_jstr(r.json, "connected", "hubspot");
    hf_json in = hf_json_get(r.json, "integration");
    assert_jstr(in, "connector", "hubspot");
    assert_jstr(in, "status", "active");
    assert_jstr(in, "account", "9100004");
    assert_jbool(in, "connected", true);
    assert_int_equal(hf_json_len(hf_json_get(in, "granted_scopes")), 3); /* none in the answer */
    hf_json conns = hf_json_get(in, "connections");
    assert_int_equal(hf_json_len(conns), 1);
    assert_jbool(hf_json_at(conns, 0), "has_refresh_token", false);
    assert_null(strstr(r.body.data, access));
    reply_free(&r);
    assert_int_equal(fake_count(), 1);

    char cap[32];
    snprintf(cap, sizeof cap, "%lld", (long long)ENGINE_OAUTH_MAX_EXPIRES_S);
    assert_sql("true|true|true",
               "SELECT (token_expires_at = connected_at + make_interval(secs => $2::double"
               " precision)) || '|' || (token_expires_at BETWEEN now() + make_interval(secs =>"
               " $2::double precision) - interval '2 minutes' AND now() + make_interval(secs =>"
               " $2::double precision)) || '|' || (refresh_token_enc IS NULL) FROM connections"
               " WHERE tenant_id = $1 AND status = 'active'",
               t.id, cap);
    expect_sealed(t.id, "9100004", "access", access);
    expect_state_spent(&s);
}

/* ---- catalog_api.c -------------------------------------------------------------------------- */

/* The catalog: the six connectors exactly as loaded from schemas/catalog, a strong ETag of the
 * bytes with a 304 for If-None-Match (weak or strong), private caching; admins only. */
static void catalog_lists_six_connectors(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "catalog", "production");
    char err[256];
    hf_catalog *cat = hf_catalog_load(hf_catalog_default_dir(), err, sizeof err);
    assert_non_null(cat);
    size_t len = 0;
    const char *json = hf_catalog_json(cat, &len);

    reply r;
    char h[128];
    call(&r, "GET", "/api/workflows/catalog", t.admin, NULL, NULL);
    expect_status(&r, 200);
    assert_int_equal(r.body.len, len);
    assert_memory_equal(r.body.data, json, len);
    hf_json connectors = hf_json_get(r.json, "connectors");
    static const char *const ids[] = {"xero", "quickbooks", "hubspot", "klaviyo", "twilio", "meta"};
    assert_int_equal(hf_json_len(connectors), 6);
    for (size_t i = 0; i < 6; i++) {
        hf_json k = hf_json_at(connectors, i);
        assert_jstr(k, "id", ids[i]);
        assert_non_null(jstr(k, "category"));
        assert_non_null(jstr(k, "availability"));
        hf_json actions = hf_json_get(k, "actions");
        assert_true(hf_json_len(actions) > 0);
        for (size_t a = 0; a < hf_json_len(actions); a++) {
            hf_json sim = hf_json_get(hf_json_at(actions, a), "simulatable");
            assert_true(YAJL_IS_TRUE(sim) || YAJL_IS_FALSE(sim));
        }
        assert_true(hf_json_len(hf_json_get(k, "webhook_events")) > 0);
    }
    unsigned char digest[HF_SHA256_LEN];
    hf_sha256(json, len, digest);
    char etag[2 * HF_SHA256_LEN + 3];
    etag[0] = '"';
    hf_hex_encode(digest, sizeof digest, etag + 1);
    etag[2 * HF_SHA256_LEN + 1] = '"';
    etag[2 * HF_SHA256_LEN + 2] = '\0';
    assert_string_equal(reply_header(&r, "ETag", h, sizeof h), etag);
    assert_string_equal(reply_header(&r, "Cache-Control", h, sizeof h),
                        "private, max-age=60, must-revalidate");
    assert_string_equal(reply_header(&r, "Vary", h, sizeof h), "Authorization");
    reply_free(&r);

    char inm[200];
    snprintf(inm, sizeof inm, "If-None-Match: \"other\", %s", etag);
    call(&r, "GET", "/api/workflows/catalog", t.admin, NULL, inm);
    expect_status(&r, 304);
    assert_int_equal(r.body.len, 0);
    reply_free(&r);
    snprintf(inm, sizeof inm, "If-None-Match: W/%s", etag);
    call(&r, "GET", "/api/workflows/catalog", t.admin, NULL, inm);
    expect_status(&r, 304);
    reply_free(&r);
    call(&r, "GET", "/api/workflows/catalog", t.admin, NULL, "If-None-Match: \"other\"");
    expect_status(&r, 200);
    assert_int_equal(r.body.len, len);
    reply_free(&r);

    call(&r, "GET", "/api/workflows/catalog", t.viewer, NULL, NULL);
    expect_error(&r, 403, "forbidden", "only admins of the branch may use this API");
    reply_free(&r);
    call(&r, "GET", "/api/workflows/catalog", NULL, NULL, NULL);
    expect_error(&r, 401, "unauthorized", "a bearer token is required");
    reply_free(&r);
    hf_catalog_free(cat);
}

/* ---- review: confirmed bugs ------------------------------------------------------------------ */

/* from keeps its microseconds: a run created a fraction of a millisecond before it is out. */
static void runs_from_keeps_microseconds(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "bugfrom", "production");
    char *wf = workflow_insert(t.id, "F", DEF_DELAY("F", 1), NULL, false);
    char *before = run_insert(t.id, wf, "hubspot:f1", "failed", "2024-05-01T10:00:00.123400Z");
    char *after = run_insert(t.id, wf, "hubspot:f2", "failed", "2024-05-01T10:00:00.123500Z");
    char url[256];
    snprintf(url, sizeof url, "/api/workflows/%s/runs?from=2024-05-01T10:00:00.123456Z", wf);
    reply r;
    call(&r, "GET", url, t.admin, NULL, NULL);
    expect_status(&r, 200);
    hf_json list = hf_json_get(r.json, "runs");
    if (hf_json_len(list) != 1)
        fail_msg("from=...123456Z: want only the run at .123500, got %s", r.body.data);
    assert_jstr(hf_json_at(list, 0), "id", after);
    reply_free(&r);
    free(wf);
    free(before);
    free(after);
}

/* to (exclusive) keeps its microseconds: a run created just before it is in. */
static void runs_to_keeps_microseconds(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "bugto", "production");
    char *wf = workflow_insert(t.id, "T", DEF_DELAY("T", 1), NULL, false);
    char *before = run_insert(t.id, wf, "hubspot:t1", "failed", "2024-05-01T10:00:00.123400Z");
    char *after = run_insert(t.id, wf, "hubspot:t2", "failed", "2024-05-01T10:00:00.123500Z");
    char url[256];
    snprintf(url, sizeof url, "/api/workflows/%s/runs?to=2024-05-01T10:00:00.123456Z", wf);
    reply r;
    call(&r, "GET", url, t.admin, NULL, NULL);
    expect_status(&r, 200);
    hf_json list = hf_json_get(r.json, "runs");
    if (hf_json_len(list) != 1)
        fail_msg("to=...123456Z: want the run at .123400, got %s", r.body.data);
    assert_jstr(hf_json_at(list, 0), "id", before);
    reply_free(&r);
    free(wf);
    free(before);
    free(after);
}

/* A tampered cursor (a time with an offset PostgreSQL refuses, +16:00) is a 400, not a 500. */
static void runs_tampered_cursor_is_400(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "bugcur", "production");
    char *wf = workflow_insert(t.id, "C", DEF_DELAY("C", 1), NULL, false);
    const char plain[] = "2024-05-01T10:00:00+16:00|" MISSING_UUID;
    char cursor[128];
    api_base64url_encode((const unsigned char *)plain, strlen(plain), cursor);
    char url[256];
    snprintf(url, sizeof url, "/api/workflows/%s/runs?cursor=%s", wf, cursor);
    reply r;
    call(&r, "GET", url, t.admin, NULL, NULL);
    expect_error(&r, 400, "invalid_parameter",
                 "cursor: is not a cursor of this listing (pass next_cursor back unchanged)");
    reply_free(&r);
    free(wf);
}

static atomic_int second_exited;
static int second_rc;

static void *second_serve_main(void *arg)
{
    (void)arg;
    static char name[] = "serve";
    char *argv[] = {name, NULL};
    second_rc = engine_cmd_serve(1, argv);
    atomic_store(&second_exited, 1);
    return NULL;
}

/* With only api/jwt_key.previous left, serve refuses to start rather than trust the retired key. */
static void serve_refuses_only_previous_jwt_key(void **state)
{
    (void)state;
    char dir[64], path[160];
    snprintf(dir, sizeof dir, "/tmp/hf_unit_api_prev_XXXXXX");
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/api", dir);
    assert_int_equal(mkdir(path, 0700), 0);
    snprintf(path, sizeof path, "%s/api/jwt_key.previous", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(JWT_KEY "\n", f);
    fclose(f);
    char *listen = xstrdup(getenv("HOOKFLOW_API_LISTEN"));
    setenv("HOOKFLOW_SECRETS_DIR", dir, 1);
    setenv("HOOKFLOW_API_LISTEN", "127.0.0.1:0", 1);
    atomic_store(&second_exited, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, second_serve_main, NULL), 0);
    int64_t deadline = hf_now_ms() + 5000;
    while (hf_now_ms() < deadline && !atomic_load(&second_exited)) {
        struct timespec pause = {0, 20 * 1000 * 1000};
        nanosleep(&pause, NULL);
    }
    bool started = !atomic_load(&second_exited);
    if (started)
        pthread_kill(th, SIGTERM);
    pthread_join(th, NULL);
    setenv("HOOKFLOW_SECRETS_DIR", secrets_dir, 1);
    setenv("HOOKFLOW_API_LISTEN", listen, 1);
    free(listen);
    unlink(path);
    snprintf(path, sizeof path, "%s/api", dir);
    rmdir(path);
    rmdir(dir);
    if (started)
        fail_msg("serve ran with api/jwt_key missing and only api/jwt_key.previous present");
    assert_int_not_equal(second_rc, 0);
}

/* Disabling an integration spends its unfinished OAuth states: that login cannot complete. */
static void disable_revokes_unfinished_oauth_state(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "bugdisable", "production");
    reply r;
    call(&r, "POST", "/api/integrations/hubspot/oauth/start", t.admin, NULL, NULL);
    expect_status(&r, 201);
    char st[64];
    snprintf(st, sizeof st, "%s", jstr(r.json, "state"));
    reply_free(&r);
    call(&r, "POST", "/api/integrations/hubspot/disable", t.admin, NULL, NULL);
    expect_status(&r, 200);
    reply_free(&r);
    assert_int_equal(sql_long("SELECT count(*) FROM connections WHERE tenant_id = $1", t.id, NULL),
                     0);
    /* The authorisation the admin just dropped must not complete later. */
    char path[256];
    snprintf(path, sizeof path, "/api/integrations/hubspot/oauth/callback?state=%s&code=abc", st);
    call(&r, "GET", path, NULL, NULL, NULL);
    expect_error(&r, 400, "invalid_state",
                 "unknown, expired or already used state: start the authorisation again");
    reply_free(&r);
}

/* Simulate fails a node whose rendered params the connector's build refuses, as the run would. */
static void simulate_fails_params_the_connector_refuses(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "simbuild", "production");
    /* to renders null for an event without phone: twilio's build (what prepare_call runs) fails
     * the node with a missing required param, before any call. */
    static const char def[] =
        "{\"name\":\"Sim build\",\"trigger\":{\"connector\":\"hubspot\",\"event\":"
        "\"contact.created\"},\"nodes\":[{\"id\":\"sms\",\"type\":\"action\",\"connector\":"
        "\"twilio\",\"action\":\"send_message\",\"params\":{\"to\":\"{{event.payload.phone}}\","
        "\"from\":\"+14155559876\",\"body\":\"hi\"}}],\"edges\":[]}";
    char *wf = workflow_insert(t.id, "Sim build", def, NULL, false);
    char err[256] = "";
    hf_json params = hf_json_parse("{\"to\":null,\"from\":\"+14155559876\",\"body\":\"hi\"}", 45,
                                   err, sizeof err);
    assert_non_null(params);
    connector_conn cc = {.account = "AC1", .access_token = "tok"};
    connector_request req;
    assert_int_equal(engine_connector_twilio.build("send_message", params, &cc,
                                                   "http://127.0.0.1:9", "k", &req, err,
                                                   sizeof err),
                     -1);
    hf_json_free(params);
    char path[128];
    snprintf(path, sizeof path, "/api/workflows/%s/simulate", wf);
    reply r;
    call(&r, "POST", path, t.admin, "{\"event\":{\"objectId\":1}}", NULL);
    expect_status(&r, 200);
    hf_json node = hf_json_at(hf_json_get(r.json, "nodes"), 0);
    assert_jstr(node, "id", "sms");
    if (!jstr(node, "status") || strcmp(jstr(node, "status"), "failed") != 0)
        fail_msg("the engine fails this node (%s); simulate says: %s", err, r.body.data);
    assert_jstr(r.json, "status", "failed");
    reply_free(&r);
    free(wf);
}

/* ---- review 2: the contract (schemas/openapi.yaml) against the server ------------------------ */

/* A query member without '=' ("&verbose") is a key with an empty value: the other members still
 * count (the status filter, limit's bounds), they were all dropped. */
static void query_with_bare_key_keeps_its_filters(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "bugquery", "production");
    char *wf = workflow_insert(t.id, "Q", DEF_DELAY("Q", 1), NULL, false);
    char *failed = run_insert(t.id, wf, "hubspot:q1", "failed", "2024-02-03T00:00:00Z");
    char *ok = run_insert(t.id, wf, "hubspot:q2", "succeeded", "2024-02-04T00:00:00Z");
    char url[256];
    snprintf(url, sizeof url, "/api/workflows/%s/runs?status=failed&verbose", wf);
    reply r;
    call(&r, "GET", url, t.admin, NULL, NULL);
    if (r.status == 200) {
        hf_json runs = hf_json_get(r.json, "runs");
        for (size_t i = 0; i < hf_json_len(runs); i++)
            if (strcmp(jstr(hf_json_at(runs, i), "status"), "failed") != 0)
                fail_msg("status=failed&verbose listed a %s run: %s",
                         jstr(hf_json_at(runs, i), "status"), r.body.data);
    } else {
        expect_error_as(&r, 400, "invalid_parameter", "", false);
    }
    reply_free(&r);
    call(&r, "GET", "/api/workflows?limit=0&x", t.admin, NULL, NULL);
    expect_error_as(&r, 400, "invalid_parameter", "limit", false);
    reply_free(&r);
    free(wf);
    free(failed);
    free(ok);
}

/* name: maxLength 200 in openapi.yaml, which JSON Schema counts in characters: 150 'é' (300
 * bytes) is a valid name (longer ones are refused: bad_bodies_are_refused). */
static void name_length_counts_characters(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "bugname", "production");
    hf_buf name = {0}, body = {0};
    for (int i = 0; i < 150; i++)
        hf_buf_puts(&name, "\xc3\xa9");
    hf_buf_puts(&body, "{\"name\":\"");
    hf_buf_puts(&body, name.data);
    hf_buf_puts(&body, "\",\"definition\":" DEF_DELAY("Short", 1) "}");
    reply r;
    call(&r, "POST", "/api/workflows", t.admin, body.data, NULL);
    expect_status(&r, 201);
    assert_jstr(r.json, "name", name.data);
    reply_free(&r);
    hf_buf_free(&name);
    hf_buf_free(&body);
}

/* from/to are RFC 3339 date-times, whose offset is required: a time without one, or with
 * '+01', is 400 instead of being read as UTC. */
static void runs_from_without_offset_is_400(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "bugoffset", "production");
    char *wf = workflow_insert(t.id, "O", DEF_DELAY("O", 1), NULL, false);
    char url[256];
    snprintf(url, sizeof url, "/api/workflows/%s/runs?from=2024-02-03T00:00:00", wf);
    reply r;
    call(&r, "GET", url, t.admin, NULL, NULL);
    expect_error(&r, 400, "invalid_parameter",
                 "from: \"2024-02-03T00:00:00\" is not an RFC 3339 date-time");
    reply_free(&r);
    free(wf);
}

/* Retry's from is "start" or "failed_node", or left out: null is 400 like every other member's
 * null, not the default. */
static void retry_from_null_is_400(void **state)
{
    (void)state;
    tenant t;
    tenant_make(&t, "bugnull", "production");
    char *wf = workflow_insert(t.id, "N", DEF_DELAY("N", 1), NULL, false);
    char *run = run_insert(t.id, wf, "hubspot:n1", "failed", "2024-02-03T00:00:00Z");
    char path[128];
    snprintf(path, sizeof path, "/api/runs/%s/retry", run);
    reply r;
    call(&r, "POST", path, t.admin, "{\"from\":null}", NULL);
    expect_error_as(&r, 400, "invalid_field", "from", false);
    reply_free(&r);
    assert_sql("failed|1", "SELECT status || '|' || generation FROM runs WHERE id = $1", run, NULL);
    free(run);
    free(wf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unauthenticated_requests_get_401),
        cmocka_unit_test(non_admins_get_403),
        cmocka_unit_test(unknown_routes_and_methods),
        cmocka_unit_test(bad_bodies_are_refused),
        cmocka_unit_test(other_tenants_objects_are_404),
        cmocka_unit_test(create_writes_version_and_audit),
        cmocka_unit_test(invalid_workflows_write_nothing),
        cmocka_unit_test(drafts_are_saved_and_validated),
        cmocka_unit_test(update_creates_new_version),
        cmocka_unit_test(changes_waiting_behind_another_change_are_made_after_it),
        cmocka_unit_test(enable_needs_connection_and_scopes),
        cmocka_unit_test(list_pages_with_cursor),
        cmocka_unit_test(delete_is_soft_and_audited),
        cmocka_unit_test(runs_list_filters_and_pages),
        cmocka_unit_test(run_get_shows_attempts),
        cmocka_unit_test(integrations_list_hides_tokens),
        cmocka_unit_test(connections_disable_and_enable),
        cmocka_unit_test(twilio_credentials_are_sealed),
        cmocka_unit_test(oauth_start_and_state),
        cmocka_unit_test(oauth_callback_exchanges_code),
        cmocka_unit_test(oauth_callback_token_with_error_status),
        cmocka_unit_test(oauth_callback_refused_code),
        cmocka_unit_test(oauth_callback_caps_expires_in),
        cmocka_unit_test(catalog_lists_six_connectors),
        cmocka_unit_test(runs_from_keeps_microseconds),
        cmocka_unit_test(runs_to_keeps_microseconds),
        cmocka_unit_test(runs_tampered_cursor_is_400),
        cmocka_unit_test(serve_refuses_only_previous_jwt_key),
        cmocka_unit_test(disable_revokes_unfinished_oauth_state),
        cmocka_unit_test(simulate_fails_params_the_connector_refuses),
        cmocka_unit_test(query_with_bare_key_keeps_its_filters),
        cmocka_unit_test(name_length_counts_characters),
        cmocka_unit_test(runs_from_without_offset_is_400),
        cmocka_unit_test(retry_from_null_is_400),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
