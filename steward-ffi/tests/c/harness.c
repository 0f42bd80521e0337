/* The test runner behind harness.h. */
#include "harness.h"

#include <stdarg.h>
#include <stdlib.h>
#include <time.h>

#define MAX_TESTS 128

static struct {
    const char *name;
    test_fn fn;
} tests[MAX_TESTS];
static int n_tests;
static bool current_failed;

void harness_register(const char *name, test_fn fn) {
    if (n_tests < MAX_TESTS) {
        tests[n_tests].name = name;
        tests[n_tests].fn = fn;
        n_tests++;
    }
}

void harness_fail(const char *file, int line, const char *fmt, ...) {
    va_list ap;
    current_failed = true;
    fprintf(stdout, "    %s:%d: ", file, line);
    va_start(ap, fmt);
    vfprintf(stdout, fmt, ap);
    va_end(ap);
    fprintf(stdout, "\n");
    fflush(stdout);
}

bool harness_failed(void) { return current_failed; }

const char *last_error(void) {
    static __thread char buf[1024];
    size_t n = 0;
    steward_last_error_message(buf, sizeof buf, &n);
    return buf;
}

void counter_init(counter *c) {
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
    c->value = 0;
}

void counter_destroy(counter *c) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

void counter_add(counter *c, int n) {
    pthread_mutex_lock(&c->mu);
    c->value += n;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

int counter_get(counter *c) {
    pthread_mutex_lock(&c->mu);
    int v = c->value;
    pthread_mutex_unlock(&c->mu);
    return v;
}

bool counter_wait(counter *c, int target, int timeout_ms) {
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += timeout_ms / 1000;
    deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (deadline.tv_nsec >= 1000000000L) {
        deadline.tv_sec += 1;
        deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&c->mu);
    while (c->value < target) {
        if (pthread_cond_timedwait(&c->cv, &c->mu, &deadline) != 0) break;
    }
    bool ok = c->value >= target;
    pthread_mutex_unlock(&c->mu);
    return ok;
}

const char *nats_url(void) {
    const char *u = getenv("STEWARD_TEST_NATS_URL");
    return u ? u : "nats://127.0.0.1:1";
}

const char *fresh_dir(const char *tag) {
    static char path[4096];
    static int seq;
    const char *base = getenv("STEWARD_TEST_DIR");
    snprintf(path, sizeof path, "%s/%s-%d", base ? base : "/tmp", tag, ++seq);
    return path;
}

steward_node_builder *test_builder(const char *name) {
    steward_node_builder *b = default_builder(name);
    /* Signatures off: the tests using this builder check delivery, not enrolment. */
    if (b && steward_node_builder_require_signatures(b, false) != STEWARD_RESULT_OK) {
        steward_node_builder_free(b);
        return NULL;
    }
    return b;
}

steward_node_builder *default_builder(const char *name) {
    steward_node_builder *b = NULL;
    if (steward_node_builder_new(name, &b) != STEWARD_RESULT_OK) return NULL;
    if (steward_node_builder_add_broker(b, nats_url()) != STEWARD_RESULT_OK ||
        steward_node_builder_set_data_dir(b, fresh_dir(name)) != STEWARD_RESULT_OK ||
        steward_node_builder_set_ack_timeout_ms(b, 2000) != STEWARD_RESULT_OK ||
        steward_node_builder_set_retry_wait_ms(b, 100) != STEWARD_RESULT_OK ||
        steward_node_builder_set_retry_wait_max_ms(b, 500) != STEWARD_RESULT_OK) {
        steward_node_builder_free(b);
        return NULL;
    }
    return b;
}

int64_t now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int main(int argc, char **argv) {
    int passed = 0, failed = 0;
    const char *only = argc > 1 ? argv[1] : NULL;
    setvbuf(stdout, NULL, _IOLBF, 0);
    for (int i = 0; i < n_tests; i++) {
        if (only && strstr(tests[i].name, only) == NULL) continue;
        current_failed = false;
        int64_t start = now_ms();
        tests[i].fn();
        int64_t took = now_ms() - start;
        if (current_failed) {
            failed++;
            printf("FAIL %s (%lld ms)\n", tests[i].name, (long long)took);
        } else {
            passed++;
            printf("ok   %s (%lld ms)\n", tests[i].name, (long long)took);
        }
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 && passed > 0 ? 0 : 1;
}
