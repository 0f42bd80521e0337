/* Signatures and least privilege through the C API: a ship that requires signed messages and
 * pins central's key, with an access list that allows central one argv prefix only. */
#include <stdlib.h>

#include "harness.h"

/* Sends a shellCommand (or `method`) from `from` to `to` and waits for its final state. */
static steward_message_status *send_and_wait(steward_node *from, const char *to,
                                             const char *method, const char *const *argv,
                                             size_t argc) {
    steward_message *m = NULL;
    if (steward_message_new(&m) != STEWARD_RESULT_OK) return NULL;
    steward_message_set_to(m, to);
    steward_message_set_method(m, method);
    for (size_t i = 0; i < argc; i++) steward_message_add_data(m, argv[i]);
    char id[STEWARD_ID_BUF_LEN];
    steward_result rc = steward_node_send(from, m, id, sizeof id);
    steward_message_free(m);
    if (rc != STEWARD_RESULT_OK) return NULL;
    steward_message_status *st = NULL;
    if (steward_node_wait(from, id, 20000, &st) != STEWARD_RESULT_OK) return NULL;
    return st;
}

TEST(security_arguments_are_checked) {
    steward_node_builder *b = test_builder("sec-args");
    CHECK(b != NULL);
    CHECK_RC(steward_node_builder_set_central_key(b, "not a key"), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(last_error(), "not an ed25519 public key");
    CHECK_RC(steward_node_builder_set_central_key(b, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_trust_key(b, "bad name", "x"), STEWARD_RESULT_INVALID_NAME);
    CHECK_RC(steward_node_builder_trust_key(b, "ship9", "AAAA"), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_allow_argv(b, "central", "shellCommand", NULL, 2, true),
             STEWARD_RESULT_NULL_PARAMETER);
    const char *with_null[] = {"echo", NULL};
    CHECK_RC(steward_node_builder_allow_argv(b, "central", "shellCommand", with_null, 2, true),
             STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_allow_argv(b, "a.b", "shellCommand", NULL, 0, false),
             STEWARD_RESULT_INVALID_NAME);
    CHECK_OK(steward_node_builder_allow_argv(b, "central", "shellCommand", NULL, 0, false));
    CHECK_OK(steward_node_builder_require_signatures(b, true));
    CHECK_RC(steward_node_builder_set_key_file(b, ""), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK(steward_node_public_key(NULL) == NULL);
    steward_node_builder_free(b);
}

TEST(signed_messages_and_argv_rules) {
    steward_node *central = NULL, *ship = NULL, *rogue = NULL;
    steward_node_builder *b = test_builder("sec-central");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_central(b, "sec-central"));
    CHECK_OK(steward_node_start(b, &central));
    const char *central_key = steward_node_public_key(central);
    CHECK(central_key != NULL && strlen(central_key) == 44);

    b = test_builder("sec-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_central(b, "sec-central"));
    CHECK_OK(steward_node_builder_require_signatures(b, true));
    CHECK_OK(steward_node_builder_set_central_key(b, central_key));
    CHECK_OK(steward_node_builder_clear_access(b));
    const char *prefix[] = {"echo", "allowed"};
    CHECK_OK(steward_node_builder_allow_argv(b, "sec-central", "shellCommand", prefix, 2, true));
    /* rogue may call echo by the access list, but its key is not trusted. */
    CHECK_OK(steward_node_builder_allow(b, "sec-rogue", "*"));
    CHECK_OK(steward_node_start(b, &ship));

    const char *ok_argv[] = {"echo", "allowed", "x"};
    steward_message_status *st = send_and_wait(central, "sec-ship", "shellCommand", ok_argv, 3);
    CHECK(st != NULL);
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    size_t len = 0;
    const char *out = steward_message_status_stdout(st, &len);
    CHECK(len == 10 && strncmp(out, "allowed x\n", len) == 0);
    steward_message_status_free(st);

    const char *bad_argv[] = {"echo", "other"};
    st = send_and_wait(central, "sec-ship", "shellCommand", bad_argv, 2);
    CHECK(st != NULL);
    CHECK(steward_message_status_state(st) == STEWARD_STATE_REJECTED);
    CHECK_STR_CONTAINS(steward_message_status_reason(st), "only with other arguments");
    steward_message_status_free(st);

    const char *echo_argv[] = {"hi"};
    st = send_and_wait(central, "sec-ship", "echo", echo_argv, 1);
    CHECK(st != NULL);
    CHECK(steward_message_status_state(st) == STEWARD_STATE_REJECTED);
    CHECK_STR_CONTAINS(steward_message_status_reason(st), "may not call echo");
    steward_message_status_free(st);

    b = test_builder("sec-rogue");
    CHECK(b != NULL);
    CHECK_OK(steward_node_start(b, &rogue));
    st = send_and_wait(rogue, "sec-ship", "echo", echo_argv, 1);
    CHECK(st != NULL);
    CHECK(steward_message_status_state(st) == STEWARD_STATE_REJECTED);
    CHECK_STR_CONTAINS(steward_message_status_reason(st), "does not trust for sec-rogue");
    steward_message_status_free(st);

    steward_node_free(rogue);
    steward_node_free(ship);
    steward_node_free(central);
}
