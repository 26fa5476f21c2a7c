/* test_spool.c - envelope and state codecs, queue IDs, and a real commit /
 * load / corrupt cycle in a temporary spool directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include "spool.h"

static struct envelope sample(void)
{
    struct envelope e;
    memset(&e, 0, sizeof e);
    qid_generate(e.id);
    e.arrival = 1790000000;
    strcpy(e.client_ip, "192.0.2.7");
    strcpy(e.helo, "client.test");
    strcpy(e.proto, "ESMTP");
    e.body = BODY_8BITMIME;
    e.sender = strdup("sender@src.test");
    e.rcpts = calloc(2, sizeof *e.rcpts);
    e.rcpts[0] = strdup("a@dst.test");
    e.rcpts[1] = strdup("b@dst.test");
    e.nrcpts = 2;
    e.size = 42;
    return e;
}

static void envelope_roundtrip(void **state)
{
    (void)state;
    struct envelope e = sample();
    struct buf b;
    buf_init(&b);
    struct envelope_offsets off;
    e.hops = 3;
    assert_int_equal(spool_envelope_encode(&e, &b, &off), 0);
    assert_memory_equal(buf_head(&b) + off.size, "00000000000000000042", 20);
    assert_memory_equal(buf_head(&b) + off.hops, "0003", 4);
    buf_puts(&b, "message bytes");
    struct envelope d;
    size_t body_off;
    const char *err = NULL;
    assert_int_equal(spool_envelope_decode(buf_head(&b), b.len, &d, &body_off, &err), 0);
    assert_string_equal(d.id, e.id);
    assert_int_equal(d.arrival, e.arrival);
    assert_string_equal(d.client_ip, "192.0.2.7");
    assert_string_equal(d.helo, "client.test");
    assert_int_equal(d.body, BODY_8BITMIME);
    assert_string_equal(d.sender, "sender@src.test");
    assert_int_equal(d.nrcpts, 2);
    assert_string_equal(d.rcpts[1], "b@dst.test");
    assert_int_equal(d.size, 42);
    assert_memory_equal(buf_head(&b) + body_off, "message bytes", 13);
    assert_int_equal(b.len - body_off, 13);
    envelope_free(&d);
    envelope_free(&e);
    buf_free(&b);
}

static void envelope_dsn_roundtrip(void **state)
{
    (void)state;
    struct envelope e = sample();
    e.ret = DSN_RET_FULL;
    strcpy(e.envid, "QQ+2B1");
    e.body = BODY_BINARYMIME;
    e.dsn = calloc(2, sizeof *e.dsn);
    e.dsn[1].notify = DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE;
    e.dsn[1].orcpt = strdup("rfc822;b+40dst.test");
    struct buf b;
    buf_init(&b);
    struct envelope_offsets off;
    assert_int_equal(spool_envelope_encode(&e, &b, &off), 0);
    struct envelope d;
    size_t body_off;
    const char *err = NULL;
    assert_int_equal(spool_envelope_decode(buf_head(&b), b.len, &d, &body_off, &err), 0);
    assert_int_equal(d.ret, DSN_RET_FULL);
    assert_string_equal(d.envid, "QQ+2B1");
    assert_int_equal(d.body, BODY_BINARYMIME);
    assert_int_equal(d.dsn[0].notify, 0);
    assert_null(d.dsn[0].orcpt);
    assert_int_equal(d.dsn[1].notify, DSN_NOTIFY_SUCCESS | DSN_NOTIFY_FAILURE);
    assert_string_equal(d.dsn[1].orcpt, "rfc822;b+40dst.test");
    envelope_free(&d);
    /* an rdsn line with no rcpt before it is corrupt */
    const char *bad = "POSTERN-SPOOL 1\nrdsn=NEVER\n\n";
    assert_int_equal(spool_envelope_decode(bad, strlen(bad), &d, &body_off, &err), -1);
    envelope_free(&e);
    buf_free(&b);
}

static void envelope_null_sender(void **state)
{
    (void)state;
    struct envelope e = sample();
    free(e.sender);
    e.sender = strdup("");
    struct buf b;
    buf_init(&b);
    struct envelope_offsets so;
    size_t bo;
    spool_envelope_encode(&e, &b, &so);
    struct envelope d;
    const char *err;
    assert_int_equal(spool_envelope_decode(buf_head(&b), b.len, &d, &bo, &err), 0);
    assert_string_equal(d.sender, "");
    envelope_free(&d);
    envelope_free(&e);
    buf_free(&b);
}

