/* crypto: HMAC-SHA1/SHA256, SHA-256, base64, hex and constant-time compare (OpenSSL). */
#include "crypto.h"

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Signature checks run the same few keys again and again: each thread keeps a keyed HMAC context
 * for its last few (digest, key) pairs and restarts it for every message. That skips what HMAC()
 * does on every call in OpenSSL 3: fetching the algorithm (under a lock shared by all threads) and
 * the key schedule. */
#define MAC_SLOTS 4
#define MAC_KEY_MAX 128

typedef struct mac_slot {
    EVP_MAC_CTX *ctx;
    const char *digest;
    size_t keylen;
    unsigned char key[MAC_KEY_MAX];
} mac_slot;

typedef struct mac_cache {
    mac_slot slot[MAC_SLOTS];
    unsigned next; /* the slot replaced next */
} mac_cache;

static pthread_once_t mac_once = PTHREAD_ONCE_INIT;
static pthread_key_t mac_key;
static EVP_MAC *hmac_alg; /* fetched once, kept for the life of the process */

static void mac_cache_free(void *arg)
{
    mac_cache *c = arg;
    for (int i = 0; i < MAC_SLOTS; i++)
        EVP_MAC_CTX_free(c->slot[i].ctx);
    OPENSSL_cleanse(c, sizeof *c);
    free(c);
}

static void mac_init(void)
{
    pthread_key_create(&mac_key, mac_cache_free);
    hmac_alg = EVP_MAC_fetch(NULL, "HMAC", NULL);
    if (!hmac_alg)
        hf_die("crypto: OpenSSL has no HMAC");
}

/* The thread's keyed context for digest and key, ready for a new message. */
static EVP_MAC_CTX *keyed_mac(const char *digest, const void *key, size_t keylen)
{
    pthread_once(&mac_once, mac_init);
    mac_cache *c = pthread_getspecific(mac_key);
    if (!c) {
        c = xcalloc(1, sizeof *c);
        pthread_setspecific(mac_key, c);
    }
    for (int i = 0; i < MAC_SLOTS; i++) {
        mac_slot *s = &c->slot[i];
        if (s->ctx && s->digest == digest && s->keylen == keylen &&
            (keylen == 0 || memcmp(s->key, key, keylen) == 0)) {
            /* A NULL key restarts the context with the key it already has. */
            if (!EVP_MAC_init(s->ctx, NULL, 0, NULL))
                hf_die("crypto: cannot restart HMAC");
            return s->ctx;
        }
    }
    mac_slot *s = &c->slot[c->next];
    c->next = (c->next + 1) % MAC_SLOTS;
    if (!s->ctx && !(s->ctx = EVP_MAC_CTX_new(hmac_alg)))
        hf_die("crypto: out of memory");
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)digest, 0),
        OSSL_PARAM_construct_end()};
    /* OpenSSL refuses a NULL key even when it is empty. */
    static const unsigned char empty = 0;
    if (!EVP_MAC_init(s->ctx, keylen ? key : &empty, keylen, params))
        hf_die("crypto: cannot initialise HMAC");
    s->digest = digest;
    s->keylen = keylen;
    if (keylen)
        memcpy(s->key, key, keylen);
    return s->ctx;
}

static void hmac(const char *digest, const EVP_MD *md, const void *key, size_t keylen,
                 const void *msg, size_t msglen, unsigned char *out, size_t outlen)
{
    if (keylen > MAC_KEY_MAX) {
        unsigned int len = (unsigned int)outlen;
        HMAC(md, key, (int)keylen, msg, msglen, out, &len);
        return;
    }
    EVP_MAC_CTX *ctx = keyed_mac(digest, key, keylen);
    size_t len = 0;
    if (!EVP_MAC_update(ctx, msg, msglen) || !EVP_MAC_final(ctx, out, &len, outlen))
        hf_die("crypto: HMAC failed");
}

