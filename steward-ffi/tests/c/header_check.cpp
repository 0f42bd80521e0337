// The header must compile as C++ too; this program also links and runs against the library.
#include <cstdio>
#include <cstring>

#include "steward.h"

int main() {
    steward_result rc = steward_node_builder_new(nullptr, nullptr);
    if (rc != STEWARD_RESULT_NULL_PARAMETER) return 1;
    char buf[256];
    size_t n = 0;
    if (steward_last_error_message(buf, sizeof buf, &n) != STEWARD_RESULT_OK || n == 0) return 2;
    if (std::strcmp(steward_result_name(rc), "STEWARD_RESULT_NULL_PARAMETER") != 0) return 3;
    steward_status_callback cb = {nullptr, nullptr, nullptr};
    (void)cb;
    std::printf("C++: %s, version %s\n", buf, steward_version());
    return 0;
}
