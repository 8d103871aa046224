/* crypto: HMAC-SHA1/SHA256, SHA-256, base64, hex and constant-time compare (OpenSSL). */
#ifndef HF_CRYPTO_H
#define HF_CRYPTO_H

#include <stdbool.h>
#include <stddef.h>
#include "util.h"

#define HF_SHA1_LEN 20
#define HF_SHA256_LEN 32

void hf_hmac_sha1(const void *key, size_t keylen, const void *msg, size_t msglen,
                  unsigned char out[HF_SHA1_LEN]);
void hf_hmac_sha256(const void *key, size_t keylen, const void *msg, size_t msglen,
                    unsigned char out[HF_SHA256_LEN]);
void hf_sha256(const void *msg, size_t msglen, unsigned char out[HF_SHA256_LEN]);

/* Streaming HMAC/SHA-256 for messages made of several parts (e.g. method + URL + body + ts). */
typedef struct hf_mac hf_mac;
typedef enum { HF_MAC_HMAC_SHA1, HF_MAC_HMAC_SHA256, HF_MAC_SHA256 } hf_mac_kind;
hf_mac *hf_mac_new(hf_mac_kind kind, const void *key, size_t keylen); /* key ignored for SHA256 */
void hf_mac_update(hf_mac *m, const void *p, size_t n);
/* Writes the digest to out (>= 32 bytes), returns its length, and frees m. */
size_t hf_mac_final(hf_mac *m, unsigned char *out);

/* Encoders write a NUL-terminated string into out and return its length; out must hold
 * hf_base64_len(n) / 2n+1 bytes. */
size_t hf_base64_len(size_t n);
size_t hf_base64_encode(const unsigned char *in, size_t n, char *out);
/* Decodes standard, canonical base64 (with padding, no leftover bits); returns the decoded
 * length or -1 if malformed. */
long hf_base64_decode(const char *in, size_t n, unsigned char *out, size_t outcap);
size_t hf_hex_encode(const unsigned char *in, size_t n, char *out);
/* The value of one hex digit (either case), or -1. */
int hf_hex_digit(int c);
/* Decodes exactly 2 * outlen hex digits (hexlen must match); false on any other length or a
 * non-hex character. */
bool hf_hex_decode(const char *hex, size_t hexlen, unsigned char *out, size_t outlen);

/* Compares two byte strings in time that depends only on their lengths. */
bool hf_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

/* Fills out with cryptographically random bytes; aborts if the RNG fails. */
void hf_random_bytes(void *out, size_t n);

/* AES-256-GCM: out = 12-byte nonce || ciphertext || 16-byte tag. Returns malloc'd buffer. */
unsigned char *hf_aead_seal(const unsigned char key[32], const void *plain, size_t n,
                            const void *aad, size_t aadlen, size_t *outlen);
/* Reverses hf_aead_seal; NULL if the input was tampered with or the key is wrong. */
unsigned char *hf_aead_open(const unsigned char key[32], const void *sealed, size_t n,
                            const void *aad, size_t aadlen, size_t *outlen);

#endif