static void envelope_rejects_garbage(void **state)
{
    (void)state;
    struct envelope d;
    size_t bo;
    const char *err = NULL;
    assert_int_equal(spool_envelope_decode("hello", 5, &d, &bo, &err), -1);
    assert_non_null(err);
    const char *trunc = "POSTERN-SPOOL 1\nid=0123456789ABCDEF\nfrom=a@b.c\n";
    assert_int_equal(spool_envelope_decode(trunc, strlen(trunc), &d, &bo, &err), -1);
    const char *norcpt = "POSTERN-SPOOL 1\nid=0123456789ABCDEF\nfrom=a@b.c\nsize=00000000000000000000\n\n";
    assert_int_equal(spool_envelope_decode(norcpt, strlen(norcpt), &d, &bo, &err), -1);
    const char *unknown = "POSTERN-SPOOL 1\nbogus=1\n\n";
    assert_int_equal(spool_envelope_decode(unknown, strlen(unknown), &d, &bo, &err), -1);
    /* fields that would smuggle a command into MAIL or RCPT */
    const char *good = "POSTERN-SPOOL 1\nid=0123456789ABCDEF\nfrom=a@src.test\nrcpt=x@dst.test\n"
                       "size=00000000000000000000\n\n";
    assert_int_equal(spool_envelope_decode(good, strlen(good), &d, &bo, &err), 0);
    envelope_free(&d);
    const char *cr = "POSTERN-SPOOL 1\nid=0123456789ABCDEF\nfrom=a@src.test>\rRCPT TO:<x@evil.test\n"
                     "rcpt=x@dst.test\nsize=00000000000000000000\n\n";
    assert_int_equal(spool_envelope_decode(cr, strlen(cr), &d, &bo, &err), -1);
    assert_string_equal(err, "control character in the envelope");
    const char *nul = "POSTERN-SPOOL 1\nid=0123456789ABCDEF\nfrom=a@src.test\nrcpt=x@dst.test\0y\n"
                      "size=00000000000000000000\n\n";
    assert_int_equal(spool_envelope_decode(nul, 97, &d, &bo, &err), -1);
    const char *bad = "POSTERN-SPOOL 1\nid=0123456789ABCDEF\nfrom=a@src.test\nrcpt=x> NOTIFY=NEVER@dst.test\n"
                      "size=00000000000000000000\n\n";
    assert_int_equal(spool_envelope_decode(bad, strlen(bad), &d, &bo, &err), -1);
    assert_string_equal(err, "bad recipient address in the envelope");
    /* a field given twice: the second sender would silently win */
    const char *twice = "POSTERN-SPOOL 1\nid=0123456789ABCDEF\nfrom=a@src.test\nfrom=b@src.test\nrcpt=x@dst.test\n"
                        "size=00000000000000000000\n\n";
    assert_int_equal(spool_envelope_decode(twice, strlen(twice), &d, &bo, &err), -1);
    assert_string_equal(err, "an envelope field that comes once is repeated");
    /* a recipient twice (in any case) would be sent twice */
    const char *rtwice = "POSTERN-SPOOL 1\nid=0123456789ABCDEF\nfrom=a@src.test\nrcpt=x@dst.test\nrcpt=y@dst.test\n"
                         "rcpt=X@DST.test\nsize=00000000000000000000\n\n";
    assert_int_equal(spool_envelope_decode(rtwice, strlen(rtwice), &d, &bo, &err), -1);
    assert_string_equal(err, "a recipient is listed twice in the envelope");
}

