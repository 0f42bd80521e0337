/* app.c: a steward node in C. It serves the method "greet" from C, sends itself a shell command
 * and a "greet", waits for both results and prints them. Exits 0 when both succeeded.
 *   ./app [BROKER_URL [DATA_DIR]]     (defaults: nats://127.0.0.1:4222, ./steward-data) */
#include <stdio.h>

#include "steward.h"

/* Serves "greet", on a steward thread. Finish each completion exactly once: here or later,
 * from any thread, with steward_completion_ok or steward_completion_fail. */
static void greet(void *context, const steward_request *request, steward_completion *completion) {
    char reply[256];
    const char *who = steward_request_data_len(request) > 0
                          ? steward_request_data_at(request, 0, NULL) : "world";
    (void)context;
    snprintf(reply, sizeof reply, "hello, %s (from %s)", who, steward_request_from_node(request));
    steward_completion_ok(completion, reply);
}

/* Runs on the node's callback thread each time a message it sent reaches a final state. */
static void on_finished(void *context, const steward_message_status *status) {
    (void)context;
    printf("finished: %s (state %u)\n", steward_message_status_id(status),
           (unsigned)steward_message_status_state(status));
}

static int fail(const char *what, steward_result rc) {
    char msg[512];
    size_t len;
    steward_last_error_message(msg, sizeof msg, &len);
    fprintf(stderr, "%s: %s: %s\n", what, steward_result_name(rc), msg);
    return 1;
}

int main(int argc, char **argv) {
    const char *broker = argc > 1 ? argv[1] : "nats://127.0.0.1:4222";
    const char *data_dir = argc > 2 ? argv[2] : "steward-data";
    steward_method_callback greeter = {NULL, greet, NULL};         /* {context, call, drop} */
    steward_status_callback finished = {NULL, on_finished, NULL};
    steward_node_builder *b;
    steward_node *node;
    steward_send_report *report;
    steward_result rc;
    int failed = 0;

    if ((rc = steward_node_builder_new("central", &b))) return fail("builder", rc);
    if ((rc = steward_node_builder_add_broker(b, broker)) ||
        (rc = steward_node_builder_set_data_dir(b, data_dir)) ||
        (rc = steward_node_builder_serve(b, "greet", STEWARD_KIND_COMMAND, greeter)) ||
        (rc = steward_node_builder_on_finished(b, finished))) {
        steward_node_builder_free(b); /* not passed to steward_node_start: still ours */
        return fail("configuring", rc);
    }
    /* steward_node_start always takes the builder, also when it fails: never free it after. */
    if ((rc = steward_node_start(b, &node))) return fail("starting", rc);

    /* "toNode" names the node that runs the method: this node itself here, or e.g. "ship1". */
    rc = steward_node_send_json(node,
        "[{\"toNode\":\"central\",\"method\":\"shellCommand\",\"commandOrEvent\":\"command\","
        "\"data\":[\"bash\",\"-c\",\"ls -l ../\"]},"
        "{\"toNode\":\"central\",\"method\":\"greet\",\"commandOrEvent\":\"command\","
        "\"data\":[\"C\"]}]", &report);
    if (rc) {
        failed = fail("sending", rc);
        steward_node_free(node);
        return failed;
    }
    for (size_t i = 0; i < steward_send_report_rejected_len(report); i++) {
        fprintf(stderr, "refused: %s\n", steward_send_report_rejected_message(report, i));
        failed = 1;
    }
    for (size_t i = 0; i < steward_send_report_accepted_len(report); i++) {
        const char *id = steward_send_report_accepted_id(report, i);
        steward_message_status *st;
        size_t len;
        int32_t code = 0;
        if ((rc = steward_node_wait(node, id, 30000, &st))) { /* up to 30 s for a final state */
            failed = fail(id, rc);
            continue;
        }
        const char *out = steward_message_status_stdout(st, &len);
        bool has_code = steward_message_status_exit_code(st, &code);
        printf("%s: state %u, run status %u, exit code %d, output:\n%.*s\n", id,
               (unsigned)steward_message_status_state(st),
               (unsigned)steward_message_status_run_status(st), has_code ? (int)code : -1,
               (int)len, out);
        if (steward_message_status_state(st) != STEWARD_STATE_COMPLETED ||
            steward_message_status_run_status(st) != STEWARD_RUN_OK)
            failed = 1;
        steward_message_status_free(st);
    }
    steward_send_report_free(report);
    steward_node_free(node); /* stops the node; once it returns, no callback runs any more */
    return failed;
}
