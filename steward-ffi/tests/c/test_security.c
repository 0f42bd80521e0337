/* Signatures and least privilege through the C API: a ship that requires signed messages and
 * pins central's key, with an access list that allows central one argv prefix only. */
#include <stdlib.h>
#include <time.h>

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

/* The state of `node`'s first key in central's registry, or -1 if it has none. */
static int key_state_of(steward_node *central, const char *node, char *key_out, size_t key_cap) {
    steward_key_list *list = NULL;
    if (steward_node_keys(central, &list) != STEWARD_RESULT_OK) return -1;
    int state = -1;
    for (size_t i = 0; i < steward_key_list_len(list); i++) {
        if (strcmp(steward_key_list_node(list, i), node) == 0) {
            state = (int)steward_key_list_state(list, i);
            if (key_out) snprintf(key_out, key_cap, "%s", steward_key_list_key(list, i));
            if (steward_key_list_since_ms(list, i) == 0) state = -2;
            break;
        }
    }
    steward_key_list_free(list);
    return state;
}

TEST(central_manages_keys) {
    steward_node *central = NULL, *ship = NULL;
    steward_node_builder *b = test_builder("keys-central");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_central(b, "keys-central"));
    CHECK_OK(steward_node_start(b, &central));
    b = test_builder("keys-ship");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_central(b, "keys-central"));
    CHECK_OK(steward_node_builder_set_central_key(b, steward_node_public_key(central)));
    CHECK_OK(steward_node_start(b, &ship));

    /* The ship registers its key on start: it waits for approval. */
    char key[64] = "";
    int64_t deadline = now_ms() + 10000;
    while (key_state_of(central, "keys-ship", key, sizeof key) != STEWARD_KEY_PENDING &&
           now_ms() < deadline) {
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    CHECK(key_state_of(central, "keys-ship", key, sizeof key) == STEWARD_KEY_PENDING);
    CHECK(strcmp(key, steward_node_public_key(ship)) == 0);

    uint64_t approved = 0, revoked = 0;
    CHECK_OK(steward_node_approve_key(central, "keys-ship", NULL, &approved));
    CHECK(approved >= 1);
    CHECK(key_state_of(central, "keys-ship", NULL, 0) == STEWARD_KEY_APPROVED);
    CHECK_OK(steward_node_revoke_key(central, "keys-ship", key, &revoked));
    CHECK(revoked > approved);
    CHECK(key_state_of(central, "keys-ship", NULL, 0) == STEWARD_KEY_REVOKED);

    /* Misuse: keys live on central; a malformed key; a node without keys; NULL arguments. */
    steward_key_list *list = NULL;
    CHECK_RC(steward_node_keys(ship, &list), STEWARD_RESULT_CONFIG);
    CHECK_STR_CONTAINS(last_error(), "central");
    CHECK(list == NULL);
    CHECK_RC(steward_node_approve_key(central, "keys-ship", "not a key", NULL), STEWARD_RESULT_CONFIG);
    CHECK(steward_node_approve_key(central, "nobody", NULL, NULL) != STEWARD_RESULT_OK);
    CHECK_STR_CONTAINS(last_error(), "nobody");
    CHECK_RC(steward_node_approve_key(NULL, "keys-ship", NULL, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_revoke_key(central, NULL, NULL, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK(steward_key_list_len(NULL) == 0);
    CHECK(steward_key_list_node(NULL, 0) == NULL);
    steward_key_list_free(NULL);

    steward_node_free(ship);
    steward_node_free(central);
}
