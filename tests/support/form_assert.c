/* form_assert: reading application/x-www-form-urlencoded bodies in cmocka tests. */
#include "form_assert.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "util.h"

/* Decodes one form value in place ('+' and %XX). */
static void form_decode(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (*r == '+') {
            *w++ = ' ';
        } else if (*r == '%' && r[1] && r[2]) {
            char hex[3] = {r[1], r[2], 0};
            *w++ = (char)strtol(hex, NULL, 16);
            r += 2;
        } else {
            *w++ = *r;
        }
    }
    *w = '\0';
}

char *fa_form_get(const char *form, const char *name)
{
    for (const char *p = form; *p; p++)
        if (!strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~%+=&", *p))
            fail_msg("unencoded byte '%c' in form %s", *p, form);
    char *copy = xstrdup(form);
    char *save = NULL, *found = NULL;
    for (char *pair = strtok_r(copy, "&", &save); pair; pair = strtok_r(NULL, "&", &save)) {
        char *eq = strchr(pair, '=');
        assert_non_null(eq);
        *eq = '\0';
        form_decode(pair);
        if (strcmp(pair, name) == 0) {
            assert_null(found); /* never repeated */
            form_decode(eq + 1);
            found = xstrdup(eq + 1);
        }
    }
    free(copy);
    return found;
}
