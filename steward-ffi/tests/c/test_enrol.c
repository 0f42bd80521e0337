/* Closed by default: nodes built with default_builder require signatures. A node that joined
 * with central's token runs central's commands and central takes its results; a node without
 * one runs nothing from central; bad tokens are refused at the setter. */
#include <stdlib.h>

#include "harness.h"

/* A C method that counts its calls and replies "probed <data 0>". */
static void probe(void *ctx, const steward_request *req, steward_completion *c) {
    char reply[128];
    const char *arg = steward_request_data_len(req) > 0 ? steward_request_data_at(req, 0, NULL) : "";
    snprintf(reply, sizeof reply, "probed %s", arg);
    counter_add((counter *)ctx, 1); /* before completing: the test reads it once the result is in */
    steward_completion_ok(c, reply);
}

/* Sends `method` with `argc` strings from `from` to `to` (at most `retries` resends, 1 s ACK
 * timeout when `retries` >= 0) and waits up to 30 s for its final state; NULL on failure. */
static steward_message_status *send_and_wait(steward_node *from, const char *to, const char *method,
                                             const char *const *argv, size_t argc, int retries) {
    steward_message *m = NULL;
    if (steward_message_new(&m) != STEWARD_RESULT_OK) return NULL;
    steward_message_set_to(m, to);
    steward_message_set_method(m, method);
    for (size_t i = 0; i < argc; i++) steward_message_add_data(m, argv[i]);
    if (retries >= 0) {
        steward_message_set_retries(m, retries);
        steward_message_set_ack_timeout_ms(m, 1000);
    }
    char id[STEWARD_ID_BUF_LEN];
    steward_result rc = steward_node_send(from, m, id, sizeof id);
    steward_message_free(m);
    if (rc != STEWARD_RESULT_OK) return NULL;
    steward_message_status *st = NULL;
    if (steward_node_wait(from, id, 30000, &st) != STEWARD_RESULT_OK) return NULL;
    return st;
}

/* The state of `node`'s key in central's registry, or -1 if it has none. */
static int key_state(steward_node *central, const char *node) {
    steward_key_list *list = NULL;
    if (steward_node_keys(central, &list) != STEWARD_RESULT_OK) return -1;
    int state = -1;
    for (size_t i = 0; i < steward_key_list_len(list); i++)
        if (strcmp(steward_key_list_node(list, i), node) == 0) state = (int)steward_key_list_state(list, i);
    steward_key_list_free(list);
    return state;
}

static steward_node *start_central(const char *name, bool auto_approve) {
    steward_node_builder *b = default_builder(name);
    steward_node *central = NULL;
    if (!b) return NULL;
    if (steward_node_builder_set_central(b, name) != STEWARD_RESULT_OK ||
        steward_node_builder_set_auto_approve(b, auto_approve) != STEWARD_RESULT_OK) {
        steward_node_builder_free(b);
        return NULL;
    }
    if (steward_node_start(b, &central) != STEWARD_RESULT_OK) return NULL;
    return central;
}