void hf_hmac_sha1(const void *key, size_t keylen, const void *msg, size_t msglen,
                  unsigned char out[HF_SHA1_LEN])
{
    static const char digest[] = "SHA1";
    hmac(digest, EVP_sha1(), key, keylen, msg, msglen, out, HF_SHA1_LEN);
}

void hf_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                    unsigned char out[HF_SHA256_LEN])
{
    static const char digest[] = "SHA256";
    hmac(digest, EVP_sha256(), key, keylen, msg, msglen, out, HF_SHA256_LEN);
}

void hf_sha256(const void *msg, size_t msglen, unsigned char out[HF_SHA256_LEN])
{
    unsigned int len = HF_SHA256_LEN;
    EVP_Digest(msg, msglen, out, &len, EVP_sha256(), NULL);
}

struct hf_mac {
    hf_mac_kind kind;
    EVP_MD_CTX *md;
    HMAC_CTX *hmac;
};

/* HMAC_CTX is deprecated in OpenSSL 3 but remains the simplest streaming HMAC there is; the
 * EVP_MAC replacement needs a fetched algorithm per call. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
hf_mac *hf_mac_new(hf_mac_kind kind, const void *key, size_t keylen)
{
    hf_mac *m = xcalloc(1, sizeof *m);
    m->kind = kind;
    if (kind == HF_MAC_SHA256) {
        m->md = EVP_MD_CTX_new();
        if (!m->md || !EVP_DigestInit_ex(m->md, EVP_sha256(), NULL))
            hf_die("crypto: cannot initialise SHA-256");
    } else {
        /* HMAC_Init_ex reads a NULL key as "reuse the previous key", which a new context does
         * not have; an absent key is the empty key, as in the one-shot hf_hmac_*. */
        static const unsigned char empty_key[1];
        m->hmac = HMAC_CTX_new();
        if (!m->hmac || !HMAC_Init_ex(m->hmac, key ? key : empty_key, key ? (int)keylen : 0,
                                      kind == HF_MAC_HMAC_SHA1 ? EVP_sha1() : EVP_sha256(), NULL))
            hf_die("crypto: cannot initialise HMAC");
    }
    return m;
}

void hf_mac_update(hf_mac *m, const void *p, size_t n)
{
    if (m->md)
        EVP_DigestUpdate(m->md, p, n);
    else
        HMAC_Update(m->hmac, p, n);
}

size_t hf_mac_final(hf_mac *m, unsigned char *out)
{
    unsigned int len = 0;
    if (m->md) {
        EVP_DigestFinal_ex(m->md, out, &len);
        EVP_MD_CTX_free(m->md);
    } else {
        HMAC_Final(m->hmac, out, &len);
        HMAC_CTX_free(m->hmac);
    }
    free(m);
    return len;
}
#pragma GCC diagnostic pop

size_t hf_base64_len(size_t n)
{
    return 4 * ((n + 2) / 3) + 1;
}

size_t hf_base64_encode(const unsigned char *in, size_t n, char *out)
{
    if (n == 0) {
        out[0] = '\0';
        return 0;
    }
    return (size_t)EVP_EncodeBlock((unsigned char *)out, in, (int)n);
}

