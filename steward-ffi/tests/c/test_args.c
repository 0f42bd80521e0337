/* NULL and invalid arguments: each returns the right code and the last error names the problem. */
#include <stdlib.h>

#include "harness.h"

static counter drops;
static void count_drop(void *ctx) {
    (void)ctx;
    counter_add(&drops, 1);
}
static void never_called_status(void *ctx, const steward_message_status *s) {
    (void)ctx;
    (void)s;
}
static void never_called_method(void *ctx, const steward_request *r, steward_completion *c) {
    (void)ctx;
    (void)r;
    (void)c;
}

TEST(builder_rejects_null_and_bad_arguments) {
    steward_node_builder *b = NULL;
    CHECK_RC(steward_node_builder_new(NULL, &b), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_STR_CONTAINS(last_error(), "`name`");
    CHECK(steward_last_error_code() == STEWARD_RESULT_NULL_PARAMETER);
    CHECK(b == NULL); /* out-params are written only on success */
    CHECK_RC(steward_node_builder_new("ok", NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_STR_CONTAINS(last_error(), "`out`");
    CHECK_RC(steward_node_builder_new("bad\xff\xfe", &b), STEWARD_RESULT_INVALID_UTF8);
    CHECK_STR_CONTAINS(last_error(), "not valid UTF-8");
    CHECK_RC(steward_node_builder_new("bad.name", &b), STEWARD_RESULT_INVALID_NAME);
    CHECK_STR_CONTAINS(last_error(), "'.'");
    CHECK(b == NULL);

    CHECK_OK(steward_node_builder_new("args-node", &b));
    CHECK(b != NULL);
    CHECK_RC(steward_node_builder_set_ack_timeout_ms(b, -5), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(last_error(), "-5");
    CHECK_RC(steward_node_builder_set_ack_timeout_ms(b, INT64_MAX), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(last_error(), "maximum");
    CHECK_RC(steward_node_builder_set_method_timeout_ms(b, 0), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_ttl_ms(b, -1), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_retries(b, -1), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_retries(b, 5000000000LL), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_window(b, 0), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_output_limit(b, -1), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_hello_interval_ms(b, -1000), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_add_broker(b, ""), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_add_broker(b, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_set_data_dir(NULL, "/tmp"), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_STR_CONTAINS(last_error(), "`builder`");
    CHECK_RC(steward_node_builder_set_central(b, "central*"), STEWARD_RESULT_INVALID_NAME);
    CHECK_STR_CONTAINS(last_error(), "wildcard");
    CHECK_RC(steward_node_builder_allow(b, "a b", "*"), STEWARD_RESULT_INVALID_NAME);
    CHECK_STR_CONTAINS(last_error(), "space");
    CHECK_OK(steward_node_builder_allow(b, "*", "*"));
    /* valid settings still work */
    CHECK_OK(steward_node_builder_set_retries(b, 3));
    CHECK_OK(steward_node_builder_set_retries_unlimited(b));
    CHECK_OK(steward_node_builder_set_ttl_ms(b, 0));
    CHECK_OK(steward_node_builder_set_window(b, 16));
    CHECK_OK(steward_node_builder_set_hello_interval_ms(b, 0));
    CHECK_OK(steward_node_builder_set_clock_skew_ms(b, 1000));
    CHECK_OK(steward_node_builder_set_output_limit(b, 4096));
    CHECK_OK(steward_node_builder_set_watch_inmsg(b, false));
    CHECK_OK(steward_node_builder_set_builtin_methods(b, true));
    CHECK_OK(steward_node_builder_set_central(b, "hq"));

    /* Callbacks: a NULL call is refused and the callback is not taken (drop not called). */
    counter_init(&drops);
    steward_status_callback bad_status = {NULL, NULL, count_drop};
    CHECK_RC(steward_node_builder_on_finished(b, bad_status), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_STR_CONTAINS(last_error(), "callback.call");
    steward_method_callback m = {NULL, never_called_method, count_drop};
    CHECK_RC(steward_node_builder_serve(b, "_reserved", STEWARD_KIND_COMMAND, m),
             STEWARD_RESULT_INVALID_NAME);
    CHECK_STR_CONTAINS(last_error(), "reserved");
    CHECK_RC(steward_node_builder_serve(b, "widget", 7, m), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(last_error(), "steward_kind");
    CHECK(counter_get(&drops) == 0);
    /* Taken callbacks are dropped exactly once when the builder is freed. */
    steward_status_callback ok_status = {NULL, never_called_status, count_drop};
    CHECK_OK(steward_node_builder_on_finished(b, ok_status));
    CHECK_OK(steward_node_builder_serve(b, "widget", STEWARD_KIND_COMMAND, m));
    /* Serving the same name again replaces (and drops) the first callback. */
    CHECK_OK(steward_node_builder_serve(b, "widget", STEWARD_KIND_COMMAND, m));
    CHECK(counter_get(&drops) == 1);
    steward_node_builder_free(b);
    CHECK(counter_get(&drops) == 3);
    counter_destroy(&drops);
    steward_node_builder_free(NULL);
}

/* steward_node_start's arguments and ownership: test_start_ownership.c. */

TEST(message_builder_rejects_bad_names_and_numbers) {
    steward_message *m = NULL;
    CHECK_RC(steward_message_new(NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_OK(steward_message_new(&m));
    static const struct {
        const char *name;
        const char *needle;
    } bad[] = {
        {"a.b", "'.'"},       {"a*", "wildcard"},   {"a>", "wildcard"},
        {"a b", "space"},     {"a/b", "'/'"},       {"..", "'.'"},
        {"$SYS", "'$'"},      {"sk\xc3\xadp", "non-ASCII"}, {"", "empty"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        CHECK_RC(steward_message_set_to(m, bad[i].name), STEWARD_RESULT_INVALID_NAME);
        CHECK_STR_CONTAINS(last_error(), bad[i].needle);
        CHECK_RC(steward_message_set_method(m, bad[i].name), STEWARD_RESULT_INVALID_NAME);
    }
    char long_name[80];
    memset(long_name, 'x', 65);
    long_name[65] = 0;
    CHECK_RC(steward_message_set_to(m, long_name), STEWARD_RESULT_INVALID_NAME);
    CHECK_STR_CONTAINS(last_error(), "65 characters");
    long_name[64] = 0;
    CHECK_OK(steward_message_set_to(m, long_name));
    CHECK_RC(steward_message_set_id(m, "id with space"), STEWARD_RESULT_INVALID_NAME);
    CHECK_RC(steward_message_set_kind(m, 2), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_message_set_ack_timeout_ms(m, -1), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(last_error(), "ack timeout");
    CHECK_RC(steward_message_set_ack_timeout_ms(m, INT64_MAX), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_message_set_ttl_ms(m, 0), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_message_set_ttl_ms(m, INT64_MAX), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_message_set_method_timeout_ms(m, -100), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_message_set_retries(m, -3), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_message_set_retry_wait_ms(m, -3), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_message_add_data(m, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_message_add_data(m, "\xc3"), STEWARD_RESULT_INVALID_UTF8);
    CHECK_OK(steward_message_add_data(m, "fine"));
    CHECK_OK(steward_message_clear_data(m));
    CHECK_RC(steward_message_set_to(NULL, "a"), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_STR_CONTAINS(last_error(), "`message`");
    steward_message_free(m);
    steward_message_free(NULL);
}

TEST(error_messages_and_buffers) {
    char buf[256];
    size_t n = 99;
    CHECK_RC(steward_node_builder_new(NULL, NULL), STEWARD_RESULT_NULL_PARAMETER);
    /* A small buffer gets a cut, NUL-terminated message. */
    CHECK_RC(steward_last_error_message(buf, 8, &n), STEWARD_RESULT_BUFFER_TOO_SMALL);
    CHECK(n == 7 && strlen(buf) == 7);
    CHECK_RC(steward_last_error_message(NULL, 8, &n), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_last_error_message(buf, sizeof buf, NULL), STEWARD_RESULT_NULL_PARAMETER);
    /* Asking for the message never replaces it. */
    CHECK(steward_last_error_code() == STEWARD_RESULT_NULL_PARAMETER);
    CHECK_OK(steward_last_error_message(buf, sizeof buf, &n));
    CHECK_STR_CONTAINS(buf, "NULL");
    CHECK_OK(steward_result_message(STEWARD_RESULT_DATA_DIR_IN_USE, buf, sizeof buf, &n));
    CHECK_STR_CONTAINS(buf, "data directory");
    CHECK_OK(steward_result_message(9999, buf, sizeof buf, &n));
    CHECK_STR_CONTAINS(buf, "unknown steward_result code 9999");
    CHECK(strcmp(steward_result_name(STEWARD_RESULT_PANIC), "STEWARD_RESULT_PANIC") == 0);
    CHECK(strcmp(steward_result_name(100), "STEWARD_RESULT_INVALID_NAME") == 0);
    CHECK(strcmp(steward_result_name(12345), "STEWARD_RESULT_UNKNOWN") == 0);
    CHECK(STEWARD_RESULT_OK == 0 && STEWARD_RESULT_NULL_PARAMETER == 1 && STEWARD_RESULT_PANIC == 2);
    CHECK(strlen(steward_version()) > 0);
}

TEST(accessors_and_frees_accept_null) {
    CHECK(steward_message_status_id(NULL) == NULL);
    CHECK(steward_message_status_state(NULL) == STEWARD_STATE_UNKNOWN);
    CHECK(steward_message_status_run_status(NULL) == STEWARD_RUN_NONE);
    int32_t code = 42;
    CHECK(!steward_message_status_exit_code(NULL, &code) && code == 42);
    CHECK(steward_message_status_stdout(NULL, NULL) == NULL);
    CHECK(steward_error_report_reason(NULL) == NULL);
    CHECK(steward_destination_list_len(NULL) == 0);
    CHECK(steward_destination_list_node(NULL, 3) == NULL);
    CHECK(steward_send_report_accepted_len(NULL) == 0);
    CHECK(steward_send_report_rejected_index(NULL, 0) == -1);
    CHECK(steward_request_data_len(NULL) == 0);
    CHECK(steward_request_data_at(NULL, 0, NULL) == NULL);
    CHECK(steward_node_name(NULL) == NULL);
    CHECK(!steward_node_is_connected(NULL));
    steward_message_status_free(NULL);
    steward_destination_list_free(NULL);
    steward_send_report_free(NULL);
    steward_node_free(NULL);
}

TEST(node_functions_reject_null) {
    steward_send_report *r = NULL;
    steward_message_status *s = NULL;
    steward_destination_list *d = NULL;
    bool flag = false;
    uint64_t lid = 0;
    char id[STEWARD_ID_BUF_LEN];
    CHECK_RC(steward_node_stop(NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_send_json(NULL, "[]", &r), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_STR_CONTAINS(last_error(), "`node`");
    CHECK_RC(steward_node_send(NULL, NULL, id, sizeof id), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_message_status(NULL, "x", &s), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_wait(NULL, "x", 10, &s), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_cancel(NULL, "x", &flag), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_destinations(NULL, &d), STEWARD_RESULT_NULL_PARAMETER);
    steward_status_callback cb = {NULL, never_called_status, NULL};
    CHECK_RC(steward_node_on_finished(NULL, cb, &lid), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_remove_listener(NULL, 1, &flag), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_unserve(NULL, "x", &flag), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_completion_ok(NULL, "x"), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_completion_fail(NULL, "x"), STEWARD_RESULT_NULL_PARAMETER);
    /* A completion handle that was never handed out is detected, not dereferenced. */
    CHECK_RC(steward_completion_ok((steward_completion *)(uintptr_t)0x7fffffff, "x"),
             STEWARD_RESULT_COMPLETION_NOT_PENDING);
    CHECK(r == NULL && s == NULL && d == NULL && lid == 0);
}
