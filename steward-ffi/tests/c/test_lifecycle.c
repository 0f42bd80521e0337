/* Stopping and freeing: double stop, stop then free, a stop while a slow callback runs, and
 * the calls that would deadlock from inside a callback. */
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#include "harness.h"

typedef struct slow {
    counter entered;
    counter left;
    counter drops;
    atomic_bool stopped;       /* set by the test once steward_node_stop returned */
    atomic_int calls_after_stop;
    steward_node *node;        /* for the in-callback checks */
    steward_result stop_in_callback;
    steward_result send_in_callback;
} slow;

static void slow_init(slow *s) {
    memset(s, 0, sizeof *s);
    counter_init(&s->entered);
    counter_init(&s->left);
    counter_init(&s->drops);
    s->stop_in_callback = STEWARD_RESULT_OK;
}

static void slow_destroy(slow *s) {
    counter_destroy(&s->entered);
    counter_destroy(&s->left);
    counter_destroy(&s->drops);
}

static void slow_finished(void *ctx, const steward_message_status *st) {
    slow *s = ctx;
    (void)st;
    if (atomic_load(&s->stopped)) atomic_fetch_add(&s->calls_after_stop, 1);
    counter_add(&s->entered, 1);
    usleep(400 * 1000); /* a slow callback: the stop must wait for it */
    counter_add(&s->left, 1);
}

static void slow_drop(void *ctx) {
    slow *s = ctx;
    /* drop runs after the last call has returned */
    if (counter_get(&s->entered) != counter_get(&s->left)) atomic_fetch_add(&s->calls_after_stop, 100);
    counter_add(&s->drops, 1);
}

/* Tries the calls that are refused or deferred inside a callback. */
static void reentrant_finished(void *ctx, const steward_message_status *st) {
    slow *s = ctx;
    (void)st;
    s->stop_in_callback = steward_node_stop(s->node);
    char id[STEWARD_ID_BUF_LEN];
    steward_message *m = NULL;
    steward_message_new(&m);
    steward_message_set_to(m, "lc-nobody");
    steward_message_set_method(m, "echo");
    steward_message_set_ack_timeout_ms(m, 0);
    s->send_in_callback = steward_node_send(s->node, m, id, sizeof id);
    steward_message_free(m);
    counter_add(&s->entered, 1);
}

static steward_result send_echo_to_self(steward_node *n, const char *self) {
    steward_message *m = NULL;
    char id[STEWARD_ID_BUF_LEN];
    steward_result rc = steward_message_new(&m);
    if (rc) return rc;
    if (!(rc = steward_message_set_to(m, self)) && !(rc = steward_message_set_method(m, "echo")) &&
        !(rc = steward_message_add_data(m, "hi")))
        rc = steward_node_send(n, m, id, sizeof id);
    steward_message_free(m);
    return rc;
}

TEST(double_stop_and_stop_then_free) {
    steward_node *n = NULL;
    steward_node_builder *b = test_builder("lc-double");
    CHECK(b != NULL);
    CHECK_OK(steward_node_start(b, &n));
    CHECK_OK(steward_node_stop(n));
    CHECK_OK(steward_node_stop(n));
    CHECK(!steward_node_is_connected(n));
    steward_send_report *r = NULL;
    CHECK_RC(steward_node_send_json(n, "[]", &r), STEWARD_RESULT_STOPPED);
    CHECK_STR_CONTAINS(last_error(), "stopped");
    CHECK(r == NULL);
    CHECK_RC(send_echo_to_self(n, "lc-double"), STEWARD_RESULT_STOPPED);
    CHECK(strcmp(steward_node_name(n), "lc-double") == 0);
    steward_node_free(n);
}

TEST(data_dir_in_use_is_refused_and_freed_after_stop) {
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", fresh_dir("lc-dir"));
    steward_node *a = NULL, *c = NULL;
    steward_node_builder *b = test_builder("lc-dir-a");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_data_dir(b, dir));
    CHECK_OK(steward_node_start(b, &a));
    b = test_builder("lc-dir-b");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_data_dir(b, dir));
    CHECK_RC(steward_node_start(b, &c), STEWARD_RESULT_DATA_DIR_IN_USE);
    CHECK_STR_CONTAINS(last_error(), "in use");
    CHECK(c == NULL);
    CHECK_OK(steward_node_stop(a));
    b = test_builder("lc-dir-b");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_data_dir(b, dir));
    CHECK_OK(steward_node_start(b, &c));
    steward_node_free(c);
    steward_node_free(a);
}

TEST(stop_while_a_slow_callback_is_in_flight) {
    slow s;
    slow_init(&s);
    steward_node *n = NULL;
    steward_node_builder *b = test_builder("lc-slow");
    CHECK(b != NULL);
    steward_status_callback cb = {&s, slow_finished, slow_drop};
    CHECK_OK(steward_node_builder_on_finished(b, cb));
    CHECK_OK(steward_node_start(b, &n));
    /* Several messages to itself, so callbacks are queued behind the slow one. */
    for (int i = 0; i < 3; i++) CHECK_OK(send_echo_to_self(n, "lc-slow"));
    CHECK(counter_wait(&s.entered, 1, 20000));
    CHECK_OK(steward_node_stop(n));
    atomic_store(&s.stopped, true);
    /* When stop returns: every call that started has finished, drop ran once after it. */
    CHECK(counter_get(&s.entered) == counter_get(&s.left));
    CHECK(counter_get(&s.drops) == 1);
    CHECK(atomic_load(&s.calls_after_stop) == 0);
    CHECK_OK(steward_node_stop(n));
    steward_node_free(n);
    CHECK(counter_get(&s.drops) == 1);
    CHECK(atomic_load(&s.calls_after_stop) == 0);
    slow_destroy(&s);
}