static void state_roundtrip(void **state)
{
    (void)state;
    struct rcpt_state st[3] = {
        {.status = RCPT_DONE, .attempts = 1, .last_reply = {(char *)"250 2.0.0 Ok"}},
        {.status = RCPT_PENDING, .attempts = 2, .next_try = 1790000600, .last_reply = {(char *)"451 4.3.0 try later"},
         .remote = {(char *)"mx.example.test[192.0.2.7]"}, .in_reply_to = {(char *)"end of DATA"},
         .nexthop = {(char *)"smtp:[127.0.0.9]:2600"}, .min_tls = 3},
        {.status = RCPT_BOUNCED, .attempts = 1, .last_reply = {(char *)"550 5.1.1 no such user"}},
    };
    struct buf b;
    buf_init(&b);
    assert_int_equal(spool_state_encode((struct msg_flags){.held = true, .warned = true, .reason = "virus"}, st, 3, &b), 0);
    struct rcpt_state d[3];
    memset(d, 0, sizeof d);
    struct msg_flags f = {0};
    const char *err;
    assert_int_equal(spool_state_decode(buf_head(&b), b.len, &f, d, 3, &err), 0);
    assert_true(f.held);
    assert_true(f.warned);
    assert_int_equal(d[2].status, RCPT_BOUNCED);
    assert_string_equal(f.reason, "virus");
    assert_string_equal(rtext_str(d[1].nexthop), "smtp:[127.0.0.9]:2600");
    assert_string_equal(rtext_str(d[0].nexthop), "");
    assert_int_equal(d[1].min_tls, 3);
    assert_int_equal(d[0].min_tls, 0);
    assert_int_equal(d[0].status, RCPT_DONE);
    assert_int_equal(d[1].attempts, 2);
    assert_int_equal(d[1].next_try, 1790000600);
    assert_string_equal(rtext_str(d[1].last_reply), "451 4.3.0 try later");
    assert_string_equal(rtext_str(d[2].last_reply), "550 5.1.1 no such user");
    assert_string_equal(rtext_str(d[1].remote), "mx.example.test[192.0.2.7]");
    assert_string_equal(rtext_str(d[1].in_reply_to), "end of DATA");
    assert_string_equal(rtext_str(d[0].remote), "");
    /* a state that does not cover every recipient is refused */
    assert_int_equal(spool_state_decode(buf_head(&b), b.len, &f, d, 4, &err), -1);
    buf_free(&b);
    /* a copy owns texts of its own; an empty text is none at all */
    struct rcpt_state c;
    assert_int_equal(rcpt_state_copy(&c, &d[1]), 0);
    assert_ptr_not_equal(c.last_reply.s, d[1].last_reply.s);
    for (int i = 0; i < 3; i++)
        rcpt_state_clear(&d[i]);
    assert_string_equal(rtext_str(c.remote), "mx.example.test[192.0.2.7]");
    assert_null(d[1].remote.s);
    rtext_printf(&c.remote, RCPT_REMOTE_SIZE, "%s", "");
    assert_null(c.remote.s);
    rtext_printf(&c.in_reply_to, 8, "%s", "end of DATA");     /* kept to size - 1 bytes */
    assert_string_equal(c.in_reply_to.s, "end of ");
    rtext_printf(&c.last_reply, RCPT_REPLY_SIZE, "4.4.7 expired; last error: %s", rtext_str(c.last_reply));
    assert_string_equal(c.last_reply.s, "4.4.7 expired; last error: 451 4.3.0 try later");
    rcpt_state_clear(&c);
}

static void qids_are_unique_and_sorted(void **state)
{
    (void)state;
    char prev[QID_LEN] = "";
    for (int i = 0; i < 20000; i++) {
        char id[QID_LEN];
        qid_generate(id);
        assert_true(qid_valid(id));
        assert_true(strcmp(prev, id) < 0);
        strcpy(prev, id);
    }
    assert_false(qid_valid("xyz"));
    assert_false(qid_valid("0123456789abcdef"));
}

static char spool_dir[] = "/tmp/postern-test-spool-XXXXXX";

static void ensure_spool(void)
{
    static int made;
    if (!made++) {
        assert_non_null(mkdtemp(spool_dir));
        assert_int_equal(spool_init(spool_dir, true), 0);
    }
}

static void commit_load_and_corrupt(void **state)
{
    (void)state;
    ensure_spool();
    struct envelope e = sample();
    e.size = 0;
    struct spool_writer w;
    assert_int_equal(spool_writer_open(&w, &e), 0);
    spool_writer_write(&w, "Subject: hi\r\n\r\nbody\r\n", 21);
    w.hops = 7;
    assert_int_equal(spool_writer_commit(&w), 0);
    struct envelope d;
    size_t bo;
    const char *err = NULL;
    assert_int_equal(spool_load(e.id, &d, &bo, &err), 0);
    assert_int_equal(d.size, 21);
    assert_int_equal(d.hops, 7);
    envelope_free(&d);
    /* truncate the file: load must notice */
    char path[512];
    snprintf(path, sizeof path, "%s/queue/%s", spool_dir, e.id);
    assert_int_equal(truncate(path, (off_t)(bo + 5)), 0);
    assert_int_equal(spool_load(e.id, &d, &bo, &err), -1);
    spool_move_corrupt(e.id, err);
    snprintf(path, sizeof path, "%s/corrupt/%s", spool_dir, e.id);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    unlink(path);
    envelope_free(&e);
}

