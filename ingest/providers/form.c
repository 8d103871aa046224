/* form: application/x-www-form-urlencoded bodies and query strings, decoded into pairs. */
#include "form.h"

#include <stdlib.h>
#include <string.h>

#include "crypto.h"
#include "json.h"

/* Decodes n bytes of s into a malloc'd NUL-terminated string; its length goes to *outlen. */
static char *decode(const char *s, size_t n, size_t *outlen)
{
    char *out = xmalloc(n + 1);
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i], byte;
        if (c == '+') {
            out[o++] = ' ';
        } else if (c == '%' && i + 2 < n && hf_hex_decode(s + i + 1, 2, &byte, 1)) {
            out[o++] = (char)byte;
            i += 2;
        } else {
            out[o++] = (char)c;
        }
    }
    out[o] = '\0';
    *outlen = o;
    return out;
}

void ingest_form_parse(ingest_form *f, const char *s, size_t len)
{
    if (!s || len == 0)
        return;
    size_t start = 0;
    while (start <= len) {
        const char *amp = memchr(s + start, '&', len - start);
        size_t end = amp ? (size_t)(amp - s) : len;
        if (end > start) {
            const char *eq = memchr(s + start, '=', end - start);
            size_t name_end = eq ? (size_t)(eq - s) : end;
            size_t value_start = eq ? name_end + 1 : end;
            if (f->n == f->cap) {
                f->cap = f->cap ? f->cap * 2 : 16;
                f->params = xrealloc(f->params, f->cap * sizeof *f->params);
            }
            ingest_form_param *p = &f->params[f->n++];
            p->name = decode(s + start, name_end - start, &p->name_len);
            p->value = decode(s + value_start, end - value_start, &p->value_len);
        }
        if (!amp)
            break;
        start = end + 1;
    }
}

void ingest_form_free(ingest_form *f)
{
    for (size_t i = 0; i < f->n; i++) {
        free(f->params[i].name);
        free(f->params[i].value);
    }
    free(f->params);
    f->params = NULL;
    f->n = f->cap = 0;
}

const ingest_form_param *ingest_form_find(const ingest_form *f, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < f->n; i++)
        if (f->params[i].name_len == len && memcmp(f->params[i].name, name, len) == 0)
            return &f->params[i];
    return NULL;
}

const char *ingest_form_get(const ingest_form *f, const char *name)
{
    const ingest_form_param *p = ingest_form_find(f, name);
    return p ? p->value : NULL;
}

/* Byte order over (a, alen) and (b, blen); memcmp compares as unsigned char. */
static int bytes_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
    int c = memcmp(a, b, alen < blen ? alen : blen);
    if (c != 0)
        return c;
    return alen < blen ? -1 : alen > blen ? 1 : 0;
}

static int param_cmp(const void *x, const void *y)
{
    const ingest_form_param *a = x, *b = y;
    int c = bytes_cmp(a->name, a->name_len, b->name, b->name_len);
    return c ? c : bytes_cmp(a->value, a->value_len, b->value, b->value_len);
}

void ingest_form_sort_dedup(ingest_form *f)
{
    if (f->n < 2)
        return;
    qsort(f->params, f->n, sizeof *f->params, param_cmp);
    size_t kept = 1;
    for (size_t i = 1; i < f->n; i++) {
        if (param_cmp(&f->params[kept - 1], &f->params[i]) == 0) {
            free(f->params[i].name);
            free(f->params[i].value);
        } else {
            f->params[kept++] = f->params[i];
        }
    }
    f->n = kept;
}

bool ingest_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < len) {
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t need;
        unsigned cp;
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
            cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (len - i - 1 < need)
            return false;
        for (size_t k = 1; k <= need; k++) {
            if ((p[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (p[i + k] & 0x3f);
        }
        if ((need == 2 && cp < 0x800) || (need == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += need + 1;
    }
    return true;
}

bool ingest_form_check_text(const ingest_form *f, char *err, size_t errlen)
{
    for (size_t i = 0; i < f->n; i++) {
        const ingest_form_param *p = &f->params[i];
        if (memchr(p->name, '\0', p->name_len) || memchr(p->value, '\0', p->value_len)) {
            hf_err(err, errlen, "parameter %zu contains a NUL byte", i + 1);
            return false;
        }
        if (!ingest_utf8_valid(p->name, p->name_len) ||
            !ingest_utf8_valid(p->value, p->value_len)) {
            hf_err(err, errlen, "parameter %zu is not valid UTF-8", i + 1);
            return false;
        }
    }
    return true;
}

/* A pair and its position, so repeated names keep the order received after sorting. */
typedef struct form_slot {
    const ingest_form_param *param;
    size_t pos;
} form_slot;

static int slot_cmp(const void *x, const void *y)
{
    const form_slot *a = x, *b = y;
    int c = bytes_cmp(a->param->name, a->param->name_len, b->param->name, b->param->name_len);
    return c ? c : (a->pos < b->pos ? -1 : a->pos > b->pos);
}

void ingest_form_to_json(const ingest_form *f, hf_buf *out)
{
    hf_buf_putc(out, '{');
    if (f->n == 0) {
        hf_buf_putc(out, '}');
        return;
    }
    form_slot *order = xmalloc(f->n * sizeof *order);
    for (size_t i = 0; i < f->n; i++)
        order[i] = (form_slot){&f->params[i], i};
    qsort(order, f->n, sizeof *order, slot_cmp);
    for (size_t i = 0; i < f->n;) {
        const ingest_form_param *first = order[i].param;
        size_t j = i + 1;
        while (j < f->n && bytes_cmp(order[j].param->name, order[j].param->name_len, first->name,
                                     first->name_len) == 0)
            j++;
        if (i)
            hf_buf_putc(out, ',');
        hf_json_append_string(out, first->name, first->name_len);
        hf_buf_putc(out, ':');
        if (j - i == 1) {
            hf_json_append_string(out, first->value, first->value_len);
        } else {
            hf_buf_putc(out, '[');
            for (size_t k = i; k < j; k++) {
                if (k > i)
                    hf_buf_putc(out, ',');
                const ingest_form_param *p = order[k].param;
                hf_json_append_string(out, p->value, p->value_len);
            }
            hf_buf_putc(out, ']');
        }
        i = j;
    }
    hf_buf_putc(out, '}');
    free(order);
}
