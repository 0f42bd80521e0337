/* Methods and events served in C: synchronous and asynchronous completion, failure, events,
 * unserving, and completions left unfinished when the node stops. */
#include <stdlib.h>

#include "harness.h"

typedef struct served {
    counter calls;
    counter drops;
    pthread_mutex_t mu;
    steward_completion *pending; /* for asynchronous completion */
    steward_result second_completion;
    char from[80];
    char args[512];
    char thread[32];
    char data_dir[512];
    uint64_t timeout_ms;
    steward_kind kind;
} served;

static void served_init(served *s) {
    memset(s, 0, sizeof *s);
    counter_init(&s->calls);
    counter_init(&s->drops);
    pthread_mutex_init(&s->mu, NULL);
}

static void served_destroy(served *s) {
    counter_destroy(&s->calls);
    counter_destroy(&s->drops);
    pthread_mutex_destroy(&s->mu);
}

static void record(served *s, const steward_request *req) {
    pthread_mutex_lock(&s->mu);
    snprintf(s->from, sizeof s->from, "%s", steward_request_from_node(req));
    s->args[0] = 0;
    for (size_t i = 0; i < steward_request_data_len(req); i++) {
        size_t len = 0;
        const char *a = steward_request_data_at(req, i, &len);
        size_t used = strlen(s->args);
        snprintf(s->args + used, sizeof s->args - used, "%s%.*s", i ? "," : "", (int)len, a);
    }
    snprintf(s->data_dir, sizeof s->data_dir, "%s", steward_request_data_dir(req));
    s->timeout_ms = steward_request_method_timeout_ms(req);
    s->kind = steward_request_kind(req);
    pthread_getname_np(pthread_self(), s->thread, sizeof s->thread);
    pthread_mutex_unlock(&s->mu);
}

static void on_drop(void *ctx) { counter_add(&((served *)ctx)->drops, 1); }

/* Completes before returning: replies "<from>:<args>". */
static void sync_method(void *ctx, const steward_request *req, steward_completion *c) {
    served *s = ctx;
    record(s, req);
    char reply[700];
    pthread_mutex_lock(&s->mu);
    snprintf(reply, sizeof reply, "%s:%s", s->from, s->args);
    pthread_mutex_unlock(&s->mu);
    steward_completion_ok(c, reply);
    /* A second completion is detected and harmless. */
    steward_result again = steward_completion_fail(c, "twice");
    pthread_mutex_lock(&s->mu);
    s->second_completion = again;
    pthread_mutex_unlock(&s->mu);
    counter_add(&s->calls, 1);
}

/* Keeps the completion for the test thread to finish later. */
static void async_method(void *ctx, const steward_request *req, steward_completion *c) {
    served *s = ctx;
    record(s, req);
    pthread_mutex_lock(&s->mu);
    s->pending = c;
    pthread_mutex_unlock(&s->mu);
    counter_add(&s->calls, 1);
}

static void failing_method(void *ctx, const steward_request *req, steward_completion *c) {
    served *s = ctx;
    record(s, req);
    steward_completion_fail(c, "the widget is jammed");
    counter_add(&s->calls, 1);
}

static void on_event(void *ctx, const steward_request *req) {
    served *s = ctx;
    record(s, req);
    counter_add(&s->calls, 1);
}

static steward_completion *take_pending(served *s) {
    pthread_mutex_lock(&s->mu);
    steward_completion *c = s->pending;
    s->pending = NULL;
    pthread_mutex_unlock(&s->mu);
    return c;
}

static steward_result send_to(steward_node *from, const char *to, steward_kind kind,
                              const char *method, const char *arg, char *id) {
    steward_message *m = NULL;
    steward_result rc = steward_message_new(&m);
    if (rc) return rc;
    if ((rc = steward_message_set_to(m, to)) || (rc = steward_message_set_kind(m, kind)) ||
        (rc = steward_message_set_method(m, method)) ||
        (arg && (rc = steward_message_add_data(m, arg))) ||
        (rc = steward_node_send(from, m, id, STEWARD_ID_BUF_LEN))) {
        steward_message_free(m);
        return rc;
    }
    steward_message_free(m);
    return STEWARD_RESULT_OK;
}