long hf_base64_decode(const char *in, size_t n, unsigned char *out, size_t outcap)
{
    static const signed char map[256] = {
        ['A'] = 1,  ['B'] = 2,  ['C'] = 3,  ['D'] = 4,  ['E'] = 5,  ['F'] = 6,  ['G'] = 7,
        ['H'] = 8,  ['I'] = 9,  ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14,
        ['O'] = 15, ['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21,
        ['V'] = 22, ['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28,
        ['c'] = 29, ['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35,
        ['j'] = 36, ['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42,
        ['q'] = 43, ['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49,
        ['x'] = 50, ['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56,
        ['4'] = 57, ['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['+'] = 63,
        ['/'] = 64};
    if (n % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)in[i + k];
            if (c == '=' && i + 4 == n && k >= 2) {
                v[k] = 0;
                pad++;
            } else if (map[c] && !pad) {
                v[k] = map[c] - 1;
            } else {
                return -1;
            }
        }
        unsigned triple = (unsigned)(v[0] << 18 | v[1] << 12 | v[2] << 6 | v[3]);
        /* Canonical only: the bits the padding leaves over must be zero (RFC 4648 3.5). */
        if (pad && (triple & (pad == 1 ? 0xffu : 0xffffu)) != 0)
            return -1;
        size_t take = 3 - (size_t)pad;
        if (o + take > outcap)
            return -1;
        out[o++] = (unsigned char)(triple >> 16);
        if (take > 1)
            out[o++] = (unsigned char)(triple >> 8);
        if (take > 2)
            out[o++] = (unsigned char)triple;
    }
    return (long)o;
}

size_t hf_hex_encode(const unsigned char *in, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * n] = '\0';
    return 2 * n;
}

int hf_hex_digit(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

bool hf_hex_decode(const char *hex, size_t hexlen, unsigned char *out, size_t outlen)
{
    if (hexlen != 2 * outlen)
        return false;
    for (size_t i = 0; i < outlen; i++) {
        int hi = hf_hex_digit((unsigned char)hex[2 * i]),
            lo = hf_hex_digit((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

bool hf_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    if (alen != blen)
        return false;
    return CRYPTO_memcmp(a, b, alen) == 0;
}

void hf_random_bytes(void *out, size_t n)
{
    if (RAND_bytes(out, (int)n) != 1)
        hf_die("crypto: the random number generator failed");
}

#define AEAD_NONCE 12
#define AEAD_TAG 16

unsigned char *hf_aead_seal(const unsigned char key[32], const void *plain, size_t n,
                            const void *aad, size_t aadlen, size_t *outlen)
{
    unsigned char *out = xmalloc(AEAD_NONCE + n + AEAD_TAG);
    hf_random_bytes(out, AEAD_NONCE);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, ok = ctx != NULL;
    ok = ok && EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, out);
    ok = ok && (aadlen == 0 || EVP_EncryptUpdate(ctx, NULL, &len, aad, (int)aadlen));
    ok = ok && EVP_EncryptUpdate(ctx, out + AEAD_NONCE, &len, plain, (int)n);
    ok = ok && EVP_EncryptFinal_ex(ctx, out + AEAD_NONCE + len, &len);
    ok = ok && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, AEAD_TAG, out + AEAD_NONCE + n);
    EVP_CIPHER_CTX_free(ctx);
    if (!ok)
        hf_die("crypto: AES-256-GCM encryption failed");
    *outlen = AEAD_NONCE + n + AEAD_TAG;
    return out;
}

unsigned char *hf_aead_open(const unsigned char key[32], const void *sealed, size_t n,
                            const void *aad, size_t aadlen, size_t *outlen)
{
    if (n < AEAD_NONCE + AEAD_TAG)
        return NULL;
    const unsigned char *in = sealed;
    size_t clen = n - AEAD_NONCE - AEAD_TAG;
    unsigned char *out = xmalloc(clen + 1);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int len = 0, ok = ctx != NULL;
    ok = ok && EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, key, in);
    ok = ok && (aadlen == 0 || EVP_DecryptUpdate(ctx, NULL, &len, aad, (int)aadlen));
    ok = ok && EVP_DecryptUpdate(ctx, out, &len, in + AEAD_NONCE, (int)clen);
    ok = ok &&
         EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, AEAD_TAG, (void *)(in + AEAD_NONCE + clen));
    ok = ok && EVP_DecryptFinal_ex(ctx, out + len, &len) > 0;
    EVP_CIPHER_CTX_free(ctx);
    if (!ok) {
        /* Decrypted before the tag was checked: a real token under the right key and another
         * row's context. It must not outlive the refusal. */
        explicit_bzero(out, clen + 1);
        free(out);
        return NULL;
    }
    out[clen] = '\0';
    *outlen = clen;
    return out;
}
