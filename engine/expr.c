/* expr: parser, evaluator and template renderer of the workflow expression language. */
#include "expr.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- values ---------------------------------------------------------------------------- */

/* -INT64_MIN, the first integer past int64. */
#define MINUS_INT64_MIN "9223372036854775808"

typedef struct num {
    bool is_int; /* i is exact; otherwise d holds the value */
    long long i;
    double d;
    /* The context's own spelling of the number; for a literal, its digits when it is an integer
     * too big for i (owned by the literal's node); else NULL. Integers past int64 compare by it
     * (ids of 64-bit platforms must not meet as equal doubles). */
    const char *text;
} num;

typedef enum { V_NULL, V_BOOL, V_NUM, V_STR, V_JSON, V_LIST } vkind;

typedef struct val {
    vkind k;
    bool b;
    num n;
    const char *s; /* V_STR: no NUL inside (JSON strings and literals cannot hold one) */
    size_t slen;
    hf_json j;         /* V_JSON: an array or object of the context */
    struct val *items; /* V_LIST: an array literal's values */
    size_t nitems;
} val;

/* ---- syntax tree ----------------------------------------------------------------------- */

typedef enum { N_LIT, N_PATH, N_LIST, N_EXISTS, N_NOT, N_NEG, N_AND, N_OR, N_CMP } nkind;
typedef enum { C_EQ, C_NE, C_LT, C_LE, C_GT, C_GE, C_CONTAINS, C_STARTSWITH, C_IN } cmpop;

typedef struct seg {
    char *key; /* NULL: an array index */
    size_t index;
} seg;

typedef struct path {
    const char *root; /* "event", "tenant" or "nodes" (static) */
    seg *segs;
    size_t nsegs;
    char *text; /* canonical text for wf_expr_each_path */
} path;

typedef struct node {
    nkind k;
    cmpop op;
    val lit;            /* N_LIT; a string literal's bytes are owned here (lit.s) */
    path *path;         /* N_PATH, N_EXISTS */
    struct node **kids; /* N_LIST, N_AND, N_OR: n; N_NOT, N_NEG: 1; N_CMP: 2 */
    size_t nkids;
} node;

struct wf_expr {
    node *root;
};

static void path_free(path *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->nsegs; i++)
        free(p->segs[i].key);
    free(p->segs);
    free(p->text);
    free(p);
}

static void node_free(node *n)
{
    if (!n)
        return;
    for (size_t i = 0; i < n->nkids; i++)
        node_free(n->kids[i]);
    free(n->kids);
    path_free(n->path);
    if (n->k == N_LIT && n->lit.k == V_STR)
        free((char *)n->lit.s);
    if (n->k == N_LIT && n->lit.k == V_NUM)
        free((char *)n->lit.n.text);
    free(n);
}

static node *node_new(nkind k)
{
    node *n = xcalloc(1, sizeof *n);
    n->k = k;
    return n;
}

static void node_push(node *n, node *kid)
{
    n->kids = xrealloc(n->kids, (n->nkids + 1) * sizeof *n->kids);
    n->kids[n->nkids++] = kid;
}

void wf_expr_free(wf_expr *e)
{
    if (!e)
        return;
    node_free(e->root);
    free(e);
}

/* ---- lexer ----------------------------------------------------------------------------- */

typedef enum {
    T_EOF,
    T_NUM,
    T_STR,
    T_NAME,
    T_LPAREN,
    T_RPAREN,
    T_LBRACK,
    T_RBRACK,
    T_COMMA,
    T_DOT,
    T_EQ,
    T_NE,
    T_LT,
    T_LE,
    T_GT,
    T_GE,
    T_AND,
    T_OR,
    T_NOT,
    T_MINUS
} tkind;

typedef struct token {
    tkind k;
    size_t pos, len; /* in the source */
    char *str;       /* T_STR: the decoded bytes; T_NUM: an integer past int64's digits; owned
                        until taken */
    size_t slen;
    num n; /* T_NUM */
} token;

typedef struct parser {
    const char *src;
    size_t len;
    size_t base; /* added to positions in messages (a template's offset in its string) */
    size_t at;   /* lexer position */
    token tok;
    int depth;
    bool failed;
    char *err;
    size_t errlen;
} parser;

