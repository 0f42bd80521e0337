/* Connecting to a broker that requires a user and password (the second nats-server of
 * scripts/test-c.sh, URL in STEWARD_TEST_NATS_AUTH_URL, user "steward", password in
 * STEWARD_TEST_NATS_AUTH_PASSWORD): the right password works end to end, a wrong one fails
 * steward_node_start with STEWARD_RESULT_BROKER_AUTH and a message saying what was refused. */
#include <stdlib.h>

#include "harness.h"

static const char *auth_url(void) { return getenv("STEWARD_TEST_NATS_AUTH_URL"); }
static const char *auth_password(void) { return getenv("STEWARD_TEST_NATS_AUTH_PASSWORD"); }

/* A builder on the password-protected broker (no credentials set yet). */
static steward_node_builder *auth_builder(const char *name) {
    steward_node_builder *b = NULL;
    if (steward_node_builder_new(name, &b) != STEWARD_RESULT_OK) return NULL;
    if (steward_node_builder_add_broker(b, auth_url()) != STEWARD_RESULT_OK ||
        steward_node_builder_set_data_dir(b, fresh_dir(name)) != STEWARD_RESULT_OK) {
        steward_node_builder_free(b);
        return NULL;
    }
    return b;
}

TEST(user_password_right_credentials_round_trip) {
    CHECK(auth_url() != NULL && auth_password() != NULL);
    steward_node_builder *b = auth_builder("auth-ok");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_broker_user_password(b, "steward", auth_password()));
    steward_node *node = NULL;
    CHECK_OK(steward_node_start(b, &node));
    CHECK(steward_node_is_connected(node));

    /* echo to itself: out through the broker and back. */
    steward_send_report *report = NULL;
    CHECK_OK(steward_node_send_json(
        node,
        "[{\"toNode\":\"auth-ok\",\"method\":\"echo\",\"commandOrEvent\":\"command\",\"data\":[\"hi\"]}]",
        &report));
    CHECK(steward_send_report_accepted_len(report) == 1);
    char id[STEWARD_ID_BUF_LEN];
    snprintf(id, sizeof id, "%s", steward_send_report_accepted_id(report, 0));
    steward_send_report_free(report);
    steward_message_status *st = NULL;
    CHECK_OK(steward_node_wait(node, id, 20000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    size_t len = 0;
    const char *out = steward_message_status_stdout(st, &len);
    CHECK(len == 2 && memcmp(out, "hi", 2) == 0);
    steward_message_status_free(st);
    steward_node_free(node);
}

TEST(user_password_wrong_password_is_refused_at_start) {
    CHECK(auth_url() != NULL);
    steward_node_builder *b = auth_builder("auth-bad");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_broker_user_password(b, "steward", "not-the-password"));
    steward_node *node = NULL;
    int64_t start = now_ms();
    /* steward_node_start consumes the builder, also on failure. */
    CHECK_RC(steward_node_start(b, &node), STEWARD_RESULT_BROKER_AUTH);
    CHECK(now_ms() - start < 5000); /* an error at once, not a retry loop */
    CHECK(node == NULL);
    CHECK(steward_last_error_code() == STEWARD_RESULT_BROKER_AUTH);
    const char *msg = last_error();
    CHECK_STR_CONTAINS(msg, "refused this node");
    CHECK_STR_CONTAINS(msg, "\"steward\"");
    CHECK_STR_CONTAINS(msg, "not accepted");
    CHECK(strstr(msg, "not-the-password") == NULL);
    CHECK(strcmp(steward_result_name(STEWARD_RESULT_BROKER_AUTH), "STEWARD_RESULT_BROKER_AUTH") == 0);
    char text[512];
    size_t n = 0;
    CHECK_OK(steward_result_message(STEWARD_RESULT_BROKER_AUTH, text, sizeof text, &n));
    CHECK_STR_CONTAINS(text, "refused this node");
}

TEST(no_credentials_for_a_protected_broker_is_refused) {
    CHECK(auth_url() != NULL);
    steward_node_builder *b = auth_builder("auth-none");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_broker_token(b, "x"));
    CHECK_OK(steward_node_builder_clear_broker_auth(b));
    steward_node *node = NULL;
    CHECK_RC(steward_node_start(b, &node), STEWARD_RESULT_BROKER_AUTH);
    CHECK_STR_CONTAINS(last_error(), "requires authentication and none was given");
}

TEST(broker_security_setters_check_their_arguments) {
    steward_node_builder *b = auth_builder("auth-args");
    CHECK(b != NULL);
    CHECK_RC(steward_node_builder_set_broker_user_password(NULL, "u", "p"), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_set_broker_user_password(b, NULL, "p"), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_set_broker_user_password(b, "u", NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_set_broker_user_password(b, "", "p"), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_broker_token(b, ""), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_broker_nkey_seed(b, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_set_broker_nkey_seed_file(b, ""), STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_RC(steward_node_builder_set_broker_tls_ca_file(b, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_set_broker_tls_client_cert(b, "c.pem", NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_OK(steward_node_builder_set_broker_require_tls(b, false));
    /* An unreadable credentials file is a configuration error naming it, before connecting. */
    CHECK_OK(steward_node_builder_set_broker_credentials_file(b, "/nonexistent/steward-test.creds"));
    steward_node *node = NULL;
    CHECK_RC(steward_node_start(b, &node), STEWARD_RESULT_CONFIG);
    CHECK_STR_CONTAINS(last_error(), "/nonexistent/steward-test.creds");
}
