/* ingest: placeholder translation unit until the server lands. */
int ingest_placeholder(void);
int ingest_placeholder(void)
{
    return 0;
}