TEST(stop_from_inside_a_callback_is_refused_and_free_is_deferred) {
    slow s;
    slow_init(&s);
    steward_node *n = NULL;
    steward_node_builder *b = test_builder("lc-reentrant");
    CHECK(b != NULL);
    steward_status_callback cb = {&s, reentrant_finished, NULL};
    CHECK_OK(steward_node_builder_on_finished(b, cb));
    CHECK_OK(steward_node_start(b, &n));
    s.node = n;
    CHECK_OK(send_echo_to_self(n, "lc-reentrant"));
    CHECK(counter_wait(&s.entered, 1, 20000));
    CHECK(s.stop_in_callback == STEWARD_RESULT_IN_CALLBACK);
    CHECK(s.send_in_callback == STEWARD_RESULT_OK); /* other calls work inside callbacks */
    steward_node_free(n);
    slow_destroy(&s);
}

static void count_drop(void *ctx) { counter_add(&((slow *)ctx)->drops, 1); }

static void freeing_finished(void *ctx, const steward_message_status *st) {
    slow *s = ctx;
    (void)st;
    if (counter_get(&s->entered) == 0) steward_node_free(s->node); /* deferred to a helper thread */
    counter_add(&s->entered, 1);
}

TEST(free_from_inside_a_callback_runs_after_it_returns) {
    slow s;
    slow_init(&s);
    steward_node *n = NULL;
    steward_node_builder *b = test_builder("lc-selffree");
    CHECK(b != NULL);
    steward_status_callback cb = {&s, freeing_finished, count_drop};
    CHECK_OK(steward_node_builder_on_finished(b, cb));
    CHECK_OK(steward_node_start(b, &n));
    s.node = n;
    CHECK_OK(send_echo_to_self(n, "lc-selffree"));
    /* The helper thread stops the node, which runs the drop once the callback returned. */
    CHECK(counter_wait(&s.drops, 1, 20000));
    slow_destroy(&s);
}

TEST(remove_listener_waits_and_drops_once) {
    slow s;
    slow_init(&s);
    steward_node *n = NULL;
    steward_node_builder *b = test_builder("lc-remove");
    CHECK(b != NULL);
    CHECK_OK(steward_node_start(b, &n));
    steward_status_callback cb = {&s, slow_finished, slow_drop};
    uint64_t lid = 0;
    CHECK_OK(steward_node_on_finished(n, cb, &lid));
    CHECK(lid != 0);
    CHECK_OK(send_echo_to_self(n, "lc-remove"));
    CHECK(counter_wait(&s.entered, 1, 20000));
    bool removed = false;
    CHECK_OK(steward_node_remove_listener(n, lid, &removed));
    CHECK(removed);
    CHECK(counter_get(&s.entered) == counter_get(&s.left));
    CHECK(counter_get(&s.drops) == 1);
    CHECK_OK(steward_node_remove_listener(n, lid, &removed));
    CHECK(!removed);
    steward_node_free(n);
    CHECK(counter_get(&s.drops) == 1);
    slow_destroy(&s);
}

typedef struct slow_method {
    counter entered;
    counter left;
    counter drops;
    atomic_int completion_rc;
    atomic_int send_during_stop_rc;
    steward_node *node;
} slow_method;

/* A synchronous handler that takes a while, then completes; the node is stopped meanwhile. */
static void slow_handler(void *ctx, const steward_request *req, steward_completion *c) {
    slow_method *s = ctx;
    (void)req;
    counter_add(&s->entered, 1);
    usleep(500 * 1000);
    atomic_store(&s->completion_rc, steward_completion_ok(c, "late"));
    steward_send_report *r = NULL;
    atomic_store(&s->send_during_stop_rc, steward_node_send_json(s->node, "[]", &r));
    steward_send_report_free(r);
    counter_add(&s->left, 1);
}

static void slow_method_drop(void *ctx) {
    slow_method *s = ctx;
    counter_add(&s->drops, 1);
}

TEST(stop_while_a_slow_c_method_runs) {
    slow_method s;
    memset(&s, 0, sizeof s);
    counter_init(&s.entered);
    counter_init(&s.left);
    counter_init(&s.drops);
    steward_node *n = NULL;
    steward_node_builder *b = test_builder("lc-slowm");
    CHECK(b != NULL);
    steward_method_callback cb = {&s, slow_handler, slow_method_drop};
    CHECK_OK(steward_node_builder_serve(b, "slow", STEWARD_KIND_COMMAND, cb));
    CHECK_OK(steward_node_start(b, &n));
    s.node = n;
    steward_send_report *r = NULL;
    CHECK_OK(steward_node_send_json(
        n, "{\"toNode\":\"lc-slowm\",\"commandOrEvent\":\"command\",\"method\":\"slow\"}", &r));
    CHECK(steward_send_report_accepted_len(r) == 1);
    steward_send_report_free(r);
    CHECK(counter_wait(&s.entered, 1, 20000));
    CHECK_OK(steward_node_stop(n));
    /* The handler had returned before stop did, and its drop ran once after it. */
    CHECK(counter_get(&s.left) == 1);
    CHECK(counter_get(&s.drops) == 1);
    /* Its completion had been abandoned by the stop; calls on the stopping node say so. */
    CHECK(atomic_load(&s.completion_rc) == STEWARD_RESULT_COMPLETION_NOT_PENDING);
    CHECK(atomic_load(&s.send_during_stop_rc) == STEWARD_RESULT_STOPPED);
    steward_node_free(n);
    CHECK(counter_get(&s.drops) == 1);
    counter_destroy(&s.entered);
    counter_destroy(&s.left);
    counter_destroy(&s.drops);
}
