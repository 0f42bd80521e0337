/* steward_node_start always takes a non-NULL builder: on success and on every failure (a NULL
 * out pointer, a bad setting, an unusable or busy data directory) the builder is freed by the
 * library and the drop of each callback it held runs once. The caller never frees it: under
 * AddressSanitizer a builder freed twice would be reported, and one never freed shows up as a
 * leak at exit (test-c.sh fails the run either way). */
#include "harness.h"

static counter drops;
static void count_drop(void *ctx) {
    (void)ctx;
    counter_add(&drops, 1);
}
static void never_status(void *ctx, const steward_message_status *s) {
    (void)ctx;
    (void)s;
}
static void never_error(void *ctx, const steward_error_report *r) {
    (void)ctx;
    (void)r;
}
static void never_method(void *ctx, const steward_request *r, steward_completion *c) {
    (void)ctx;
    (void)r;
    (void)c;
}
static void never_event(void *ctx, const steward_request *r) {
    (void)ctx;
    (void)r;
}

/* A test builder holding four callbacks, each counting its drop in `drops`. */
static steward_node_builder *builder_with_callbacks(const char *name) {
    steward_node_builder *b = test_builder(name);
    if (b == NULL) return NULL;
    steward_status_callback st = {NULL, never_status, count_drop};
    steward_error_callback er = {NULL, never_error, count_drop};
    steward_method_callback me = {NULL, never_method, count_drop};
    steward_event_callback ev = {NULL, never_event, count_drop};
    if (steward_node_builder_on_finished(b, st) != STEWARD_RESULT_OK ||
        steward_node_builder_on_error(b, er) != STEWARD_RESULT_OK ||
        steward_node_builder_serve(b, "widget", STEWARD_KIND_COMMAND, me) != STEWARD_RESULT_OK ||
        steward_node_builder_on_event(b, "tick", ev) != STEWARD_RESULT_OK) {
        steward_node_builder_free(b);
        return NULL;
    }
    return b;
}

TEST(start_with_a_null_builder_changes_nothing) {
    steward_node *n = NULL;
    CHECK_RC(steward_node_start(NULL, &n), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_STR_CONTAINS(last_error(), "`builder`");
    CHECK(n == NULL);
    CHECK_RC(steward_node_start(NULL, NULL), STEWARD_RESULT_NULL_PARAMETER);
}

TEST(start_with_a_null_out_still_takes_the_builder) {
    counter_init(&drops);
    steward_node_builder *b = builder_with_callbacks("own-null-out");
    CHECK(b != NULL);
    CHECK_RC(steward_node_start(b, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_STR_CONTAINS(last_error(), "`out`");
    /* Freed by the start: every callback it held was dropped once; the builder is not ours. */
    CHECK(counter_get(&drops) == 4);
    counter_destroy(&drops);
}

TEST(start_with_a_bad_setting_takes_the_builder) {
    counter_init(&drops);
    steward_node_builder *b = builder_with_callbacks("own-bad-seed");
    CHECK(b != NULL);
    /* Accepted by the setter, refused by the start. */
    CHECK_OK(steward_node_builder_set_broker_nkey_seed(b, "SUnot-a-seed"));
    steward_node *n = NULL;
    CHECK_RC(steward_node_start(b, &n), STEWARD_RESULT_CONFIG);
    CHECK(n == NULL);
    CHECK(counter_get(&drops) == 4);

    b = builder_with_callbacks("own-bad-dir");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_data_dir(b, "/dev/null/not-a-dir"));
    steward_result rc = steward_node_start(b, &n);
    CHECK(rc != STEWARD_RESULT_OK);
    CHECK(n == NULL);
    CHECK(strlen(last_error()) > 0);
    CHECK(counter_get(&drops) == 8);
    counter_destroy(&drops);
}

TEST(start_on_a_busy_data_dir_takes_the_builder) {
    counter_init(&drops);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", fresh_dir("own-busy"));
    steward_node_builder *b = test_builder("own-busy-a");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_data_dir(b, dir));
    steward_node *first = NULL;
    CHECK_OK(steward_node_start(b, &first));

    b = builder_with_callbacks("own-busy-b");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_data_dir(b, dir));
    steward_node *second = NULL;
    steward_result rc = steward_node_start(b, &second);
    steward_node_free(first);
    CHECK(rc == STEWARD_RESULT_DATA_DIR_IN_USE);
    CHECK(second == NULL);
    CHECK(counter_get(&drops) == 4);
    counter_destroy(&drops);
}

TEST(start_that_succeeds_hands_the_callbacks_to_the_node) {
    counter_init(&drops);
    steward_node_builder *b = builder_with_callbacks("own-ok");
    CHECK(b != NULL);
    steward_node *n = NULL;
    CHECK_OK(steward_node_start(b, &n));
    CHECK(n != NULL);
    CHECK(counter_get(&drops) == 0); /* the node holds them now */
    steward_node_free(n);
    CHECK(counter_get(&drops) == 4);
    counter_destroy(&drops);
}
