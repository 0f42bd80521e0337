/* Error callbacks: a message the receiver rejects (method not served) reaches the sender's
 * error callback with its id; refused input is reported as bad input. */
#include <stdlib.h>

#include "harness.h"

typedef struct errors {
    counter rejected;
    counter bad_input;
    counter drops;
    pthread_mutex_t mu;
    char message_id[STEWARD_ID_BUF_LEN];
    char reason[1024];
    char node[80];
} errors;

static void on_error(void *ctx, const steward_error_report *r) {
    errors *e = ctx;
    steward_report_kind kind = steward_error_report_kind(r);
    if (kind == STEWARD_REPORT_REJECTED) {
        pthread_mutex_lock(&e->mu);
        const char *id = steward_error_report_message_id(r);
        snprintf(e->message_id, sizeof e->message_id, "%s", id ? id : "");
        snprintf(e->reason, sizeof e->reason, "%s", steward_error_report_reason(r));
        snprintf(e->node, sizeof e->node, "%s", steward_error_report_node(r));
        pthread_mutex_unlock(&e->mu);
        if (steward_error_report_time_ms(r) > 0) counter_add(&e->rejected, 1);
    } else if (kind == STEWARD_REPORT_BAD_INPUT) {
        counter_add(&e->bad_input, 1);
    }
}

static void on_drop(void *ctx) { counter_add(&((errors *)ctx)->drops, 1); }

TEST(rejected_message_reaches_the_error_callback) {
    errors e;
    memset(&e, 0, sizeof e);
    counter_init(&e.rejected);
    counter_init(&e.bad_input);
    counter_init(&e.drops);
    pthread_mutex_init(&e.mu, NULL);
    steward_node *ship = NULL, *central = NULL;

    steward_node_builder *b = test_builder("err-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_allow(b, "err-central", "*"));
    CHECK_OK(steward_node_start(b, &ship));
    b = test_builder("err-central");
    CHECK(b != NULL);
    CHECK_OK(steward_node_start(b, &central));
    steward_error_callback cb = {&e, on_error, on_drop};
    uint64_t lid = 0;
    CHECK_OK(steward_node_on_error(central, cb, &lid));

    steward_send_report *r = NULL;
    CHECK_OK(steward_node_send_json(
        central,
        "[{\"toNode\":\"err-ship\",\"commandOrEvent\":\"command\",\"method\":\"noSuchMethod\"}]",
        &r));
    CHECK(steward_send_report_accepted_len(r) == 1);
    char id[STEWARD_ID_BUF_LEN];
    snprintf(id, sizeof id, "%s", steward_send_report_accepted_id(r, 0));
    steward_send_report_free(r);

    CHECK(counter_wait(&e.rejected, 1, 20000));
    pthread_mutex_lock(&e.mu);
    bool same = strcmp(e.message_id, id) == 0;
    bool names_method = strstr(e.reason, "noSuchMethod") != NULL;
    bool reporter = strcmp(e.node, "err-central") == 0;
    pthread_mutex_unlock(&e.mu);
    CHECK(same);
    CHECK(names_method);
    CHECK(reporter);

    steward_message_status *st = NULL;
    CHECK_OK(steward_node_wait(central, id, 5000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_REJECTED);
    CHECK_STR_CONTAINS(steward_message_status_reason(st), "does not serve");
    CHECK(steward_message_status_refusal(st) == STEWARD_REFUSAL_NOT_SERVED);
    CHECK(steward_message_status_run_status(st) == STEWARD_RUN_NONE);
    steward_message_status_free(st);

    /* Not allowed: a node outside the access list is rejected too. */
    CHECK_OK(steward_node_send_json(
        ship, "{\"toNode\":\"err-central\",\"commandOrEvent\":\"command\",\"method\":\"echo\"}",
        &r));
    snprintf(id, sizeof id, "%s", steward_send_report_accepted_id(r, 0));
    steward_send_report_free(r);
    CHECK_OK(steward_node_wait(ship, id, 20000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_REJECTED);
    CHECK_STR_CONTAINS(steward_message_status_reason(st), "access list");
    CHECK(steward_message_status_refusal(st) == STEWARD_REFUSAL_NOT_ALLOWED);
    CHECK(steward_message_status_refusal(NULL) == STEWARD_REFUSAL_NONE);
    steward_message_status_free(st);

    steward_node_free(central);
    steward_node_free(ship);
    CHECK(counter_get(&e.drops) == 1);
    counter_destroy(&e.rejected);
    counter_destroy(&e.bad_input);
    counter_destroy(&e.drops);
    pthread_mutex_destroy(&e.mu);
}
