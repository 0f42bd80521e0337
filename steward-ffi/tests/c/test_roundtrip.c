/* Round trips between two C nodes in one process: the original shellCommand message, the
 * message builder, status queries and destinations. */
#include <stdlib.h>

#include "harness.h"

typedef struct finished_log {
    counter calls;
    counter drops;
    pthread_mutex_t mu;
    char id[STEWARD_ID_BUF_LEN];
    steward_message_state state;
    steward_run_status run;
    int32_t exit_code;
    bool has_exit;
    char out[8192];
    char callback_thread[32];
} finished_log;

static void log_init(finished_log *l) {
    memset(l, 0, sizeof *l);
    counter_init(&l->calls);
    counter_init(&l->drops);
    pthread_mutex_init(&l->mu, NULL);
}

static void log_destroy(finished_log *l) {
    counter_destroy(&l->calls);
    counter_destroy(&l->drops);
    pthread_mutex_destroy(&l->mu);
}

static void on_finished(void *ctx, const steward_message_status *st) {
    finished_log *l = ctx;
    pthread_mutex_lock(&l->mu);
    snprintf(l->id, sizeof l->id, "%s", steward_message_status_id(st));
    l->state = steward_message_status_state(st);
    l->run = steward_message_status_run_status(st);
    l->has_exit = steward_message_status_exit_code(st, &l->exit_code);
    size_t len = 0;
    const char *out = steward_message_status_stdout(st, &len);
    snprintf(l->out, sizeof l->out, "%.*s", (int)len, out);
    pthread_getname_np(pthread_self(), l->callback_thread, sizeof l->callback_thread);
    pthread_mutex_unlock(&l->mu);
    counter_add(&l->calls, 1);
}

static void on_drop(void *ctx) {
    finished_log *l = ctx;
    counter_add(&l->drops, 1);
}

static const char *SHELL_JSON =
    "[{\"toNode\":\"rt-ship1\",\"data\":[\"bash\",\"-c\",\"ls -l ../\"],"
    "\"commandOrEvent\":\"command\",\"method\":\"shellCommand\"}]";

