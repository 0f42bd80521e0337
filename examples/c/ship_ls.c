/* steward from C: start a node, send the original shellCommand message to ship1, print the
 * result from the final-state callback.
 *
 *   ship_ls [--broker URL] [--data-dir DIR] [--central-only]
 *
 * By default the program also runs "ship1" in-process (a second node on the same broker), so
 * it works on its own; with --central-only it expects a real ship1 elsewhere.
 *
 * Nodes require signatures by default, so ship1 runs central's command only once it trusts
 * central's key, and central takes ship1's result only once it approved ship1's key. A join
 * token does both: central makes one, ship1 starts with it. With --central-only the program
 * prints a token for the real ship1 (`steward --node ship1 --join TOKEN`). */
#define _GNU_SOURCE
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "steward.h"

static const char *MESSAGE =
    "[{\"toNode\":\"ship1\",\"data\":[\"bash\",\"-c\",\"ls -l ../\"],"
    "\"commandOrEvent\":\"command\",\"method\":\"shellCommand\"}]";

/* What the callback hands to main. */
struct outcome {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int ok;
};

/* Runs on the node's "steward-callbacks" thread for every message that reached a final state. */
static void on_finished(void *context, const steward_message_status *status) {
    struct outcome *out = context;
    int32_t exit_code = -1;
    size_t out_len = 0, err_len = 0;
    const char *stdout_text = steward_message_status_stdout(status, &out_len);
    const char *stderr_text = steward_message_status_stderr(status, &err_len);
    int has_exit = steward_message_status_exit_code(status, &exit_code);
    const char *reason = steward_message_status_reason(status);
    printf("message %s to %s finished: state %u, run status %u, exit %d%s%s\n",
           steward_message_status_id(status), steward_message_status_to_node(status),
           (unsigned)steward_message_status_state(status),
           (unsigned)steward_message_status_run_status(status), has_exit ? exit_code : -1,
           reason ? ", reason: " : "", reason ? reason : "");
    printf("--- stdout ---\n%.*s--- stderr ---\n%.*s--------------\n", (int)out_len, stdout_text,
           (int)err_len, stderr_text);
    fflush(stdout);
    pthread_mutex_lock(&out->mu);
    out->done = 1;
    out->ok = steward_message_status_state(status) == STEWARD_STATE_COMPLETED && has_exit &&
              exit_code == 0;
    pthread_cond_signal(&out->cv);
    pthread_mutex_unlock(&out->mu);
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path);
}

static int fail(const char *what, steward_result rc) {
    char msg[512];
    size_t n = 0;
    steward_last_error_message(msg, sizeof msg, &n);
    fprintf(stderr, "%s failed: %s: %s\n", what, steward_result_name(rc), msg);
    return 1;
}

static steward_result make_builder(const char *name, const char *broker, const char *base,
                                   steward_node_builder **out) {
    char dir[4096];
    steward_result rc;
    snprintf(dir, sizeof dir, "%s/%s", base, name);
    if ((rc = steward_node_builder_new(name, out))) return rc;
    if ((rc = steward_node_builder_add_broker(*out, broker)) ||
        (rc = steward_node_builder_set_data_dir(*out, dir)) ||
        (rc = steward_node_builder_set_central(*out, "central"))) {
        steward_node_builder_free(*out);
        *out = NULL;
    }
    return rc;
}

int main(int argc, char **argv) {
    const char *broker = "nats://127.0.0.1:4222";
    const char *base = NULL;
    int central_only = 0;
    char tmp[] = "/tmp/steward-example-XXXXXX";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--broker") && i + 1 < argc) broker = argv[++i];
        else if (!strcmp(argv[i], "--data-dir") && i + 1 < argc) base = argv[++i];
        else if (!strcmp(argv[i], "--central-only")) central_only = 1;
        else {
            fprintf(stderr, "usage: %s [--broker URL] [--data-dir DIR] [--central-only]\n", argv[0]);
            return 2;
        }
    }
    /* Without --data-dir the nodes keep their stores in a temporary directory, removed at exit. */
    const char *own_tmp = NULL;
    if (!base) {
        if (!(base = own_tmp = mkdtemp(tmp))) {
            perror("mkdtemp");
            return 1;
        }
    }

    struct outcome out = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    steward_node *ship = NULL, *central = NULL;
    steward_node_builder *b = NULL;
    steward_result rc;
    int status = 1;

    /* Central first: it makes the join token ship1 starts with. */
    if ((rc = make_builder("central", broker, base, &b))) {
        status = fail("central builder", rc);
        goto done;
    }
    steward_status_callback cb = {&out, on_finished, NULL};
    if ((rc = steward_node_builder_on_finished(b, cb))) {
        steward_node_builder_free(b);
        status = fail("registering the callback", rc);
        goto done;
    }
    /* steward_node_start always takes the builder, also when it fails: never free it. */
    if ((rc = steward_node_start(b, &central))) {
        status = fail("starting central", rc);
        goto done;
    }
    /* A token valid for 10 minutes: it pins central's key on ship1 and has central approve
     * ship1's key when ship1 registers. It is a secret while valid. */
    steward_join_token *token = NULL;
    if ((rc = steward_node_join_token(central, 10 * 60 * 1000, &token))) {
        status = fail("making a join token", rc);
        goto done;
    }
    if (central_only) {
        fprintf(stderr, "ship1 must have joined this central; start it with:\n"
                        "  steward --node ship1 --join %s\n", steward_join_token_text(token, NULL));
    } else {
        if ((rc = make_builder("ship1", broker, base, &b))) {
            steward_join_token_free(token);
            status = fail("ship1 builder", rc);
            goto done;
        }
        rc = steward_node_builder_set_join_token(b, steward_join_token_text(token, NULL));
        if (rc) {
            steward_node_builder_free(b);
            steward_join_token_free(token);
            status = fail("joining with the token", rc);
            goto done;
        }
        if ((rc = steward_node_start(b, &ship))) {
            steward_join_token_free(token);
            status = fail("starting ship1", rc);
            goto done;
        }
    }
    steward_join_token_free(token); /* the builder copied the text */

    steward_send_report *report = NULL;
    if ((rc = steward_node_send_json(central, MESSAGE, &report))) {
        status = fail("sending", rc);
        goto done;
    }
    for (size_t i = 0; i < steward_send_report_rejected_len(report); i++)
        fprintf(stderr, "refused: %s\n", steward_send_report_rejected_message(report, i));
    for (size_t i = 0; i < steward_send_report_accepted_len(report); i++)
        printf("accepted message %s\n", steward_send_report_accepted_id(report, i));
    size_t accepted = steward_send_report_accepted_len(report);
    steward_send_report_free(report);
    if (accepted != 1) goto done;

    /* Wait for the callback (at most 30 s). */
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 30;
    pthread_mutex_lock(&out.mu);
    while (!out.done && pthread_cond_timedwait(&out.cv, &out.mu, &deadline) == 0) {
    }
    int done = out.done, ok = out.ok;
    pthread_mutex_unlock(&out.mu);
    if (!done) fprintf(stderr, "no result within 30 s; is ship1 running on %s?\n", broker);
    status = done && ok ? 0 : 1;

done:
    /* After stop returns no callback runs, so `out` may go away; free also stops. */
    steward_node_free(central);
    steward_node_free(ship);
    if (own_tmp) nftw(own_tmp, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return status;
}
