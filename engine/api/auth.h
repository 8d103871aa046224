/* auth: who is calling the engine API — bearer tokens (JWT, HS256, key from the secrets store)
 * verified here, and the caller's role taken from the tenant's branch role mappings (never from
 * the token). */
#ifndef ENGINE_API_AUTH_H
#define ENGINE_API_AUTH_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

#include "api.h"
#include "util.h"

/* Secret-store path of the HMAC key (the file's bytes, one trailing newline stripped, are the
 * key); a "<path>.previous" file beside it is also accepted, so the key rotates without logging
 * everybody out. RFC 7518 wants at least 256 bits for HS256. */
#define API_JWT_KEY_PATH "api/jwt_key"
#define API_JWT_MIN_KEY_LEN 32

/* Longest token accepted (bytes); longer ones are refused before any decoding. */
#define API_JWT_MAX_LEN 8192
/* Clock skew tolerated on exp and nbf, in seconds. */
#define API_JWT_LEEWAY_S 30

/* Why a token was refused. Every one of them is a 401 for the client; the distinction is for
 * the log and the tests. */
typedef enum {
    API_JWT_OK = 0,
    API_JWT_MALFORMED = -1,     /* not header.payload.signature in base64url, or not JSON objects */
    API_JWT_BAD_ALG = -2,       /* alg is not HS256 (none, RS256, ...), or crit is present */
    API_JWT_BAD_SIGNATURE = -3, /* no key produces this signature */
    API_JWT_EXPIRED = -4,       /* exp is in the past */
    API_JWT_NOT_YET_VALID = -5, /* nbf is in the future */
    API_JWT_BAD_CLAIMS = -6,    /* exp, sub, tenant or branch missing or of the wrong type */
    API_JWT_TOO_LONG = -7,      /* longer than API_JWT_MAX_LEN */
} api_jwt_status;

/* The claims hookflow reads. */
typedef struct api_jwt_claims {
    char sub[256];    /* the user; 1..255 bytes */
    char tenant[40];  /* a canonical uuid */
    char branch[128]; /* 1..127 bytes */
    long long exp;    /* seconds since the epoch */
    long long nbf;    /* 0 when absent */
} api_jwt_claims;

/* Verifies a compact JWS (len bytes): the header's alg must be exactly "HS256" (no "crit"), the
 * signature must be HMAC-SHA256 of "header.payload" under one of the nkeys keys (compared in
 * constant time), exp is required and now_s must be before it, nbf (when present) must not be
 * after now_s (both with API_JWT_LEEWAY_S of skew), and sub, tenant and branch must be present.
 * Base64url is strict: no padding, no stray bits. On success fills *out; otherwise returns the
 * reason with one line in err that never quotes the token. */
HF_MUST_CHECK api_jwt_status api_jwt_verify(const char *token, size_t len,
                                            const unsigned char *const keys[],
                                            const size_t keylens[], size_t nkeys, long long now_s,
                                            api_jwt_claims *out, char *err, size_t errlen);

/* Decodes one base64url part of a JWT (strict, at most 4 KiB decoded) as a JSON object, NULL
 * when it is not one or names a member twice. Verifies nothing: the header and the claims of a
 * token whose signature is someone else's to check (a platform's access token). Caller frees. */
hf_json api_jwt_decode_part(const char *part, size_t n);

/* A short stable name of a status ("expired", "bad_signature", ...), for logs. */
const char *api_jwt_status_name(api_jwt_status s);

/* The token of an Authorization header value "Bearer <token>" (scheme case-insensitive), with
 * its length in *len, or NULL when the header is missing or uses another scheme. */
const char *api_bearer_token(const char *authorization, size_t *len);

/* Fills who from verified claims and the database: the tenant's environment and the role that
 * role_mappings gives (tenant, branch, sub); role stays "" when there is no mapping or no such
 * tenant. Returns HF_PG_OK or the hf_pg error class with err. */
HF_MUST_CHECK int api_principal_load(PGconn *db, const api_jwt_claims *claims, api_principal *who,
                                     char *err, size_t errlen);

/* Base64url without padding (RFC 4648 §5). encode writes a NUL-terminated string into out, which
 * must hold 4 * ceil(n / 3) + 1 bytes, and returns its length. decode is strict (alphabet, no
 * padding, unused bits zero) and returns the decoded length, or -1 when malformed or when it
 * would not fit in outcap. */
size_t api_base64url_encode(const unsigned char *in, size_t n, char *out);
long api_base64url_decode(const char *in, size_t n, unsigned char *out, size_t outcap);

#endif
