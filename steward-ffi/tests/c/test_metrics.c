/* Prometheus metrics through the C API: the builder option, the bound address, a scrape over
 * HTTP after a round trip between two C nodes, and the text snapshot. */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

/* GET /metrics from "IP:PORT" (IPv4); returns a malloc'd "head\r\n\r\nbody" or NULL. */
static char *http_get_metrics(const char *address) {
    char host[64];
    snprintf(host, sizeof host, "%s", address);
    char *colon = strrchr(host, ':');
    if (colon == NULL) return NULL;
    *colon = '\0';
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) return NULL;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return NULL;
    struct timeval tv = {20, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        close(fd);
        return NULL;
    }
    char req[256];
    int n = snprintf(req, sizeof req,
                     "GET /metrics HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", address);
    if (write(fd, req, (size_t)n) != n) {
        close(fd);
        return NULL;
    }
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (len + 1 >= cap) {
            cap *= 2;
            char *bigger = realloc(buf, cap);
            if (bigger == NULL) break;
            buf = bigger;
        }
        ssize_t got = read(fd, buf + len, cap - len - 1);
        if (got <= 0) break;
        len += (size_t)got;
    }
    close(fd);
    buf[len] = '\0';
    return buf;
}

static const char *ECHO_JSON =
    "[{\"toNode\":\"mx-ship1\",\"data\":[\"hi\"],"
    "\"commandOrEvent\":\"command\",\"method\":\"echo\"}]";

static const char *COMPLETED_LINE =
    "\nsteward_messages_completed_total{destination=\"mx-ship1\",method=\"echo\"} 1\n";

TEST(metrics_endpoint_and_snapshot_count_a_round_trip) {
    steward_node *ship = NULL, *central = NULL;
    steward_node_builder *b = test_builder("mx-ship1");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_allow(b, "mx-central", "echo"));
    CHECK_OK(steward_node_start(b, &ship));

    b = test_builder("mx-central");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_metrics_address(b, "127.0.0.1:0"));
    CHECK_OK(steward_node_start(b, &central));

    char addr[64];
    size_t addr_len = 0;
    CHECK_OK(steward_node_metrics_address(central, addr, sizeof addr, &addr_len));
    CHECK(addr_len == strlen(addr));
    CHECK(strncmp(addr, "127.0.0.1:", 10) == 0);
    CHECK(strcmp(addr, "127.0.0.1:0") != 0); /* the port actually bound */
    /* No metrics address: an empty string. */
    char none[8] = "x";
    size_t none_len = 99;
    CHECK_OK(steward_node_metrics_address(ship, none, sizeof none, &none_len));
    CHECK(none_len == 0 && none[0] == '\0');
    char tiny[4];
    size_t tiny_len = 0;
    CHECK_RC(steward_node_metrics_address(central, tiny, sizeof tiny, &tiny_len),
             STEWARD_RESULT_BUFFER_TOO_SMALL);

    steward_send_report *report = NULL;
    CHECK_OK(steward_node_send_json(central, ECHO_JSON, &report));
    CHECK(steward_send_report_accepted_len(report) == 1);
    char id[STEWARD_ID_BUF_LEN];
    snprintf(id, sizeof id, "%s", steward_send_report_accepted_id(report, 0));
    steward_send_report_free(report);
    steward_message_status *st = NULL;
    CHECK_OK(steward_node_wait(central, id, 20000, &st));
    CHECK(steward_message_status_state(st) == STEWARD_STATE_COMPLETED);
    steward_message_status_free(st);

    char *reply = http_get_metrics(addr);
    CHECK(reply != NULL);
    bool ok_status = strncmp(reply, "HTTP/1.1 200", 12) == 0;
    bool prometheus_type = strstr(reply, "text/plain; version=0.0.4") != NULL;
    bool completed = strstr(reply, COMPLETED_LINE) != NULL;
    bool delivered =
        strstr(reply, "\nsteward_delivery_latency_seconds_count{method=\"echo\"} 1\n") != NULL;
    bool idle =
        strstr(reply, "\nsteward_messages_in_flight{destination=\"mx-ship1\",method=\"echo\"} 0\n") !=
        NULL;
    free(reply);
    CHECK(ok_status);
    CHECK(prometheus_type);
    CHECK(completed);
    CHECK(delivered);
    CHECK(idle);

    /* The same counters without HTTP, for programs that expose them their own way. */
    steward_metrics *m = NULL;
    CHECK_OK(steward_node_metrics(central, &m));
    size_t len = 0;
    const char *text = steward_metrics_text(m, &len);
    CHECK(text != NULL && len == strlen(text));
    CHECK_STR_CONTAINS(text, COMPLETED_LINE);
    CHECK_STR_CONTAINS(text, "# TYPE steward_outbox_depth gauge");
    steward_metrics_free(m);
    m = NULL;
    CHECK_OK(steward_node_metrics(ship, &m));
    CHECK_STR_CONTAINS(steward_metrics_text(m, NULL),
                       "steward_incoming_executed_total{sender=\"mx-central\",method=\"echo\","
                       "status=\"ok\"} 1");
    steward_metrics_free(m);

    /* The endpoint stops with the node. */
    CHECK_OK(steward_node_stop(central));
    reply = http_get_metrics(addr);
    bool still_served = reply != NULL && strstr(reply, "HTTP/1.1") != NULL;
    free(reply);
    CHECK(!still_served);
    m = NULL;
    CHECK_RC(steward_node_metrics(central, &m), STEWARD_RESULT_STOPPED);
    CHECK(m == NULL);
    steward_node_free(central);
    steward_node_free(ship);
}

TEST(metrics_address_arguments_are_checked) {
    steward_node_builder *b = test_builder("mx-args");
    CHECK(b != NULL);
    CHECK_RC(steward_node_builder_set_metrics_address(b, "localhost"),
             STEWARD_RESULT_INVALID_ARGUMENT);
    CHECK_STR_CONTAINS(last_error(), "IP:PORT");
    CHECK_RC(steward_node_builder_set_metrics_address(b, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_builder_set_metrics_address(NULL, "127.0.0.1:0"),
             STEWARD_RESULT_NULL_PARAMETER);
    CHECK_OK(steward_node_builder_set_metrics_address(b, "127.0.0.1:0"));
    steward_node *first = NULL;
    CHECK_OK(steward_node_start(b, &first));
    char addr[64];
    size_t n = 0;
    CHECK_OK(steward_node_metrics_address(first, addr, sizeof addr, &n));

    /* A second node on the same address does not start, and says why. */
    b = test_builder("mx-args2");
    CHECK(b != NULL);
    CHECK_OK(steward_node_builder_set_metrics_address(b, addr));
    steward_node *second = NULL;
    CHECK_RC(steward_node_start(b, &second), STEWARD_RESULT_CONFIG);
    CHECK(second == NULL);
    CHECK_STR_CONTAINS(last_error(), "cannot serve metrics on");

    steward_metrics *m = NULL;
    CHECK_RC(steward_node_metrics(NULL, &m), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_metrics(first, NULL), STEWARD_RESULT_NULL_PARAMETER);
    CHECK_RC(steward_node_metrics_address(first, NULL, 8, &n), STEWARD_RESULT_NULL_PARAMETER);
    CHECK(steward_metrics_text(NULL, NULL) == NULL);
    steward_metrics_free(NULL);
    steward_node_free(first);
}
