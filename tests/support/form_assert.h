/* form_assert: reading application/x-www-form-urlencoded bodies in cmocka tests. */
#ifndef HF_TEST_FORM_ASSERT_H
#define HF_TEST_FORM_ASSERT_H

/* The decoded value of name in form (caller frees), or NULL. Fails the test when a byte is
 * outside the form alphabet (something left unencoded) or a name is given twice. */
char *fa_form_get(const char *form, const char *name);

#endif
