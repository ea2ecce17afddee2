/*
 * Building small BTF blobs by hand for C unit tests: types are appended
 * with their members, ids count from 1, names go to the string section.
 * Start with blob_init(); finish() writes header, types and strings.
 */
#ifndef FASTTCPSTAT_TEST_BTF_BLOB_H
#define FASTTCPSTAT_TEST_BTF_BLOB_H

#include <stdint.h>
#include <string.h>

struct blob {
    unsigned char types[4096];
    size_t types_len;
    char strs[1024];
    size_t strs_len;
    uint32_t next_id;
};

static inline void
blob_init(struct blob *b)
{
    memset(b, 0, sizeof(*b));
    b->strs_len = 1;  /* string 0 is "" */
    b->next_id = 1;
}

static inline uint32_t
str(struct blob *b, const char *s)
{
    uint32_t off = (uint32_t)b->strs_len;
    size_t n = strlen(s) + 1;
    memcpy(b->strs + b->strs_len, s, n);
    b->strs_len += n;
    return off;
}

static inline void
put32(struct blob *b, uint32_t v)
{
    memcpy(b->types + b->types_len, &v, 4);
    b->types_len += 4;
}

static inline uint32_t
type(struct blob *b, const char *name, uint32_t kind, uint32_t vlen,
     int kflag, uint32_t size_or_type)
{
    put32(b, name ? str(b, name) : 0);
    put32(b, (kind << 24) | vlen | (kflag ? 1u << 31 : 0));
    put32(b, size_or_type);
    return b->next_id++;
}

static inline uint32_t
int_type(struct blob *b, const char *name, uint32_t bytes)
{
    uint32_t id = type(b, name, 1, 0, 0, bytes);
    put32(b, bytes * 8);  /* encoding: bits */
    return id;
}

static inline void
member(struct blob *b, const char *name, uint32_t type_id, uint32_t bits)
{
    put32(b, name ? str(b, name) : 0);
    put32(b, type_id);
    put32(b, bits);
}

static inline size_t
finish(struct blob *b, unsigned char *out)
{
    uint16_t magic = 0xEB9F;
    uint32_t hdr[5] = {24, 0, (uint32_t)b->types_len, (uint32_t)b->types_len,
                       (uint32_t)b->strs_len};
    memcpy(out, &magic, 2);
    out[2] = 1;
    out[3] = 0;
    memcpy(out + 4, hdr, sizeof(hdr));
    memcpy(out + 24, b->types, b->types_len);
    memcpy(out + 24 + b->types_len, b->strs, b->strs_len);
    return 24 + b->types_len + b->strs_len;
}

#endif /* FASTTCPSTAT_TEST_BTF_BLOB_H */