TEST(bad_join_tokens_are_refused_at_the_setter) {
    steward_node_builder *b = default_builder("enrol-args");
    CHECK(b != NULL);
    CHECK_RC(steward_node_builder_set_join_token(b, "hello"), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(last_error(), "not a join token");
    CHECK_STR_CONTAINS(last_error(), "four parts");
    CHECK(strstr(last_error(), "invalid configuration") == NULL);
    CHECK_RC(steward_node_builder_set_join_token(b, "sjt9.central.AAAA.BBBB"),
             STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(last_error(), "starts with");
    CHECK_RC(steward_node_builder_set_join_token(b, "sjt1.central.AAAA.BBBB"),
             STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(last_error(), "central's key is damaged");
    CHECK(strstr(last_error(), "BBBB") == NULL); /* the message never shows the secret part */
    CHECK_RC(steward_node_builder_set_join_token(b, ""), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_join_token(b, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_set_join_token(b, "sjt1.\xff"), STEWARD_RESULT_INVALID_UTF8);
    CHECK_RC(steward_node_builder_set_join_token(NULL, "x"), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_set_auto_approve(NULL, true), STEWARD_RESULT_NULL_PARAMETER);
    /* auto_approve belongs to central: another node does not start with it. */
    CHECK_OK(steward_node_builder_set_central(b, "enrol-args-central"));
    CHECK_OK(steward_node_builder_set_auto_approve(b, true));
    steward_node *node = NULL;
    CHECK_RC(steward_node_start(b, &node), STEWARD_RESULT_CONFIG);
    CHECK_STR_CONTAINS(last_error(), "auto_approve");
    CHECK(node == NULL);

    /* NULL-safe accessors and frees. */
    CHECK(steward_join_token_text(NULL, NULL) == NULL);
    CHECK(steward_join_token_id(NULL) == NULL);
    steward_join_token_free(NULL);
    CHECK(steward_join_token_list_len(NULL) == 0);
    CHECK(steward_join_token_list_id(NULL, 0) == NULL);
    CHECK(steward_join_token_list_created_ms(NULL, 0) == 0);
    CHECK(steward_join_token_list_expires_ms(NULL, 0) == 0);
    CHECK(steward_join_token_list_approved(NULL, 0) == 0);
    steward_join_token_list_free(NULL);
    steward_join_token *t = NULL;
    CHECK_RC(steward_node_join_token(NULL, 0, &t), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_revoke_join_token(NULL, "abcd"), STEWARD_RESULT_NULL_PARAMETER);
    CHECK(t == NULL);
}

TEST(a_node_joined_with_a_token_runs_centrals_command) {
    counter calls;
    counter_init(&calls);
    steward_node *central = NULL, *ship = NULL;
    steward_join_token *token = NULL;
    steward_join_token_list *list = NULL;
    steward_message_status *st = NULL;

    central = start_central("enrol-central", false);
    CHECK(central != NULL);
    CHECK_RC(steward_node_join_token(central, -1, &token), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_OK(steward_node_join_token(central, 10 * 60 * 1000, &token));
    size_t len = 0;
    const char *text = steward_join_token_text(token, &len);
    CHECK_STR_CONTAINS(text, "sjt1.enrol-central.");
    CHECK(len == strlen(text));
    const char *id = steward_join_token_id(token);
    CHECK(id != NULL && strlen(id) == 8);
    CHECK_OK(steward_node_join_tokens(central, &list));
    CHECK(steward_join_token_list_len(list) == 1);
    CHECK(strcmp(steward_join_token_list_id(list, 0), id) == 0);
    uint64_t created = steward_join_token_list_created_ms(list, 0);
    CHECK(created > 0);
    CHECK(steward_join_token_list_expires_ms(list, 0) == created + 10 * 60 * 1000);
    CHECK(steward_join_token_list_approved(list, 0) == 0);
    CHECK(steward_join_token_list_id(list, 1) == NULL);
    steward_join_token_list_free(list);
    list = NULL;

    /* The ship is built with the defaults (signatures required) plus the token's text. */
    steward_node_builder *b = default_builder("enrol-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_join_token(b, text));
    steward_method_callback cb = {&calls, probe, NULL};
    CHECK_OK(steward_node_builder_serve(b, "probe", STEWARD_KIND_COMMAND, cb));
    CHECK_OK(steward_node_start(b, &ship));

    const char *probe_argv[] = {"joined"};
    st = send_and_wait(central, "enrol-ship", "probe", probe_argv, 1, -1);
    CHECK(st != NULL);
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    CHECK(steward_message_status_run_status(st) == STEWARD_RUN_OK);
    const char *out = steward_message_status_stdout(st, &len);
    CHECK(len == 13 && strncmp(out, "probed joined", len) == 0);
    steward_message_status_free(st);
    CHECK(counter_get(&calls) == 1);

    const char *echo_argv[] = {"echo", "hello from a joined node"};
    st = send_and_wait(central, "enrol-ship", "shellCommand", echo_argv, 2, -1);
    CHECK(st != NULL);
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    out = steward_message_status_stdout(st, &len);
    CHECK(len == 25 && strncmp(out, "hello from a joined node\n", len) == 0);
    steward_message_status_free(st);

    /* The token approved the ship's key at its registration. */
    CHECK(key_state(central, "enrol-ship") == STEWARD_KEY_APPROVED);
    CHECK_OK(steward_node_join_tokens(central, &list));
    CHECK(steward_join_token_list_len(list) == 1);
    CHECK(steward_join_token_list_approved(list, 0) == 1);
    steward_join_token_list_free(list);
    list = NULL;

    /* Tokens are central's: the ship can neither make nor list them. */
    steward_join_token *other = NULL;
    CHECK_RC(steward_node_join_token(ship, 0, &other), STEWARD_RESULT_CONFIG);
    CHECK_STR_CONTAINS(last_error(), "central");
    CHECK(other == NULL);
    CHECK_RC(steward_node_join_tokens(ship, &list), STEWARD_RESULT_CONFIG);

    /* Revoking: the token is gone from the list; an unknown id is NOT_FOUND. */
    CHECK_OK(steward_node_revoke_join_token(central, id));
    CHECK_RC(steward_node_revoke_join_token(central, id), STEWARD_RESULT_NOT_FOUND);
    CHECK_STR_CONTAINS(last_error(), id);
    CHECK_OK(steward_node_join_tokens(central, &list));
    CHECK(steward_join_token_list_len(list) == 0);
    steward_join_token_list_free(list);
    /* A token that never expires lists 0 as its expiry. */
    steward_join_token_free(token);
    token = NULL;
    CHECK_OK(steward_node_join_token(central, 0, &token));
    CHECK_OK(steward_node_join_tokens(central, &list));
    CHECK(steward_join_token_list_len(list) == 1);
    CHECK(steward_join_token_list_expires_ms(list, 0) == 0);
    steward_join_token_list_free(list);

    steward_join_token_free(token);
    steward_node_free(ship);
    steward_node_free(central);
    counter_destroy(&calls);
}

TEST(a_default_node_without_a_token_runs_nothing_from_central) {
    counter calls;
    counter_init(&calls);
    steward_node *central = NULL, *ship = NULL;

    central = start_central("lone-central", false);
    CHECK(central != NULL);
    steward_node_builder *b = default_builder("lone-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_central(b, "lone-central"));
    steward_method_callback cb = {&calls, probe, NULL};
    CHECK_OK(steward_node_builder_serve(b, "probe", STEWARD_KIND_COMMAND, cb));
    CHECK_OK(steward_node_start(b, &ship));

    /* The ship trusts no key of central, so it refuses the command; central does not trust the
     * ship's key either, so it takes no answer from it: the message fails once its one resend
     * is used up ("the answer from lone-ship: signed with a key that lone-central does not
     * trust ..."). */
    const char *probe_argv[] = {"refused"};
    steward_message_status *st = send_and_wait(central, "lone-ship", "probe", probe_argv, 1, 1);
    CHECK(st != NULL);
    CHECK(steward_message_status_state(st) == STEWARD_STATE_FAILED);
    CHECK_STR_CONTAINS(steward_message_status_reason(st), "lone-ship");
    CHECK(steward_message_status_run_status(st) == STEWARD_RUN_NONE);
    steward_message_status_free(st);
    CHECK(!counter_wait(&calls, 1, 300));
    CHECK(key_state(central, "lone-ship") == -1);

    steward_node_free(ship);
    steward_node_free(central);
    counter_destroy(&calls);
}

TEST(auto_approve_enrols_a_node_that_pinned_centrals_key) {
    counter calls;
    counter_init(&calls);
    steward_node *central = NULL, *ship = NULL;

    central = start_central("auto-central", true);
    CHECK(central != NULL);
    steward_node_builder *b = default_builder("auto-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_central(b, "auto-central"));
    CHECK_OK(steward_node_builder_set_central_key(b, steward_node_public_key(central)));
    steward_method_callback cb = {&calls, probe, NULL};
    CHECK_OK(steward_node_builder_serve(b, "probe", STEWARD_KIND_COMMAND, cb));
    CHECK_OK(steward_node_start(b, &ship));

    const char *probe_argv[] = {"auto"};
    steward_message_status *st = send_and_wait(central, "auto-ship", "probe", probe_argv, 1, -1);
    CHECK(st != NULL);
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    steward_message_status_free(st);
    CHECK(counter_get(&calls) == 1);
    CHECK(key_state(central, "auto-ship") == STEWARD_KEY_APPROVED);

    steward_node_free(ship);
    steward_node_free(central);
    counter_destroy(&calls);
}
