/* The fault suite's hostile inputs through the C API: each refused with a clear code and
 * message, while valid neighbours in the same JSON array are still accepted. */
#include <stdlib.h>

#include "harness.h"

typedef struct bad_inputs {
    counter reports;
} bad_inputs;

static void on_error(void *ctx, const steward_error_report *r) {
    if (steward_error_report_kind(r) == STEWARD_REPORT_BAD_INPUT)
        counter_add(&((bad_inputs *)ctx)->reports, 1);
}

static steward_node *hostile_node(bad_inputs *bi) {
    steward_node_builder *b = test_builder("hostile");
    steward_node *n = NULL;
    if (!b) return NULL;
    steward_error_callback cb = {bi, on_error, NULL};
    if (steward_node_builder_on_error(b, cb) != STEWARD_RESULT_OK) {
        steward_node_builder_free(b);
        return NULL;
    }
    /* nobody is there: accepted messages just wait in the outbox */
    if (steward_node_start(b, &n) != STEWARD_RESULT_OK) return NULL;
    return n;
}

TEST(text_that_is_not_json_is_refused_whole) {
    bad_inputs bi;
    counter_init(&bi.reports);
    steward_node *n = hostile_node(&bi);
    CHECK(n != NULL);
    static const struct {
        const char *json;
        steward_result code;
        const char *needle;
    } cases[] = {
        {"{", STEWARD_RESULT_INVALID_MESSAGE, "not valid JSON"},
        {"[{\"toNode\":\"a\"", STEWARD_RESULT_INVALID_MESSAGE, "not valid JSON"}, /* truncated */
        {"", STEWARD_RESULT_INVALID_MESSAGE, "not valid JSON"},
        {"[1,2,,]", STEWARD_RESULT_INVALID_MESSAGE, "not valid JSON"},
        {"\xff\xfe[]", STEWARD_RESULT_INVALID_UTF8, "UTF-8"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        steward_send_report *r = NULL;
        CHECK_RC(steward_node_send_json(n, cases[i].json, &r), cases[i].code);
        CHECK_STR_CONTAINS(last_error(), cases[i].needle);
        CHECK(r == NULL);
    }
    /* hostile nesting is refused without exhausting the stack */
    size_t depth = 100000;
    char *deep = malloc(depth + 1);
    CHECK(deep != NULL);
    memset(deep, '[', depth);
    deep[depth] = 0;
    steward_send_report *r = NULL;
    steward_result rc = steward_node_send_json(n, deep, &r);
    free(deep);
    CHECK(rc == STEWARD_RESULT_INVALID_MESSAGE);
    CHECK_STR_CONTAINS(last_error(), "nested");
    /* a JSON value that is not a message is one refused element */
    CHECK_OK(steward_node_send_json(n, "42", &r));
    CHECK(steward_send_report_accepted_len(r) == 0);
    CHECK(steward_send_report_rejected_len(r) == 1);
    CHECK_STR_CONTAINS(steward_send_report_rejected_message(r, 0), "expected a JSON array");
    steward_send_report_free(r);
    steward_node_free(n);
    counter_destroy(&bi.reports);
}

TEST(bad_elements_are_refused_and_valid_neighbours_accepted) {
    bad_inputs bi;
    counter_init(&bi.reports);
    steward_node *n = hostile_node(&bi);
    CHECK(n != NULL);
    char long_name[70];
    memset(long_name, 'x', 65);
    long_name[65] = 0;
    /* element, field the message must name */
    static const struct {
        const char *element;
        const char *field;
    } bad[] = {
        {"{\"toNode\":\"a.b\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
        {"{\"toNode\":\"a*\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
        {"{\"toNode\":\"a>\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
        {"{\"toNode\":\"a b\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
        {"{\"toNode\":\"a/b\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
        {"{\"toNode\":\"..\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
        {"{\"toNode\":\"$SYS\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
        {"{\"toNode\":\"sk\xc3\xadp\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
        {"{\"toNode\":\"LONG\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"no such\"}", "method"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"_internal\"}", "method"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"echo\",\"bogus\":1}", "bogus"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"echo\",\"fromNode\":\"x\"}", "fromNode"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"echo\",\"ackTimeout\":-5}", "ackTimeout"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"echo\",\"ackTimeout\":1e300}", "ackTimeout"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"echo\",\"ttl\":1e300}", "ttl"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"echo\",\"methodTimeout\":0}", "methodTimeout"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"echo\",\"retries\":-1}", "retries"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"sometimes\",\"method\":\"echo\"}", "commandOrEvent"},
        {"{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"echo\",\"data\":[1]}", "data"},
        {"{\"commandOrEvent\":\"command\",\"method\":\"echo\"}", "toNode"},
    };
    size_t n_bad = sizeof bad / sizeof bad[0];
    /* [valid, bad..., valid] */
    const char *valid_first =
        "{\"toNode\":\"ok\",\"commandOrEvent\":\"command\",\"method\":\"shellCommand\","
        "\"data\":[\"sh\",\"-c\",\"echo $HOME; rm -rf / `reboot` && true\"]}";
    const char *valid_last = "{\"toNode\":\"ok2\",\"commandOrEvent\":\"event\",\"method\":\"anyMethod\"}";
    size_t cap = 65536;
    char *json = malloc(cap);
    CHECK(json != NULL);
    size_t used = (size_t)snprintf(json, cap, "[%s", valid_first);
    for (size_t i = 0; i < n_bad; i++) {
        const char *el = bad[i].element;
        const char *at = strstr(el, "LONG");
        if (at) {
            used += (size_t)snprintf(json + used, cap - used, ",%.*s%s%s", (int)(at - el), el,
                                     long_name, at + 4);
        } else {
            used += (size_t)snprintf(json + used, cap - used, ",%s", el);
        }
    }
    snprintf(json + used, cap - used, ",%s]", valid_last);

    steward_send_report *r = NULL;
    steward_result rc = steward_node_send_json(n, json, &r);
    free(json);
    CHECK_OK(rc);
    CHECK(steward_send_report_accepted_len(r) == 2);
    CHECK(steward_send_report_accepted_index(r, 0) == 0);
    CHECK(steward_send_report_accepted_index(r, 1) == (int64_t)n_bad + 1);
    CHECK(steward_send_report_rejected_len(r) == n_bad);
    /* Refused elements come in any order; each names its index and the field at fault. */
    bool seen[64] = {false};
    for (size_t i = 0; i < n_bad; i++) {
        const char *msg = steward_send_report_rejected_message(r, i);
        int64_t index = steward_send_report_rejected_index(r, i);
        char at_index[32];
        snprintf(at_index, sizeof at_index, "index %lld", (long long)index);
        if (index < 1 || index > (int64_t)n_bad || seen[index] ||
            steward_send_report_rejected_code(r, i) != STEWARD_RESULT_INVALID_MESSAGE ||
            strstr(msg, at_index) == NULL || strstr(msg, bad[index - 1].field) == NULL) {
            harness_fail(__FILE__, __LINE__, "refusal %zu: code %s, index %lld, message \"%s\"",
                         i, steward_result_name(steward_send_report_rejected_code(r, i)),
                         (long long)index, msg);
        } else {
            seen[index] = true;
        }
    }
    CHECK(steward_send_report_rejected_message(r, n_bad) == NULL);
    CHECK(steward_send_report_rejected_code(r, n_bad) == STEWARD_RESULT_OK);

    /* the accepted ones are durably queued (nobody is there to receive them) */
    steward_message_status *st = NULL;
    CHECK_OK(steward_node_message_status(n, steward_send_report_accepted_id(r, 0), &st));
    steward_message_state state = steward_message_status_state(st);
    CHECK(state == STEWARD_STATE_QUEUED || state == STEWARD_STATE_SENT);
    steward_message_status_free(st);
    steward_send_report_free(r);
    if (harness_failed()) return;

    /* every refused element was also reported to the error callback as bad input */
    CHECK(counter_wait(&bi.reports, (int)n_bad, 10000));
    steward_node_free(n);
    counter_destroy(&bi.reports);
}

TEST(to_nodes_fans_out_and_duplicate_ids_are_refused) {
    bad_inputs bi;
    counter_init(&bi.reports);
    steward_node *n = hostile_node(&bi);
    CHECK(n != NULL);
    steward_send_report *r = NULL;
    CHECK_OK(steward_node_send_json(
        n,
        "[{\"toNodes\":[\"s1\",\"s2\",\"s1\"],\"commandOrEvent\":\"event\",\"method\":\"m\"},"
        " {\"toNodes\":[\"s1\",\"s2\"],\"id\":\"fixed\",\"commandOrEvent\":\"event\",\"method\":\"m\"}]",
        &r));
    CHECK(steward_send_report_accepted_len(r) == 2); /* s1 and s2, duplicates removed */
    CHECK(steward_send_report_rejected_len(r) == 1);
    CHECK_STR_CONTAINS(steward_send_report_rejected_message(r, 0), "id");
    steward_send_report_free(r);
    steward_node_free(n);
    counter_destroy(&bi.reports);
}