TEST(custom_method_served_in_c_sync_async_and_failing) {
    served sync_s, async_s, fail_s;
    served_init(&sync_s);
    served_init(&async_s);
    served_init(&fail_s);
    steward_node *ship = NULL, *central = NULL;

    steward_node_builder *b = test_builder("m-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_allow(b, "m-central", "*"));
    steward_method_callback sync_cb = {&sync_s, sync_method, on_drop};
    CHECK_OK(steward_node_builder_serve(b, "widgetSync", STEWARD_KIND_COMMAND, sync_cb));
    CHECK_OK(steward_node_start(b, &ship));
    /* Served while running, too. */
    steward_method_callback async_cb = {&async_s, async_method, on_drop};
    CHECK_OK(steward_node_serve(ship, "widgetAsync", STEWARD_KIND_COMMAND, async_cb));
    steward_method_callback fail_cb = {&fail_s, failing_method, on_drop};
    CHECK_OK(steward_node_serve(ship, "widgetFail", STEWARD_KIND_COMMAND, fail_cb));
    CHECK_RC(steward_node_serve(ship, "_mine", STEWARD_KIND_COMMAND, fail_cb),
             STEWARD_RESULT_INVALID_NAME);

    b = test_builder("m-central");
    CHECK(b != NULL);
    CHECK_OK(steward_node_start(b, &central));

    /* synchronous */
    char id[STEWARD_ID_BUF_LEN];
    CHECK_OK(send_to(central, "m-ship", STEWARD_KIND_COMMAND, "widgetSync", "a b;c", id));
    steward_message_status *st = NULL;
    CHECK_OK(steward_node_wait(central, id, 20000, &st));
    CHECK(steward_message_status_run_status(st) == STEWARD_RUN_OK);
    bool reply_ok = strcmp(steward_message_status_stdout(st, NULL), "m-central:a b;c") == 0;
    steward_message_status_free(st);
    CHECK(reply_ok);
    pthread_mutex_lock(&sync_s.mu);
    steward_result second = sync_s.second_completion;
    bool on_blocking_pool = strncmp(sync_s.thread, "steward-m-ship", 14) == 0;
    uint64_t method_timeout = sync_s.timeout_ms;
    steward_kind kind = sync_s.kind;
    bool dir_ok = strstr(sync_s.data_dir, "m-ship") != NULL;
    pthread_mutex_unlock(&sync_s.mu);
    CHECK(second == STEWARD_RESULT_COMPLETION_NOT_PENDING);
    CHECK(on_blocking_pool);
    CHECK(method_timeout == 300000);
    CHECK(kind == STEWARD_KIND_COMMAND);
    CHECK(dir_ok);

    /* asynchronous: completed later from this (another) thread */
    CHECK_OK(send_to(central, "m-ship", STEWARD_KIND_COMMAND, "widgetAsync", "slow", id));
    CHECK(counter_wait(&async_s.calls, 1, 20000));
    steward_completion *c = take_pending(&async_s);
    CHECK(c != NULL);
    st = NULL;
    CHECK_RC(steward_node_wait(central, id, 100, &st), STEWARD_RESULT_TIMED_OUT);
    CHECK_STR_CONTAINS(last_error(), id);
    CHECK_RC(steward_completion_ok(c, "\xff"), STEWARD_RESULT_INVALID_UTF8); /* still pending */
    CHECK_OK(steward_completion_ok(c, "done later"));
    CHECK_RC(steward_completion_ok(c, "again"), STEWARD_RESULT_COMPLETION_NOT_PENDING);
    CHECK_OK(steward_node_wait(central, id, 20000, &st));
    CHECK(steward_message_status_run_status(st) == STEWARD_RUN_OK);
    reply_ok = strcmp(steward_message_status_stdout(st, NULL), "done later") == 0;
    steward_message_status_free(st);
    CHECK(reply_ok);

    /* failing */
    CHECK_OK(send_to(central, "m-ship", STEWARD_KIND_COMMAND, "widgetFail", NULL, id));
    CHECK_OK(steward_node_wait(central, id, 20000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    CHECK(steward_message_status_run_status(st) == STEWARD_RUN_FAILED);
    bool reason_ok = strcmp(steward_message_status_result_error(st), "the widget is jammed") == 0;
    steward_message_status_free(st);
    CHECK(reason_ok);

    /* unserve: the drop runs at once, later requests are rejected */
    bool removed = false;
    CHECK_OK(steward_node_unserve(ship, "widgetFail", &removed));
    CHECK(removed);
    CHECK(counter_get(&fail_s.drops) == 1);
    CHECK_OK(steward_node_unserve(ship, "widgetFail", &removed));
    CHECK(!removed);
    CHECK_OK(send_to(central, "m-ship", STEWARD_KIND_COMMAND, "widgetFail", NULL, id));
    CHECK_OK(steward_node_wait(central, id, 20000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_REJECTED);
    steward_message_status_free(st);

    CHECK_OK(steward_node_stop(central));
    CHECK_OK(steward_node_stop(ship));
    CHECK(counter_get(&sync_s.drops) == 1);
    CHECK(counter_get(&async_s.drops) == 1);
    CHECK(counter_get(&fail_s.drops) == 1);
    steward_node_free(central);
    steward_node_free(ship);
    served_destroy(&sync_s);
    served_destroy(&async_s);
    served_destroy(&fail_s);
}

TEST(events_of_a_method_reach_the_c_callback) {
    served ev;
    served_init(&ev);
    steward_node *ship = NULL, *central = NULL;
    steward_node_builder *b = test_builder("ev-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_allow(b, "ev-central", "alarm"));
    steward_event_callback cb = {&ev, on_event, on_drop};
    CHECK_OK(steward_node_builder_on_event(b, "alarm", cb));
    CHECK_OK(steward_node_start(b, &ship));
    b = test_builder("ev-central");
    CHECK(b != NULL);
    CHECK_OK(steward_node_start(b, &central));

    steward_send_report *r = NULL;
    CHECK_OK(steward_node_send_json(
        central,
        "{\"toNode\":\"ev-ship\",\"commandOrEvent\":\"event\",\"method\":\"alarm\","
        "\"data\":[\"boiler\",\"hot\"]}",
        &r));
    CHECK(steward_send_report_accepted_len(r) == 1);
    char id[STEWARD_ID_BUF_LEN];
    snprintf(id, sizeof id, "%s", steward_send_report_accepted_id(r, 0));
    steward_send_report_free(r);
    steward_message_status *st = NULL;
    CHECK_OK(steward_node_wait(central, id, 20000, &st));
    CHECK(steward_message_status_run_status(st) == STEWARD_RUN_OK);
    steward_message_status_free(st);
    CHECK(counter_get(&ev.calls) == 1);
    pthread_mutex_lock(&ev.mu);
    bool args_ok = strcmp(ev.args, "boiler,hot") == 0 && ev.kind == STEWARD_KIND_EVENT &&
                   strcmp(ev.from, "ev-central") == 0;
    pthread_mutex_unlock(&ev.mu);
    CHECK(args_ok);
    /* The same method as a command is refused: it is served as an event. */
    CHECK_OK(send_to(central, "ev-ship", STEWARD_KIND_COMMAND, "alarm", NULL, id));
    CHECK_OK(steward_node_wait(central, id, 20000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_REJECTED);
    CHECK_STR_CONTAINS(steward_message_status_reason(st), "event");
    steward_message_status_free(st);

    steward_node_free(central); /* free without stop: stops first */
    steward_node_free(ship);
    CHECK(counter_get(&ev.drops) == 1);
    served_destroy(&ev);
}

TEST(completion_left_pending_at_stop_is_released_and_reported_unknown) {
    served s;
    served_init(&s);
    steward_node *ship = NULL, *central = NULL;
    char ship_dir[4096];
    snprintf(ship_dir, sizeof ship_dir, "%s", fresh_dir("pend-ship"));

    steward_node_builder *b = test_builder("pend-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_data_dir(b, ship_dir));
    CHECK_OK(steward_node_builder_allow(b, "pend-central", "*"));
    steward_method_callback cb = {&s, async_method, on_drop};
    CHECK_OK(steward_node_builder_serve(b, "hang", STEWARD_KIND_COMMAND, cb));
    CHECK_OK(steward_node_start(b, &ship));
    b = test_builder("pend-central");
    CHECK(b != NULL);
    CHECK_OK(steward_node_start(b, &central));

    char id[STEWARD_ID_BUF_LEN];
    CHECK_OK(send_to(central, "pend-ship", STEWARD_KIND_COMMAND, "hang", NULL, id));
    CHECK(counter_wait(&s.calls, 1, 20000));
    steward_completion *c = take_pending(&s);
    CHECK(c != NULL);

    int64_t t0 = now_ms();
    CHECK_OK(steward_node_stop(ship));
    int64_t took = now_ms() - t0;
    CHECK(took < 4000); /* the stop does not wait for the unfinished completion */
    CHECK(counter_get(&s.drops) == 1);
    /* Finishing it afterwards is detected; the handle needs no freeing. */
    CHECK_RC(steward_completion_ok(c, "too late"), STEWARD_RESULT_COMPLETION_NOT_PENDING);
    steward_node_free(ship);

    /* The receiver recorded an unknown outcome; restarting it delivers that if it was not
     * delivered before the stop. */
    b = test_builder("pend-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_data_dir(b, ship_dir));
    CHECK_OK(steward_node_start(b, &ship));
    steward_message_status *st = NULL;
    CHECK_OK(steward_node_wait(central, id, 20000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    CHECK(steward_message_status_run_status(st) == STEWARD_RUN_UNKNOWN);
    CHECK_STR_CONTAINS(steward_message_status_result_error(st), "stopped before the C handler");
    steward_message_status_free(st);
    CHECK(counter_get(&s.calls) == 1); /* never run again */

    steward_node_free(central);
    steward_node_free(ship);
    served_destroy(&s);
}
