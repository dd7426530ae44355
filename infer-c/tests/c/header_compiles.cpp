// The header from C++: included and called under -Wall -Wextra -Werror (built and run by
// infer-c/tests/c_program.rs). Usage: header_compiles MODEL
#include "cifar10.h"

#include <array>
#include <cstdio>
#include <string>

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    cifar10_model model = 0;
    if (cifar10_open_path(argv[1], 1, &model) != CIFAR10_OK) return 1;
    std::array<std::uint8_t, CIFAR10_IMAGE_LEN> image{};
    image.fill(100);
    std::int32_t class_index = -1;
    std::array<float, CIFAR10_NUM_CLASSES> probabilities{};
    cifar10_status status = cifar10_classify(model, image.data(), image.size(), 1, &class_index, 1,
                                             probabilities.data(), probabilities.size());
    std::array<char, 32> name{};
    if (status == CIFAR10_OK) {
        status = cifar10_class_name(model, static_cast<std::size_t>(class_index), name.data(), name.size(), nullptr);
    }
    const char *version = nullptr;
    cifar10_version(&version);
    cifar10_close(&model);
    if (status != CIFAR10_OK || model != 0) return 1;
    std::printf("C++: libcifar10 %s: a grey image is a %s\n", version, std::string(name.data()).c_str());
    return 0;
}
