/* secrets: the secure configuration store, one file per secret under HOOKFLOW_SECRETS_DIR. */
#include "secrets.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "log.h"

typedef struct secret {
    char *path; /* relative to the store's root, '/'-separated */
    char *value;
    size_t len;
} secret;

struct hf_secrets {
    secret *items;
    size_t n, cap;
};

hf_secrets *hf_secrets_new(void)
{
    return xcalloc(1, sizeof(hf_secrets));
}

void hf_secrets_set(hf_secrets *s, const char *path, const void *value, size_t len)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->items[i].path, path) == 0) {
            explicit_bzero(s->items[i].value, s->items[i].len);
            free(s->items[i].value);
            s->items[i].value = xstrndup(value, len);
            s->items[i].len = len;
            hf_log_register_secret(value, len);
            return;
        }
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 16;
        s->items = xrealloc(s->items, s->cap * sizeof *s->items);
    }
    s->items[s->n++] = (secret){xstrdup(path), xstrndup(value, len), len};
    hf_log_register_secret(value, len);
}

void hf_secrets_free(hf_secrets *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        memset(s->items[i].value, 0, s->items[i].len);
        free(s->items[i].value);
        free(s->items[i].path);
    }
    free(s->items);
    free(s);
}

/* Walks root/rel recursively (depth-limited), loading regular files. */
static int load_dir(hf_secrets *s, const char *root, const char *rel, int depth, char *err,
                    size_t errlen)
{
    char *dirpath = *rel ? xasprintf("%s/%s", root, rel) : xstrdup(root);
    DIR *d = opendir(dirpath);
    int rc = 0;
    if (!d) {
        rc = hf_err(err, errlen, "cannot read secrets directory %s: %s", dirpath, strerror(errno));
        free(dirpath);
        return rc;
    }
    struct dirent *e;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        /* Kubernetes mounts secrets through "..data" symlinks; hidden entries are its plumbing. */
        if (e->d_name[0] == '.')
            continue;
        char *child_rel = *rel ? xasprintf("%s/%s", rel, e->d_name) : xstrdup(e->d_name);
        char *child = xasprintf("%s/%s", root, child_rel);
        struct stat st;
        if (stat(child, &st) != 0) {
            rc = hf_err(err, errlen, "cannot stat secret %s: %s", child, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            if (depth < 4)
                rc = load_dir(s, root, child_rel, depth + 1, err, errlen);
        } else if (S_ISREG(st.st_mode)) {
            size_t len;
            char *value = hf_read_file(child, &len, err, errlen);
            if (!value) {
                rc = -1;
            } else {
                /* Files written by editors and `echo` end in a newline ("\n" or "\r\n") that is
                 * not the secret; a lone "\r" is the secret's own last byte. */
                size_t keep = len;
                if (keep && value[keep - 1] == '\n') {
                    keep--;
                    if (keep && value[keep - 1] == '\r')
                        keep--;
                }
                hf_secrets_set(s, child_rel, value, keep);
                explicit_bzero(value, len);
                free(value);
            }
        }
        free(child);
        free(child_rel);
    }
    closedir(d);
    free(dirpath);
    return rc;
}

hf_secrets *hf_secrets_load(const char *dir, char *err, size_t errlen)
{
    hf_secrets *s = hf_secrets_new();
    struct stat st;
    if (!dir || !*dir || (stat(dir, &st) != 0 && errno == ENOENT))
        return s;
    if (load_dir(s, dir, "", 0, err, errlen) != 0) {
        hf_secrets_free(s);
        return NULL;
    }
    return s;
}

static const secret *find(const hf_secrets *s, const char *path)
{
    for (size_t i = 0; i < s->n; i++)
        if (strcmp(s->items[i].path, path) == 0)
            return &s->items[i];
    return NULL;
}

size_t hf_secrets_get(const hf_secrets *s, const char *path, const char *vals[2], size_t lens[2])
{
    size_t n = 0;
    const secret *cur = find(s, path);
    if (cur && cur->len) {
        vals[n] = cur->value;
        lens[n++] = cur->len;
    }
    /* Looked up on every webhook: no formatting. */
    static const char suffix[] = ".previous";
    char prev_path[512];
    size_t len = strlen(path);
    if (len + sizeof suffix > sizeof prev_path)
        return n;
    memcpy(prev_path, path, len);
    memcpy(prev_path + len, suffix, sizeof suffix);
    const secret *prev = find(s, prev_path);
    if (prev && prev->len) {
        vals[n] = prev->value;
        lens[n++] = prev->len;
    }
    return n;
}

bool hf_secrets_has(const hf_secrets *s, const char *path)
{
    const secret *cur = find(s, path);
    return cur && cur->len;
}

size_t hf_secrets_count(const hf_secrets *s)
{
    return s->n;
}