TEST(shell_command_round_trip_between_two_c_nodes) {
    finished_log log;
    log_init(&log);
    steward_node *ship = NULL, *central = NULL;

    steward_node_builder *b = test_builder("rt-ship1");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_allow(b, "rt-central", "shellCommand"));
    CHECK_OK(steward_node_start(b, &ship));
    CHECK(strcmp(steward_node_name(ship), "rt-ship1") == 0);

    b = test_builder("rt-central");
    CHECK(b != NULL);
    steward_status_callback cb = {&log, on_finished, on_drop};
    CHECK_OK(steward_node_builder_on_finished(b, cb));
    CHECK_OK(steward_node_start(b, &central));

    steward_send_report *report = NULL;
    CHECK_OK(steward_node_send_json(central, SHELL_JSON, &report));
    CHECK(steward_send_report_accepted_len(report) == 1);
    CHECK(steward_send_report_rejected_len(report) == 0);
    CHECK(steward_send_report_accepted_index(report, 0) == 0);
    char id[STEWARD_ID_BUF_LEN];
    snprintf(id, sizeof id, "%s", steward_send_report_accepted_id(report, 0));
    CHECK(steward_send_report_accepted_id(report, 1) == NULL);
    steward_send_report_free(report);

    CHECK(counter_wait(&log.calls, 1, 20000));
    pthread_mutex_lock(&log.mu);
    bool same_id = strcmp(log.id, id) == 0;
    steward_message_state state = log.state;
    steward_run_status run = log.run;
    bool exit0 = log.has_exit && log.exit_code == 0;
    bool has_total = strstr(log.out, "total") != NULL;
    bool on_cb_thread = strcmp(log.callback_thread, "steward-callbac") == 0;
    pthread_mutex_unlock(&log.mu);
    CHECK(same_id);
    CHECK(state == STEWARD_STATE_COMPLETED);
    CHECK(run == STEWARD_RUN_OK);
    CHECK(exit0);
    CHECK(has_total); /* `ls -l` prints "total N" first */
    CHECK(on_cb_thread); /* thread names are cut to 15 characters */

    /* The same state by query, and by wait. */
    steward_message_status *st = NULL;
    CHECK_OK(steward_node_message_status(central, id, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    CHECK(strcmp(steward_message_status_to_node(st), "rt-ship1") == 0);
    CHECK(strcmp(steward_message_status_subject(st), "rt-ship1.command.shellCommand") == 0);
    CHECK(strcmp(steward_message_status_result_node(st), "rt-ship1") == 0);
    CHECK(steward_message_status_result_error(st) == NULL);
    CHECK_STR_CONTAINS(steward_message_status_message_json(st), "\"shellCommand\"");
    size_t err_len = 99;
    steward_message_status_stderr(st, &err_len);
    CHECK(err_len == 0);
    steward_message_status_free(st);
    st = NULL;
    CHECK_OK(steward_node_wait(central, id, 1000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    steward_message_status_free(st);
    st = NULL;
    CHECK_RC(steward_node_message_status(central, "NoSuchId", &st), STEWARD_RESULT_NOT_FOUND);
    CHECK_STR_CONTAINS(last_error(), "NoSuchId");
    CHECK(st == NULL);

    steward_destination_list *dests = NULL;
    CHECK_OK(steward_node_destinations(central, &dests));
    bool found = false;
    for (size_t i = 0; i < steward_destination_list_len(dests); i++) {
        if (strcmp(steward_destination_list_node(dests, i), "rt-ship1") == 0) {
            uint64_t ack = 0;
            found = steward_destination_list_completed(dests, i) == 1 &&
                    steward_destination_list_pending(dests, i) == 0 &&
                    steward_destination_list_failed(dests, i) == 0 &&
                    steward_destination_list_last_ack_ms(dests, i, &ack) && ack > 0;
        }
    }
    CHECK(steward_destination_list_node(dests, 99) == NULL);
    steward_destination_list_free(dests);
    CHECK(found);

    CHECK_OK(steward_node_stop(central));
    CHECK(counter_get(&log.drops) == 1);
    steward_node_free(central);
    steward_node_free(ship);
    CHECK(counter_get(&log.drops) == 1);
    log_destroy(&log);
}

TEST(message_builder_round_trip_passes_shell_metacharacters_literally) {
    steward_node *ship = NULL, *central = NULL;
    steward_node_builder *b = test_builder("mb-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_allow(b, "mb-central", "*"));
    CHECK_OK(steward_node_start(b, &ship));
    b = test_builder("mb-central");
    CHECK(b != NULL);
    CHECK_OK(steward_node_start(b, &central));

    const char *hostile = "a;b|c&&d $(echo pwned) `id` >z <y * ? ~ \"'\\";
    steward_message *m = NULL;
    CHECK_OK(steward_message_new(&m));
    CHECK_OK(steward_message_set_to(m, "mb-ship"));
    CHECK_OK(steward_message_set_kind(m, STEWARD_KIND_COMMAND));
    CHECK_OK(steward_message_set_method(m, "shellCommand"));
    CHECK_OK(steward_message_add_data(m, "printf"));
    CHECK_OK(steward_message_add_data(m, "%s"));
    CHECK_OK(steward_message_add_data(m, hostile));
    CHECK_OK(steward_message_set_ack_timeout_ms(m, 3000));
    CHECK_OK(steward_message_set_retries(m, 20));
    CHECK_OK(steward_message_set_retry_wait_ms(m, 100));
    CHECK_OK(steward_message_set_ttl_ms(m, 60000));
    CHECK_OK(steward_message_set_method_timeout_ms(m, 10000));
    CHECK_OK(steward_message_set_id(m, "mb-literal-1"));

    char small[8];
    CHECK_RC(steward_node_send(central, m, small, sizeof small), STEWARD_RESULT_BUFFER_TOO_SMALL);
    CHECK_STR_CONTAINS(last_error(), "STEWARD_ID_BUF_LEN");
    char id[STEWARD_ID_BUF_LEN];
    CHECK_OK(steward_node_send(central, m, id, sizeof id));
    CHECK(strcmp(id, "mb-literal-1") == 0);
    /* Sending the same id again returns it without sending twice. */
    CHECK_OK(steward_node_send(central, m, id, sizeof id));
    CHECK(strcmp(id, "mb-literal-1") == 0);

    steward_message_status *st = NULL;
    CHECK_OK(steward_node_wait(central, id, 20000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    size_t len = 0;
    const char *out = steward_message_status_stdout(st, &len);
    bool literal = len == strlen(hostile) && memcmp(out, hostile, len) == 0;
    steward_message_status_free(st);
    CHECK(literal);

    /* A message without destination or method is refused with a clear message. */
    steward_message *empty = NULL;
    CHECK_OK(steward_message_new(&empty));
    CHECK_RC(steward_node_send(central, empty, id, sizeof id), STEWARD_RESULT_INVALID_MESSAGE);
    CHECK_STR_CONTAINS(last_error(), "steward_message_set_to");
    steward_message_free(empty);
    steward_message_free(m);

    CHECK_OK(steward_node_stop(central));
    CHECK_OK(steward_node_stop(ship));
    steward_node_free(central);
    steward_node_free(ship);
}
