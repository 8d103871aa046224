/* fuzz_json: the JSON parser on arbitrary bytes. What it accepts must serialise to text that
 * parses back to the same serialisation; every object and array must report as its raw text a
 * slice of the input that parses on its own to the same value; and no string may hold a NUL. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_node(hf_json v, const char *input, size_t size)
{
    size_t len = 0;
    const char *raw = hf_json_raw(v, &len);
    if (!hf_json_is_object(v) && !hf_json_is_array(v)) {
        check(raw == NULL);
        const char *s = hf_json_str(v);
        check(!s || strlen(s) <= size);
        return;
    }
    check(raw != NULL && raw >= input && len >= 2 && (size_t)(raw - input) + len <= size);
    check((raw[0] == '{' && raw[len - 1] == '}') || (raw[0] == '[' && raw[len - 1] == ']'));
    hf_json alone = hf_json_parse(raw, len, NULL, 0);
    check(alone != NULL);
    hf_buf a = {0}, b = {0};
    hf_json_serialize(v, &a);
    hf_json_serialize(alone, &b);
    check(a.len == b.len && memcmp(a.data, b.data, a.len) == 0);
    hf_buf_free(&a);
    hf_buf_free(&b);
    hf_json_free(alone);
    for (size_t i = 0; i < hf_json_len(v); i++) {
        const char *key = NULL;
        hf_json child = hf_json_is_object(v) ? hf_json_member(v, i, &key) : hf_json_at(v, i);
        check(child != NULL);
        check(!hf_json_is_object(v) || (key && strlen(key) <= size));
        check_node(child, input, size);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *input = (const char *)data;
    char err[256];
    hf_json v = hf_json_parse(input, size, err, sizeof err);
    if (!v) {
        check(err[0] != '\0' && strchr(err, '\n') == NULL);
        return 0;
    }
    check_node(v, input, size);
    hf_buf once = {0}, twice = {0};
    hf_json_serialize(v, &once);
    hf_json again = hf_json_parse(once.data, once.len, NULL, 0);
    check(again != NULL);
    hf_json_serialize(again, &twice);
    check(once.len == twice.len && memcmp(once.data, twice.data, once.len) == 0);
    hf_json_free(again);
    hf_buf_free(&once);
    hf_buf_free(&twice);
    hf_json_free(v);
    return 0;
}