static void perr(parser *p, size_t pos, const char *fmt, ...) HF_PRINTF(3, 4);
static void perr(parser *p, size_t pos, const char *fmt, ...)
{
    if (p->failed)
        return;
    p->failed = true;
    if (!p->err || !p->errlen)
        return;
    char msg[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    snprintf(p->err, p->errlen, "position %zu: %s", p->base + pos, msg);
}

static bool is_name_start(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_name_char(char c)
{
    return is_name_start(c) || (c >= '0' && c <= '9');
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* True if s (n bytes) is well-formed UTF-8: shortest forms, no surrogates, at most U+10FFFF. */
static bool utf8_valid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t len = hf_utf8_char_len(s + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

static void put_utf8(hf_buf *b, unsigned cp)
{
    if (cp < 0x80) {
        hf_buf_putc(b, (char)cp);
    } else if (cp < 0x800) {
        hf_buf_putc(b, (char)(0xc0 | cp >> 6));
        hf_buf_putc(b, (char)(0x80 | (cp & 0x3f)));
    } else if (cp < 0x10000) {
        hf_buf_putc(b, (char)(0xe0 | cp >> 12));
        hf_buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
        hf_buf_putc(b, (char)(0x80 | (cp & 0x3f)));
    } else {
        hf_buf_putc(b, (char)(0xf0 | cp >> 18));
        hf_buf_putc(b, (char)(0x80 | ((cp >> 12) & 0x3f)));
        hf_buf_putc(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
        hf_buf_putc(b, (char)(0x80 | (cp & 0x3f)));
    }
}

/* Four hex digits at s (n bytes available) into *out. */
static bool hex4(const char *s, size_t n, unsigned *out)
{
    if (n < 4)
        return false;
    unsigned v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return false;
    }
    *out = v;
    return true;
}

static int lex_string(parser *p, size_t start)
{
    const char *s = p->src;
    char quote = s[start];
    hf_buf b = {0};
    size_t i = start + 1;
    for (;;) {
        if (i >= p->len) {
            perr(p, start, "unterminated string");
            goto fail;
        }
        char c = s[i];
        if (c == quote) {
            i++;
            break;
        }
        if (c != '\\') {
            hf_buf_putc(&b, c);
            i++;
            continue;
        }
        if (i + 1 >= p->len) {
            perr(p, start, "unterminated string");
            goto fail;
        }
        char e = s[i + 1];
        switch (e) {
        case '\\':
        case '\'':
        case '"':
        case '/':
            hf_buf_putc(&b, e);
            break;
        case 'n':
            hf_buf_putc(&b, '\n');
            break;
        case 't':
            hf_buf_putc(&b, '\t');
            break;
        case 'r':
            hf_buf_putc(&b, '\r');
            break;
        case 'b':
            hf_buf_putc(&b, '\b');
            break;
        case 'f':
            hf_buf_putc(&b, '\f');
            break;
        case 'u': {
            unsigned cp, lo;
            if (!hex4(s + i + 2, p->len - i - 2, &cp)) {
                perr(p, i, "\\u needs four hex digits");
                goto fail;
            }
            size_t used = 6;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                if (p->len - i - 6 >= 2 && s[i + 6] == '\\' && s[i + 7] == 'u' &&
                    hex4(s + i + 8, p->len - i - 8, &lo) && lo >= 0xdc00 && lo <= 0xdfff) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    used = 12;
                } else {
                    perr(p, i, "unpaired surrogate in \\u escape");
                    goto fail;
                }
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                perr(p, i, "unpaired surrogate in \\u escape");
                goto fail;
            } else if (cp == 0) {
                perr(p, i, "strings cannot contain \\u0000");
                goto fail;
            }
            put_utf8(&b, cp);
            i += used;
            continue;
        }
        default:
            if ((unsigned char)e >= 0x20 && (unsigned char)e < 0x7f)
                perr(p, i, "unknown escape '\\%c'", e);
            else
                perr(p, i, "unknown escape");
            goto fail;
        }
        i += 2;
    }
    if (!utf8_valid(b.data, b.len)) {
        perr(p, start, "string is not valid UTF-8");
        goto fail;
    }
    p->tok.k = T_STR;
    p->tok.str = b.data ? hf_buf_steal(&b) : xstrdup("");
    p->tok.slen = strlen(p->tok.str);
    p->tok.len = i - start;
    return 0;
fail:
    hf_buf_free(&b);
    return -1;
}

static int lex_number(parser *p, size_t start)
{
    const char *s = p->src;
    size_t i = start;
    bool integral = true;
    while (i < p->len && is_digit(s[i]))
        i++;
    if (i < p->len && s[i] == '.') {
        integral = false;
        i++;
        if (i >= p->len || !is_digit(s[i])) {
            perr(p, i, "expected a digit after '.'");
            return -1;
        }
        while (i < p->len && is_digit(s[i]))
            i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        integral = false;
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= p->len || !is_digit(s[i])) {
            perr(p, i, "expected a digit in the exponent");
            return -1;
        }
        while (i < p->len && is_digit(s[i]))
            i++;
    }
    if (i < p->len && is_name_char(s[i])) {
        perr(p, start, "malformed number");
        return -1;
    }
    /* Bounded by WF_EXPR_MAX_LEN, which the caller checked. */
    char text[WF_EXPR_MAX_LEN + 1];
    memcpy(text, s + start, i - start);
    text[i - start] = '\0';
    num n = {0};
    long long v;
    if (integral && hf_parse_ll(text, &v)) {
        n.is_int = true;
        n.i = v;
        n.d = (double)v;
    } else if (integral) {
        /* Past int64: kept as its digits (without leading zeros, so that it prints as JSON),
         * however many; d only approximates it (infinite past a double's range). */
        const char *digits = text + strspn(text, "0");
        n.d = strtod(digits, NULL);
        p->tok.str = xstrdup(digits);
    } else {
        n.d = strtod(text, NULL);
        if (!isfinite(n.d)) {
            perr(p, start, "number out of range");
            return -1;
        }
    }
    p->tok.k = T_NUM;
    p->tok.n = n;
    p->tok.len = i - start;
    return 0;
}

/* Reads the next token into p->tok (dropping an untaken string of the previous one). */
static int lex(parser *p)
{
    free(p->tok.str);
    memset(&p->tok, 0, sizeof p->tok);
    const char *s = p->src;
    while (p->at < p->len &&
           (s[p->at] == ' ' || s[p->at] == '\t' || s[p->at] == '\n' || s[p->at] == '\r'))
        p->at++;
    size_t i = p->at;
    p->tok.pos = i;
    if (i >= p->len) {
        p->tok.k = T_EOF;
        return 0;
    }
    char c = s[i], d = i + 1 < p->len ? s[i + 1] : '\0';
    size_t len = 1;
    switch (c) {
    case '(':
        p->tok.k = T_LPAREN;
        break;
    case ')':
        p->tok.k = T_RPAREN;
        break;
    case '[':
        p->tok.k = T_LBRACK;
        break;
    case ']':
        p->tok.k = T_RBRACK;
        break;
    case ',':
        p->tok.k = T_COMMA;
        break;
    case '.':
        p->tok.k = T_DOT;
        break;
    case '-':
        p->tok.k = T_MINUS;
        break;
    case '<':
        p->tok.k = d == '=' ? T_LE : T_LT;
        len = d == '=' ? 2 : 1;
        break;
    case '>':
        p->tok.k = d == '=' ? T_GE : T_GT;
        len = d == '=' ? 2 : 1;
        break;
    case '!':
        p->tok.k = d == '=' ? T_NE : T_NOT;
        len = d == '=' ? 2 : 1;
        break;
    case '=':
        if (d != '=') {
            perr(p, i, "unknown operator '=' (compare with ==)");
            return -1;
        }
        p->tok.k = T_EQ;
        len = 2;
        break;
    case '&':
    case '|':
        if (d != c) {
            perr(p, i, "unknown operator '%c' (use %s)", c, c == '&' ? "&& or and" : "|| or or");
            return -1;
        }
        p->tok.k = c == '&' ? T_AND : T_OR;
        len = 2;
        break;
    case '\'':
    case '"':
        if (lex_string(p, i) != 0)
            return -1;
        p->at = i + p->tok.len;
        return 0;
    default:
        if (is_digit(c)) {
            if (lex_number(p, i) != 0)
                return -1;
            p->at = i + p->tok.len;
            return 0;
        }
        if (is_name_start(c)) {
            while (i + len < p->len && is_name_char(s[i + len]))
                len++;
            p->tok.k = T_NAME;
            break;
        }
        if (c && strchr("+*/%?:^~=$#@;{}`\\", c))
            perr(p, i, "unknown operator '%c'", c);
        else if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
            perr(p, i, "unexpected character '%c'", c);
        else
            perr(p, i, "unexpected byte 0x%02x", (unsigned char)c);
        return -1;
    }
    p->tok.len = len;
    p->at = i + len;
    return 0;
}

static bool tok_is_word(const parser *p, const char *word)
{
    size_t n = strlen(word);
    return p->tok.k == T_NAME && p->tok.len == n && memcmp(p->src + p->tok.pos, word, n) == 0;
}

static const char *const keywords[] = {"and", "or",     "not",  "contains", "startswith",
                                       "in",  "exists", "true", "false",    "null"};

static bool tok_is_keyword(const parser *p)
{
    for (size_t i = 0; i < HF_ARRAY_LEN(keywords); i++)
        if (tok_is_word(p, keywords[i]))
            return true;
    return false;
}

/* A short description of the current token for messages. */
static void tok_describe(const parser *p, char *out, size_t outlen)
{
    switch (p->tok.k) {
    case T_EOF:
        snprintf(out, outlen, "end of expression");
        break;
    case T_STR:
        snprintf(out, outlen, "a string");
        break;
    case T_NUM:
        snprintf(out, outlen, "a number");
        break;
    default: {
        int n = p->tok.len > 40 ? 40 : (int)p->tok.len;
        snprintf(out, outlen, "'%.*s'", n, p->src + p->tok.pos);
    }
    }
}

/* ---- parser ---------------------------------------------------------------------------- */

static node *parse_or(parser *p);

static bool enter(parser *p)
{
    if (++p->depth > WF_EXPR_MAX_DEPTH) {
        perr(p, p->tok.pos, "nested deeper than %d levels", WF_EXPR_MAX_DEPTH);
        return false;
    }
    return true;
}

/* Appends key to the canonical path text. */
static void path_text_key(hf_buf *b, const char *key)
{
    bool ident = is_name_start(key[0]);
    for (const char *c = key; ident && *c; c++)
        ident = is_name_char(*c);
    if (ident) {
        hf_buf_putc(b, '.');
        hf_buf_puts(b, key);
        return;
    }
    hf_buf_puts(b, "[\"");
    for (const unsigned char *c = (const unsigned char *)key; *c; c++) {
        if (*c == '"' || *c == '\\') {
            hf_buf_putc(b, '\\');
            hf_buf_putc(b, (char)*c);
        } else if (*c < 0x20) {
            hf_buf_printf(b, "\\u%04x", *c);
        } else {
            hf_buf_putc(b, (char)*c);
        }
    }
    hf_buf_puts(b, "\"]");
}

static void path_add_key(path *pa, char *key, hf_buf *text)
{
    pa->segs = xrealloc(pa->segs, (pa->nsegs + 1) * sizeof *pa->segs);
    pa->segs[pa->nsegs++] = (seg){.key = key};
    path_text_key(text, key);
}

/* path := root ( '.' name | '[' integer ']' | '[' string ']' )*  — the root token is current. */
static path *parse_path(parser *p)
{
    static const char *const roots[] = {"event", "tenant", "nodes"};
    const char *root = NULL;
    for (size_t i = 0; i < HF_ARRAY_LEN(roots); i++)
        if (tok_is_word(p, roots[i]))
            root = roots[i];
    if (!root) {
        char what[64];
        tok_describe(p, what, sizeof what);
        if (p->tok.k == T_NAME && !tok_is_keyword(p))
            perr(p, p->tok.pos, "unknown name %s (paths start with event, tenant or nodes)", what);
        else
            perr(p, p->tok.pos, "expected a path, found %s", what);
        return NULL;
    }
    path *pa = xcalloc(1, sizeof *pa);
    pa->root = root;
    hf_buf text = {0};
    hf_buf_puts(&text, root);
    if (lex(p) != 0)
        goto fail;
    for (;;) {
        if (p->tok.k == T_DOT) {
            if (lex(p) != 0)
                goto fail;
            if (p->tok.k != T_NAME) {
                perr(p, p->tok.pos, "expected a name after '.'%s",
                     p->tok.k == T_NUM ? " (write array indexes as [0])" : "");
                goto fail;
            }
            path_add_key(pa, xstrndup(p->src + p->tok.pos, p->tok.len), &text);
        } else if (p->tok.k == T_LBRACK) {
            if (lex(p) != 0)
                goto fail;
            if (p->tok.k == T_STR) {
                char *key = p->tok.str;
                p->tok.str = NULL;
                path_add_key(pa, key, &text);
            } else if (p->tok.k == T_NUM && p->tok.n.is_int && p->tok.n.i >= 0) {
                pa->segs = xrealloc(pa->segs, (pa->nsegs + 1) * sizeof *pa->segs);
                pa->segs[pa->nsegs++] = (seg){.key = NULL, .index = (size_t)p->tok.n.i};
                hf_buf_printf(&text, "[%lld]", p->tok.n.i);
            } else {
                perr(p, p->tok.pos, "expected an array index or a quoted key");
                goto fail;
            }
            if (lex(p) != 0)
                goto fail;
            if (p->tok.k != T_RBRACK) {
                perr(p, p->tok.pos, "expected ']'");
                goto fail;
            }
        } else {
            break;
        }
        if (lex(p) != 0)
            goto fail;
    }
    pa->text = hf_buf_steal(&text);
    return pa;
fail:
    hf_buf_free(&text);
    path_free(pa);
    return NULL;
}

static node *parse_exists(parser *p)
{
    if (lex(p) != 0)
        return NULL;
    bool paren = p->tok.k == T_LPAREN;
    if (paren && lex(p) != 0)
        return NULL;
    path *pa = parse_path(p);
    if (!pa)
        return NULL;
    if (paren) {
        if (p->tok.k != T_RPAREN) {
            perr(p, p->tok.pos, "expected ')'");
            path_free(pa);
            return NULL;
        }
        if (lex(p) != 0) {
            path_free(pa);
            return NULL;
        }
    }
    node *n = node_new(N_EXISTS);
    n->path = pa;
    return n;
}

static node *parse_primary(parser *p)
{
    node *n = NULL;
    char what[64];
    switch (p->tok.k) {
    case T_NUM:
        n = node_new(N_LIT);
        n->lit.k = V_NUM;
        n->lit.n = p->tok.n;
        n->lit.n.text = p->tok.str; /* a big integer's digits, or NULL */
        p->tok.str = NULL;
        return lex(p) == 0 ? n : (node_free(n), NULL);
    case T_STR:
        n = node_new(N_LIT);
        n->lit.k = V_STR;
        n->lit.s = p->tok.str;
        n->lit.slen = p->tok.slen;
        p->tok.str = NULL;
        return lex(p) == 0 ? n : (node_free(n), NULL);
    case T_LPAREN: {
        if (!enter(p) || lex(p) != 0)
            return NULL;
        n = parse_or(p);
        if (!n)
            return NULL;
        if (p->tok.k != T_RPAREN) {
            perr(p, p->tok.pos, "expected ')'");
            node_free(n);
            return NULL;
        }
        p->depth--;
        return lex(p) == 0 ? n : (node_free(n), NULL);
    }
    case T_LBRACK: {
        if (!enter(p) || lex(p) != 0)
            return NULL;
        n = node_new(N_LIST);
        if (p->tok.k != T_RBRACK) {
            for (;;) {
                node *item = parse_or(p);
                if (!item) {
                    node_free(n);
                    return NULL;
                }
                node_push(n, item);
                if (p->tok.k == T_COMMA) {
                    if (lex(p) != 0) {
                        node_free(n);
                        return NULL;
                    }
                    continue;
                }
                if (p->tok.k == T_RBRACK)
                    break;
                perr(p, p->tok.pos, "expected ',' or ']'");
                node_free(n);
                return NULL;
            }
        }
        p->depth--;
        return lex(p) == 0 ? n : (node_free(n), NULL);
    }
    case T_NAME:
        if (tok_is_word(p, "true") || tok_is_word(p, "false") || tok_is_word(p, "null")) {
            n = node_new(N_LIT);
            n->lit.k = tok_is_word(p, "null") ? V_NULL : V_BOOL;
            n->lit.b = tok_is_word(p, "true");
            return lex(p) == 0 ? n : (node_free(n), NULL);
        }
        if (tok_is_word(p, "exists"))
            return parse_exists(p);
        if (tok_is_keyword(p))
            break;
        {
            path *pa = parse_path(p);
            if (!pa)
                return NULL;
            n = node_new(N_PATH);
            n->path = pa;
            return n;
        }
    default:
        break;
    }
    tok_describe(p, what, sizeof what);
    perr(p, p->tok.pos, "expected a value, found %s", what);
    return NULL;
}

/* unary := '-' unary | primary. A minus before a number literal folds into it. */
static node *parse_unary(parser *p)
{
    if (p->tok.k != T_MINUS)
        return parse_primary(p);
    if (!enter(p) || lex(p) != 0)
        return NULL;
    node *kid = parse_unary(p);
    if (!kid)
        return NULL;
    p->depth--;
    if (kid->k == N_LIT && kid->lit.k == V_NUM) {
        num *n = &kid->lit.n;
        if (n->is_int && n->i != LLONG_MIN) {
            n->i = -n->i;
            n->d = (double)n->i;
        } else if (n->is_int) { /* -(-9223372036854775808) is past int64 */
            n->is_int = false;
            n->d = -n->d;
            n->text = xstrdup(MINUS_INT64_MIN);
        } else if (n->text) { /* a big integer: its digits change sign too */
            char *neg = n->text[0] == '-' ? xstrdup(n->text + 1) : xconcat("-", n->text, NULL);
            free((char *)n->text);
            n->text = neg;
            n->d = -n->d;
            long long v;
            if (hf_parse_ll(neg, &v)) { /* -9223372036854775808 fits after all */
                n->is_int = true;
                n->i = v;
                free(neg);
                n->text = NULL;
            }
        } else {
            n->is_int = false;
            n->d = -n->d;
        }
        return kid;
    }
    node *n = node_new(N_NEG);
    node_push(n, kid);
    return n;
}

/* The comparison operator of the current token, or -1. */
static int tok_cmpop(const parser *p)
{
    switch (p->tok.k) {
    case T_EQ:
        return C_EQ;
    case T_NE:
        return C_NE;
    case T_LT:
        return C_LT;
    case T_LE:
        return C_LE;
    case T_GT:
        return C_GT;
    case T_GE:
        return C_GE;
    default:
        break;
    }
    if (tok_is_word(p, "contains"))
        return C_CONTAINS;
    if (tok_is_word(p, "startswith"))
        return C_STARTSWITH;
    if (tok_is_word(p, "in"))
        return C_IN;
    return -1;
}

/* cmp := unary (op unary)? — comparisons do not chain. */
static node *parse_cmp(parser *p)
{
    node *left = parse_unary(p);
    if (!left)
        return NULL;
    int op = tok_cmpop(p);
    if (op < 0)
        return left;
    if (lex(p) != 0) {
        node_free(left);
        return NULL;
    }
    node *right = parse_unary(p);
    if (!right) {
        node_free(left);
        return NULL;
    }
    node *n = node_new(N_CMP);
    n->op = (cmpop)op;
    node_push(n, left);
    node_push(n, right);
    if (tok_cmpop(p) >= 0) {
        perr(p, p->tok.pos, "comparisons do not chain; add parentheses");
        node_free(n);
        return NULL;
    }
    return n;
}

/* not := ('not' | '!') not | cmp */
static node *parse_not(parser *p)
{
    if (p->tok.k != T_NOT && !tok_is_word(p, "not"))
        return parse_cmp(p);
    if (!enter(p) || lex(p) != 0)
        return NULL;
    node *kid = parse_not(p);
    if (!kid)
        return NULL;
    p->depth--;
    node *n = node_new(N_NOT);
    node_push(n, kid);
    return n;
}

/* Left-associative chains of and/or become one n-ary node, so the tree stays shallow. */
static node *parse_chain(parser *p, nkind k, tkind sym, const char *word, node *(*sub)(parser *))
{
    node *first = sub(p);
    if (!first)
        return NULL;
    if (p->tok.k != sym && !tok_is_word(p, word))
        return first;
    node *n = node_new(k);
    node_push(n, first);
    while (p->tok.k == sym || tok_is_word(p, word)) {
        if (lex(p) != 0) {
            node_free(n);
            return NULL;
        }
        node *kid = sub(p);
        if (!kid) {
            node_free(n);
            return NULL;
        }
        node_push(n, kid);
    }
    return n;
}

static node *parse_and(parser *p)
{
    return parse_chain(p, N_AND, T_AND, "and", parse_not);
}

static node *parse_or(parser *p)
{
    return parse_chain(p, N_OR, T_OR, "or", parse_and);
}

/* Parses len bytes of src; positions in messages are offset by base. */
static wf_expr *expr_parse(const char *src, size_t len, size_t base, char *err, size_t errlen)
{
    parser p = {.src = src, .len = len, .base = base, .err = err, .errlen = errlen};
    if (len > WF_EXPR_MAX_LEN) {
        perr(&p, WF_EXPR_MAX_LEN, "expression is longer than %d bytes", WF_EXPR_MAX_LEN);
        return NULL;
    }
    if (lex(&p) != 0)
        goto fail;
    if (p.tok.k == T_EOF) {
        perr(&p, p.tok.pos, "empty expression");
        goto fail;
    }
    node *root = parse_or(&p);
    if (!root)
        goto fail;
    if (p.tok.k != T_EOF) {
        char what[64];
        tok_describe(&p, what, sizeof what);
        perr(&p, p.tok.pos, "expected an operator or the end, found %s", what);
        node_free(root);
        goto fail;
    }
    wf_expr *e = xmalloc(sizeof *e);
    e->root = root;
    free(p.tok.str);
    return e;
fail:
    free(p.tok.str);
    return NULL;
}

wf_expr *wf_expr_parse(const char *src, char *err, size_t errlen)
{
    if (!src) {
        hf_err(err, errlen, "position 0: empty expression");
        return NULL;
    }
    return expr_parse(src, strnlen(src, WF_EXPR_MAX_LEN + 1), 0, err, errlen);
}

/* ---- paths ----------------------------------------------------------------------------- */

static void node_each_path(const node *n, void (*fn)(const char *, void *), void *arg)
{
    if (n->path)
        fn(n->path->text, arg);
    for (size_t i = 0; i < n->nkids; i++)
        node_each_path(n->kids[i], fn, arg);
}

void wf_expr_each_path(const wf_expr *e, void (*fn)(const char *path, void *arg), void *arg)
{
    if (e && fn)
        node_each_path(e->root, fn, arg);
}

/* The context value a path names, or NULL when any step is missing. */
static hf_json path_resolve(const path *pa, hf_json ctx)
{
    hf_json v = hf_json_get(ctx, pa->root);
    for (size_t i = 0; v && i < pa->nsegs; i++)
        v = pa->segs[i].key ? hf_json_get(v, pa->segs[i].key) : hf_json_at(v, pa->segs[i].index);
    return v;
}

/* ---- evaluation ------------------------------------------------------------------------ */

typedef struct evalctx {
    hf_json ctx;
    long steps; /* left of WF_EVAL_MAX_STEPS */
    bool exhausted;
    void **owned; /* item arrays of array literals, negated digits: freed after the evaluation */
    size_t nowned, capowned;
} evalctx;

/* p lives until the evaluation ends. */
static void *ec_keep(evalctx *ec, void *p)
{
    if (ec->nowned == ec->capowned) {
        ec->capowned = ec->capowned ? 2 * ec->capowned : 8;
        ec->owned = xrealloc(ec->owned, ec->capowned * sizeof *ec->owned);
    }
    ec->owned[ec->nowned++] = p;
    return p;
}

static val val_of_json(hf_json j)
{
    val v = {.k = V_NULL};
    if (!j || YAJL_IS_NULL(j))
        return v;
    if (YAJL_IS_STRING(j)) {
        v.k = V_STR;
        v.s = j->u.string;
        v.slen = strlen(j->u.string);
    } else if (YAJL_IS_NUMBER(j)) {
        v.k = V_NUM;
        v.n.text = j->u.number.r;
        if (j->u.number.flags & YAJL_NUMBER_INT_VALID) {
            v.n.is_int = true;
            v.n.i = j->u.number.i;
            v.n.d = (double)j->u.number.i;
        } else {
            /* Out-of-range numbers keep strtod's saturated value: ordering still works. */
            v.n.d = j->u.number.d;
        }
    } else if (YAJL_IS_TRUE(j) || YAJL_IS_FALSE(j)) {
        v.k = V_BOOL;
        v.b = YAJL_IS_TRUE(j);
    } else {
        v.k = V_JSON;
        v.j = j;
    }
    return v;
}

static bool truthy(const val *v)
{
    switch (v->k) {
    case V_NULL:
        return false;
    case V_BOOL:
        return v->b;
    case V_NUM:
        return v->n.is_int ? v->n.i != 0 : v->n.d != 0.0;
    case V_STR:
        return v->slen != 0;
    default:
        return true;
    }
}

static bool is_seq(const val *v)
{
    return v->k == V_LIST || (v->k == V_JSON && YAJL_IS_ARRAY(v->j));
}

static size_t seq_len(const val *v)
{
    return v->k == V_LIST ? v->nitems : v->j->u.array.len;
}

static val seq_at(const val *v, size_t i)
{
    return v->k == V_LIST ? v->items[i] : val_of_json(v->j->u.array.values[i]);
}

static bool step(evalctx *ec)
{
    if (ec->exhausted)
        return false;
    if (--ec->steps < 0) {
        ec->exhausted = true;
        return false;
    }
    return true;
}

/* An integer spelled in decimal: an optional '-' and digits only. */
static bool integer_text(const char *s)
{
    if (!s)
        return false;
    if (*s == '-')
        s++;
    if (!*s)
        return false;
    for (; *s; s++)
        if (!is_digit(*s))
            return false;
    return true;
}

/* Compares two integers spelled in decimal exactly, whatever their size. */
static int integer_text_cmp(const char *a, const char *b)
{
    int sa = *a == '-' ? -1 : 1, sb = *b == '-' ? -1 : 1;
    a += *a == '-';
    b += *b == '-';
    while (*a == '0' && a[1])
        a++;
    while (*b == '0' && b[1])
        b++;
    if (strcmp(a, "0") == 0)
        sa = 0;
    if (strcmp(b, "0") == 0)
        sb = 0;
    if (sa != sb)
        return sa < sb ? -1 : 1;
    size_t la = strlen(a), lb = strlen(b);
    int mag = la != lb ? (la < lb ? -1 : 1) : strcmp(a, b);
    mag = mag < 0 ? -1 : mag > 0;
    return sa * mag;
}

/* An int64 against a double, exactly (a double past int64's range is beyond every int64). */
static int int_double_cmp(long long i, double d)
{
    if (d >= 9223372036854775808.0)
        return -1;
    if (d < -9223372036854775808.0)
        return 1;
    double t = trunc(d);
    long long ti = (long long)t;
    if (i != ti)
        return i < ti ? -1 : 1;
    return d > t ? -1 : d < t; /* equal integer parts: d's fraction decides */
}

/* An integer past int64 (its decimal digits) against a double, exactly. */
static int big_double_cmp(const char *digits, double d)
{
    if (!isfinite(d))
        return d > 0 ? -1 : 1;
    if (fabs(d) < 9223372036854775808.0) /* the integer lies beyond d, on its sign's side */
        return digits[0] == '-' ? -1 : 1;
    /* |d| >= 2^63 is an integer, and glibc prints a double's exact value. */
    char dtext[400];
    snprintf(dtext, sizeof dtext, "%.0f", d);
    return integer_text_cmp(digits, dtext);
}

static int num_cmp(const num *a, const num *b)
{
    if (a->is_int && b->is_int)
        return a->i < b->i ? -1 : a->i > b->i;
    /* Integers past int64 (a literal's or the context's digits): exactly, not as doubles. */
    bool big_a = !a->is_int && integer_text(a->text), big_b = !b->is_int && integer_text(b->text);
    if (big_a && big_b)
        return integer_text_cmp(a->text, b->text);
    if (big_b && a->is_int) /* b lies beyond every int64, on its sign's side */
        return b->text[0] == '-' ? 1 : -1;
    if (big_a && b->is_int)
        return a->text[0] == '-' ? -1 : 1;
    if (big_a)
        return big_double_cmp(a->text, b->d);
    if (big_b)
        return -big_double_cmp(b->text, a->d);
    if (a->is_int)
        return int_double_cmp(a->i, b->d);
    if (b->is_int)
        return -int_double_cmp(b->i, a->d);
    return a->d < b->d ? -1 : a->d > b->d;
}

static bool val_eq(const val *a, const val *b, evalctx *ec);

/* Objects are equal when they have the same members: the same keys, each as many times, with
 * equal values in the order they come (a repeated key's n-th value against the other's n-th).
 * So the comparison is symmetric whatever the repeats, and costs no more than a search per key. */
static bool obj_eq(hf_json a, hf_json b, evalctx *ec)
{
    size_t n = a->u.object.len;
    if (n != b->u.object.len)
        return false;
    bool *taken = xcalloc(n ? n : 1, sizeof *taken);
    bool ok = true;
    size_t lo = 0; /* every member of b before lo is matched */
    for (size_t i = 0; ok && i < n; i++) {
        const char *key = a->u.object.keys[i];
        /* The first member of b with this key not yet matched; with the same member order (the
         * common case) that is the one at lo, found at once. */
        while (lo < n && taken[lo])
            lo++;
        size_t at = n;
        for (size_t k = lo; k < n && at == n; k++) {
            if (!step(ec)) {
                free(taken);
                return false;
            }
            if (!taken[k] && strcmp(b->u.object.keys[k], key) == 0)
                at = k;
        }
        if (at == n) {
            ok = false;
        } else {
            taken[at] = true;
            val v = val_of_json(a->u.object.values[i]), w = val_of_json(b->u.object.values[at]);
            ok = val_eq(&v, &w, ec);
        }
    }
    free(taken);
    return ok;
}

static bool val_eq(const val *a, const val *b, evalctx *ec)
{
    if (!step(ec))
        return false;
    if (is_seq(a) && is_seq(b)) {
        size_t n = seq_len(a);
        if (n != seq_len(b))
            return false;
        for (size_t i = 0; i < n; i++) {
            val x = seq_at(a, i), y = seq_at(b, i);
            if (!val_eq(&x, &y, ec))
                return false;
        }
        return true;
    }
    if (a->k != b->k)
        return false;
    switch (a->k) {
    case V_NULL:
        return true;
    case V_BOOL:
        return a->b == b->b;
    case V_NUM:
        return num_cmp(&a->n, &b->n) == 0;
    case V_STR:
        return a->slen == b->slen && memcmp(a->s, b->s, a->slen) == 0;
    case V_JSON:
        return YAJL_IS_OBJECT(a->j) && YAJL_IS_OBJECT(b->j) && obj_eq(a->j, b->j, ec);
    default:
        return false;
    }
}

/* hay contains needle: substring for two strings, an equal element for a sequence. */
static bool val_contains(const val *hay, const val *needle, evalctx *ec)
{
    if (hay->k == V_STR && needle->k == V_STR)
        return memmem(hay->s, hay->slen, needle->s, needle->slen) != NULL;
    if (!is_seq(hay))
        return false;
    size_t n = seq_len(hay);
    for (size_t i = 0; i < n; i++) {
        val x = seq_at(hay, i);
        if (val_eq(&x, needle, ec))
            return true;
        if (ec->exhausted)
            return false;
    }
    return false;
}

static bool compare(cmpop op, const val *a, const val *b, evalctx *ec)
{
    switch (op) {
    case C_EQ:
        return val_eq(a, b, ec);
    case C_NE:
        return !val_eq(a, b, ec);
    case C_CONTAINS:
        return val_contains(a, b, ec);
    case C_IN:
        return val_contains(b, a, ec);
    case C_STARTSWITH:
        return a->k == V_STR && b->k == V_STR && a->slen >= b->slen &&
               memcmp(a->s, b->s, b->slen) == 0;
    default:
        break;
    }
    int c;
    if (a->k == V_NUM && b->k == V_NUM) {
        /* NaN cannot occur: literals are finite and JSON has no NaN. */
        c = num_cmp(&a->n, &b->n);
    } else if (a->k == V_STR && b->k == V_STR) {
        size_t n = a->slen < b->slen ? a->slen : b->slen;
        c = memcmp(a->s, b->s, n);
        if (c == 0)
            c = a->slen < b->slen ? -1 : a->slen > b->slen;
    } else {
        return false; /* ordering across types (or of non-scalars) is false */
    }
    switch (op) {
    case C_LT:
        return c < 0;
    case C_LE:
        return c <= 0;
    case C_GT:
        return c > 0;
    default:
        return c >= 0;
    }
}

static void eval(const node *n, evalctx *ec, val *out)
{
    val a, b;
    *out = (val){.k = V_NULL};
    switch (n->k) {
    case N_LIT:
        *out = n->lit;
        return;
    case N_PATH:
        *out = val_of_json(path_resolve(n->path, ec->ctx));
        return;
    case N_EXISTS: {
        hf_json j = path_resolve(n->path, ec->ctx);
        out->k = V_BOOL;
        out->b = j && !YAJL_IS_NULL(j);
        return;
    }
    case N_LIST: {
        val *items = n->nkids ? xcalloc(n->nkids, sizeof *items) : NULL;
        if (items)
            ec_keep(ec, items);
        for (size_t i = 0; i < n->nkids; i++)
            eval(n->kids[i], ec, &items[i]);
        out->k = V_LIST;
        out->items = items;
        out->nitems = n->nkids;
        return;
    }
    case N_NOT:
        eval(n->kids[0], ec, &a);
        out->k = V_BOOL;
        out->b = !truthy(&a);
        return;
    case N_NEG:
        eval(n->kids[0], ec, &a);
        if (a.k != V_NUM)
            return; /* -x of a non-number is null */
        out->k = V_NUM;
        if (a.n.is_int && a.n.i != LLONG_MIN) {
            out->n.is_int = true;
            out->n.i = -a.n.i;
            out->n.d = (double)out->n.i;
        } else if (a.n.is_int) { /* -(-9223372036854775808) is past int64 */
            out->n.d = -a.n.d;
            out->n.text = MINUS_INT64_MIN;
        } else if (integer_text(a.n.text)) { /* past int64: the digits change sign, exactly */
            out->n.d = -a.n.d;
            out->n.text =
                a.n.text[0] == '-' ? a.n.text + 1 : ec_keep(ec, xconcat("-", a.n.text, NULL));
        } else if (isfinite(a.n.d)) {
            out->n.d = -a.n.d;
        } else {
            out->k = V_NULL;
        }
        return;
    case N_AND:
    case N_OR: {
        bool want = n->k == N_OR; /* the value that decides early */
        out->k = V_BOOL;
        out->b = !want;
        for (size_t i = 0; i < n->nkids; i++) {
            eval(n->kids[i], ec, &a);
            if (truthy(&a) == want) {
                out->b = want;
                return;
            }
        }
        return;
    }
    case N_CMP:
        eval(n->kids[0], ec, &a);
        eval(n->kids[1], ec, &b);
        out->k = V_BOOL;
        out->b = compare(n->op, &a, &b, ec);
        return;
    }
}

static void evalctx_done(evalctx *ec)
{
    for (size_t i = 0; i < ec->nowned; i++)
        free(ec->owned[i]);
    free(ec->owned);
}

/* ---- output ---------------------------------------------------------------------------- */

/* A number's JSON text: the context's own spelling, else the shortest round-tripping form. */
static const char *num_text(const num *n, char *buf, size_t buflen)
{
    if (n->text)
        return n->text;
    if (n->is_int) {
        snprintf(buf, buflen, "%lld", n->i);
        return buf;
    }
    if (n->d == trunc(n->d) && fabs(n->d) < 1e15) {
        snprintf(buf, buflen, "%.0f", n->d); /* 1e3 reads better as 1000 */
        return buf;
    }
    for (int prec = 1; prec <= 17; prec++) {
        snprintf(buf, buflen, "%.*g", prec, n->d);
        if (strtod(buf, NULL) == n->d)
            break;
    }
    return buf;
}

static void val_json(const val *v, hf_buf *out)
{
    char nb[40];
    switch (v->k) {
    case V_NULL:
        hf_buf_puts(out, "null");
        break;
    case V_BOOL:
        hf_buf_puts(out, v->b ? "true" : "false");
        break;
    case V_NUM:
        hf_buf_puts(out, num_text(&v->n, nb, sizeof nb));
        break;
    case V_STR:
        hf_json_append_string(out, v->s, v->slen);
        break;
    case V_JSON:
        hf_json_serialize(v->j, out);
        break;
    case V_LIST:
        hf_buf_putc(out, '[');
        for (size_t i = 0; i < v->nitems; i++) {
            if (i)
                hf_buf_putc(out, ',');
            val_json(&v->items[i], out);
        }
        hf_buf_putc(out, ']');
        break;
    }
}

/* The value as interpolated text: strings raw, null empty, the rest as JSON. */
static void val_text(const val *v, hf_buf *out)
{
    if (v->k == V_STR)
        hf_buf_append(out, v->s, v->slen);
    else if (v->k != V_NULL)
        val_json(v, out);
}

static int eval_run(const wf_expr *e, hf_json ctx, val *out, evalctx *ec, char *err, size_t errlen)
{
    *ec = (evalctx){.ctx = ctx, .steps = WF_EVAL_MAX_STEPS};
    eval(e->root, ec, out);
    if (ec->exhausted)
        return hf_err(err, errlen, "evaluation exceeded %ld comparison steps", WF_EVAL_MAX_STEPS);
    return 0;
}

/* Drops what was appended to out after start. */
static void buf_truncate(hf_buf *out, size_t start)
{
    hf_buf_reserve(out, 1);
    out->len = start;
    out->data[start] = '\0';
}

static int size_check(const hf_buf *out, size_t start, char *err, size_t errlen)
{
    if (out->len - start > WF_RENDER_MAX_BYTES)
        return hf_err(err, errlen, "rendered value is larger than %u bytes", WF_RENDER_MAX_BYTES);
    return 0;
}

int wf_expr_eval_json(const wf_expr *e, hf_json ctx, hf_buf *out, char *err, size_t errlen)
{
    evalctx ec;
    val v;
    size_t start = out->len;
    int rc = eval_run(e, ctx, &v, &ec, err, errlen);
    if (rc == 0) {
        val_json(&v, out);
        rc = size_check(out, start, err, errlen);
    }
    evalctx_done(&ec);
    if (rc != 0)
        buf_truncate(out, start);
    return rc;
}

int wf_expr_eval_bool(const wf_expr *e, hf_json ctx, bool *out, char *err, size_t errlen)
{
    evalctx ec;
    val v;
    int rc = eval_run(e, ctx, &v, &ec, err, errlen);
    *out = rc == 0 && truthy(&v);
    evalctx_done(&ec);
    return rc;
}

/* ---- templates ------------------------------------------------------------------------- */

/* Finds the next {{ ... }} of s at or after from. 1: found, *open at "{{" and *close just past
 * "}}" (a "}}" inside a quoted string literal does not close); 0: none; -1: a "{{" that never
 * closes (*open at it). */
static int tmpl_next(const char *s, size_t len, size_t from, size_t *open, size_t *close)
{
    size_t i = from;
    while (i + 1 < len && !(s[i] == '{' && s[i + 1] == '{'))
        i++;
    if (i + 1 >= len)
        return 0;
    *open = i;
    char quote = 0;
    for (i += 2; i < len; i++) {
        char c = s[i];
        if (quote) {
            if (c == '\\')
                i++;
            else if (c == quote)
                quote = 0;
        } else if (c == '\'' || c == '"') {
            quote = c;
        } else if (c == '}' && i + 1 < len && s[i + 1] == '}') {
            *close = i + 2;
            return 1;
        }
    }
    return -1;
}

bool wf_template_is_dynamic(const char *s, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        if (s[i] == '{' && s[i + 1] == '{')
            return true;
    return false;
}

bool wf_template_is_exact(const char *s, size_t len)
{
    size_t open, close;
    return tmpl_next(s, len, 0, &open, &close) == 1 && open == 0 && close == len;
}

/* Parses the template at s[open..close); NULL and err (positions within s) on failure. */
static wf_expr *tmpl_parse(const char *s, size_t open, size_t close, char *err, size_t errlen)
{
    return expr_parse(s + open + 2, close - open - 4, open + 2, err, errlen);
}

typedef struct walk {
    hf_json ctx;
    hf_buf *out; /* render: the output; check: NULL */
    size_t start;
    void (*fn)(const char *, void *);
    void *arg;
    hf_buf path; /* JSON path of the value being walked */
    char *err;
    size_t errlen;
} walk;

/* err = "<path>: <msg>" (just msg at the root). */
static int walk_fail(walk *w, const char *msg)
{
    if (w->path.len)
        return hf_err(w->err, w->errlen, "%s: %s", w->path.data, msg);
    return hf_err(w->err, w->errlen, "%s", msg);
}

static int walk_string(walk *w, const char *s)
{
    size_t len = strlen(s), open = 0, close = 0, at = 0;
    char msg[320];
    int found = tmpl_next(s, len, 0, &open, &close);
    if (found == 0) {
        if (w->out)
            hf_json_append_string(w->out, s, len);
        return 0;
    }
    bool exact = found == 1 && open == 0 && close == len;
    hf_buf text = {0};
    int rc = 0;
    for (; found != 0; found = tmpl_next(s, len, at, &open, &close)) {
        if (found < 0) {
            snprintf(msg, sizeof msg, "position %zu: unterminated {{", open);
            rc = walk_fail(w, msg);
            break;
        }
        wf_expr *e = tmpl_parse(s, open, close, msg, sizeof msg);
        if (!e) {
            rc = walk_fail(w, msg);
            break;
        }
        if (w->fn)
            wf_expr_each_path(e, w->fn, w->arg);
        if (w->out) {
            evalctx ec;
            val v;
            rc = eval_run(e, w->ctx, &v, &ec, msg, sizeof msg);
            if (rc == 0) {
                if (exact) {
                    val_json(&v, w->out);
                } else {
                    hf_buf_append(&text, s + at, open - at);
                    val_text(&v, &text);
                    if (text.len > WF_RENDER_MAX_BYTES)
                        rc = hf_err(msg, sizeof msg, "rendered value is larger than %u bytes",
                                    WF_RENDER_MAX_BYTES);
                }
            }
            evalctx_done(&ec);
            if (rc != 0) {
                wf_expr_free(e);
                rc = walk_fail(w, msg);
                break;
            }
        }
        wf_expr_free(e);
        at = close;
    }
    if (rc == 0 && w->out && !exact) {
        hf_buf_append(&text, s + at, len - at);
        hf_json_append_string(w->out, text.data ? text.data : "", text.len);
    }
    hf_buf_free(&text);
    return rc;
}

static int walk_value(walk *w, hf_json v)
{
    if (w->out && w->out->len - w->start > WF_RENDER_MAX_BYTES) {
        char msg[64];
        snprintf(msg, sizeof msg, "rendered value is larger than %u bytes", WF_RENDER_MAX_BYTES);
        return walk_fail(w, msg);
    }
    if (YAJL_IS_STRING(v))
        return walk_string(w, v->u.string);
    size_t mark = w->path.len;
    if (YAJL_IS_ARRAY(v)) {
        if (w->out)
            hf_buf_putc(w->out, '[');
        for (size_t i = 0; i < v->u.array.len; i++) {
            if (w->out && i)
                hf_buf_putc(w->out, ',');
            hf_buf_printf(&w->path, "[%zu]", i);
            int rc = walk_value(w, v->u.array.values[i]);
            w->path.len = mark;
            w->path.data[mark] = '\0';
            if (rc != 0)
                return rc;
        }
        if (w->out)
            hf_buf_putc(w->out, ']');
        return 0;
    }
    if (YAJL_IS_OBJECT(v)) {
        if (w->out)
            hf_buf_putc(w->out, '{');
        for (size_t i = 0; i < v->u.object.len; i++) {
            const char *key = v->u.object.keys[i];
            if (w->out) {
                if (i)
                    hf_buf_putc(w->out, ',');
                hf_json_append_cstr(w->out, key);
                hf_buf_putc(w->out, ':');
            }
            /* The same spelling as path texts, without a leading '.' at the root. */
            path_text_key(&w->path, key);
            if (mark == 0 && w->path.data[0] == '.')
                memmove(w->path.data, w->path.data + 1, w->path.len--);
            int rc = walk_value(w, v->u.object.values[i]);
            w->path.len = mark;
            w->path.data[mark] = '\0';
            if (rc != 0)
                return rc;
        }
        if (w->out)
            hf_buf_putc(w->out, '}');
        return 0;
    }
    if (w->out)
        hf_json_serialize(v, w->out);
    return 0;
}

int wf_template_render(hf_json tmpl, hf_json ctx, hf_buf *out, char *err, size_t errlen)
{
    walk w = {.ctx = ctx, .out = out, .start = out->len, .err = err, .errlen = errlen};
    int rc = walk_value(&w, tmpl);
    if (rc == 0 && out->len - w.start > WF_RENDER_MAX_BYTES)
        rc = hf_err(err, errlen, "rendered value is larger than %u bytes", WF_RENDER_MAX_BYTES);
    if (rc != 0)
        buf_truncate(out, w.start);
    hf_buf_free(&w.path);
    return rc;
}

int wf_template_check(hf_json tmpl, void (*fn)(const char *path, void *arg), void *arg, char *err,
                      size_t errlen)
{
    walk w = {.fn = fn, .arg = arg, .err = err, .errlen = errlen};
    int rc = walk_value(&w, tmpl);
    hf_buf_free(&w.path);
    return rc;
}