/* The file at path, whole (malloc'd; its length in *len). */
static char *read_whole(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    assert_int_equal(fread(p, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return p;
}

/* One message through the writer: a header section, a body of blen bytes
 * in chunks of chunk, a rewrite with a longer header section when asked;
 * what is readable at EOM and what the committed file holds checked. */
static void one_message(size_t blen, size_t chunk, bool rewrite)
{
    struct envelope e = sample();
    e.size = 0;
    struct spool_writer w;
    assert_int_equal(spool_writer_open(&w, &e), 0);
    const char *hdr = "Subject: sizes\r\n\r\n", *hdr2 = "Subject: sizes\r\nX-Added: at eom\r\n\r\n";
    char *body = malloc(blen + 1);
    for (size_t i = 0; i < blen; i++)
        body[i] = i % 80 == 78 ? '\r' : i % 80 == 79 ? '\n' : (char)('a' + i % 26);
    spool_writer_write(&w, hdr, strlen(hdr));
    w.hdr_len = strlen(hdr);
    for (size_t at = 0; at < blen; at += chunk)
        spool_writer_write(&w, body + at, blen - at < chunk ? blen - at : chunk);
    /* at EOM: the body in memory, or all of it in the file */
    uint64_t body_start = w.env_len + w.hdr_len;
    const char *mem = spool_writer_readable(&w, body_start);
    if (mem) {
        assert_memory_equal(mem, body, blen);
    } else {
        char *disk = malloc(blen + 1);
        assert_int_equal(pread(w.fd, disk, blen, (off_t)body_start), (ssize_t)blen);
        assert_memory_equal(disk, body, blen);
        free(disk);
    }
    if (blen + 300 < SPOOL_WRITE_BEHIND)
        assert_non_null(mem);                 /* a small message is held back whole */
    if (blen > SPOOL_WRITE_BEHIND)
        assert_null(mem);
    const char *want_hdr = hdr;
    if (rewrite) {
        assert_int_equal(spool_writer_rewrite(&w, &e, hdr2, strlen(hdr2), NULL, 0), 0);
        want_hdr = hdr2;
    }
    assert_int_equal(spool_writer_commit(&w), 0);
    char path[512];
    snprintf(path, sizeof path, "%s/queue/%s", spool_dir, e.id);
    size_t len;
    char *file = read_whole(path, &len);
    struct envelope d;
    size_t bo;
    const char *err = NULL;
    assert_int_equal(spool_envelope_decode(file, len, &d, &bo, &err), 0);
    size_t hl = strlen(want_hdr);
    assert_int_equal(d.size, hl + blen);
    assert_int_equal(len, bo + hl + blen);
    assert_memory_equal(file + bo, want_hdr, hl);
    assert_memory_equal(file + bo + hl, body, blen);
    envelope_free(&d);
    free(file);
    free(body);
    unlink(path);
    envelope_free(&e);
}

/* The writer holds writes back up to SPOOL_WRITE_BEHIND: every size
 * around it, written whole, in socket-sized and in small chunks, with and
 * without a rewrite at EOM, gives the same file. */
static void held_back_writes_at_every_size(void **state)
{
    (void)state;
    ensure_spool();
    const size_t sizes[] = {0, 1, 4096, SPOOL_WRITE_BEHIND - 400, SPOOL_WRITE_BEHIND - 200, SPOOL_WRITE_BEHIND - 1,
                            SPOOL_WRITE_BEHIND, SPOOL_WRITE_BEHIND + 1, 2 * SPOOL_WRITE_BEHIND + 7, 300000};
    const size_t chunks[] = {1000, 16384, 1 << 20};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        for (size_t c = 0; c < sizeof chunks / sizeof *chunks; c++)
            for (int rw = 0; rw < 2; rw++)
                one_message(sizes[i], chunks[c], rw);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(envelope_roundtrip), cmocka_unit_test(envelope_dsn_roundtrip),
        cmocka_unit_test(envelope_null_sender),
        cmocka_unit_test(envelope_rejects_garbage), cmocka_unit_test(state_roundtrip),
        cmocka_unit_test(qids_are_unique_and_sorted), cmocka_unit_test(commit_load_and_corrupt),
        cmocka_unit_test(held_back_writes_at_every_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
