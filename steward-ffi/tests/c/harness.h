/* A tiny assert-style test runner for the steward C API.
 *
 * TEST(name) { ... } defines and registers a test; CHECK* macros record a failure with its
 * location and end the current test. main() (harness.c) runs every test in order and prints
 * "N passed, M failed" as its last line. Tests talk to the nats-server whose URL is in
 * STEWARD_TEST_NATS_URL and keep their data under STEWARD_TEST_DIR. */
#ifndef STEWARD_TEST_HARNESS_H
#define STEWARD_TEST_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "steward.h"

typedef void (*test_fn)(void);
void harness_register(const char *name, test_fn fn);
void harness_fail(const char *file, int line, const char *fmt, ...);
bool harness_failed(void);

#define TEST(name)                                                              \
    static void name(void);                                                     \
    __attribute__((constructor)) static void register_##name(void) {            \
        harness_register(#name, name);                                          \
    }                                                                           \
    static void name(void)

#define CHECK(cond)                                                             \
    do {                                                                        \
        if (!(cond)) {                                                          \
            harness_fail(__FILE__, __LINE__, "CHECK(%s)", #cond);               \
            return;                                                             \
        }                                                                       \
    } while (0)

/* Checks that `call` returned `expected`, printing the code names and last error if not. */
#define CHECK_RC(call, expected)                                                \
    do {                                                                        \
        steward_result rc_ = (call);                                            \
        if (rc_ != (expected)) {                                                \
            harness_fail(__FILE__, __LINE__, "%s returned %s, expected %s (%s)", \
                         #call, steward_result_name(rc_),                       \
                         steward_result_name(expected), last_error());          \
            return;                                                             \
        }                                                                       \
    } while (0)

#define CHECK_OK(call) CHECK_RC(call, STEWARD_RESULT_OK)

#define CHECK_STR_CONTAINS(hay, needle)                                         \
    do {                                                                        \
        const char *h_ = (hay);                                                 \
        if (h_ == NULL || strstr(h_, (needle)) == NULL) {                       \
            harness_fail(__FILE__, __LINE__, "\"%s\" does not contain \"%s\"",  \
                         h_ ? h_ : "(null)", (needle));                         \
            return;                                                             \
        }                                                                       \
    } while (0)

/* The last error message on this thread (static buffer per thread). */
const char *last_error(void);

/* A counter threads can bump and the test can wait on (no sleeping). */
typedef struct counter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int value;
} counter;
void counter_init(counter *c);
void counter_destroy(counter *c);
void counter_add(counter *c, int n);
int counter_get(counter *c);
/* Waits until value >= target or timeout_ms passes; returns whether it got there. */
bool counter_wait(counter *c, int target, int timeout_ms);

/* A fresh data directory path under STEWARD_TEST_DIR (static storage, copied by callers). */
const char *fresh_dir(const char *tag);
const char *nats_url(void);

/* A builder for `name` on the test broker, with short timeouts, in a fresh data dir, and
 * signatures off: these tests are about delivery among names made up per test, not enrolment
 * (test_enrol.c runs the default, which requires signatures). */
steward_node_builder *test_builder(const char *name);

/* Like test_builder with steward's default signature policy (required, closed): such a node
 * runs nothing from central until it joined with a token (steward_node_builder_set_join_token). */
steward_node_builder *default_builder(const char *name);

/* Monotonic milliseconds. */
int64_t now_ms(void);

#endif
