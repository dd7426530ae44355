/*
 * Exercises libcifar10 from C, as an application would: classifies the CIFAR-10 sample
 * (records of 1 label byte + planar RGB, converted to HWC here) and checks the count of
 * correct answers, runs two threads on one handle, and tries every kind of bad input.
 * Built and run by infer-c/tests/c_program.rs (static, shared, and under valgrind).
 *
 * Usage: classify_sample MODEL SAMPLE EXPECTED_CORRECT
 * EXPECTED_CORRECT "-" skips the count check (the valgrind run uses a few records only).
 * Exit status 0 when every check passes; each failed check is printed.
 */
#define _POSIX_C_SOURCE 200809L

#include "cifar10.h"

#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define RECORD_LEN (1 + CIFAR10_IMAGE_LEN)
#define PLANE (32 * 32)
/* Images the secondary passes (top-k, logits, threads) use: enough to cover every code
 * path, few enough to keep the valgrind run short. */
#define SUBSET 200

static int failures = 0;

#define CHECK(cond, ...)                                        \
    do {                                                        \
        if (!(cond)) {                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                       \
            fputc('\n', stderr);                                \
            failures++;                                         \
        }                                                       \
    } while (0)

static const char *last_error(void) {
    const char *message = NULL;
    if (cifar10_last_error(&message) != CIFAR10_OK || message == NULL) return "(no message)";
    return message;
}

#define EXPECT_OK(call) \
    do { cifar10_status s_ = (call); CHECK(s_ == CIFAR10_OK, "%s: status %d: %s", #call, s_, last_error()); } while (0)

/* A call that must fail with `expected` and say why. */
static void expect_error(cifar10_status status, cifar10_status expected, const char *what) {
    const char *message = last_error();
    CHECK(status == expected, "%s: status %d, expected %d (%s)", what, status, expected, message);
    CHECK(message[0] != '\0', "%s: empty error message", what);
    printf("  %-44s -> %2d: %s\n", what, status, message);
}

/* ---- README example: classify one 32x32 RGB image (HWC bytes) ---- */
static int readme_example(const char *path, const uint8_t image[CIFAR10_IMAGE_LEN]) {
    cifar10_model model = 0;
    int32_t class_index;
    float probabilities[CIFAR10_NUM_CLASSES];
    char name[32];
    if (cifar10_open_path(path, 1, &model) != CIFAR10_OK ||
        cifar10_classify(model, image, CIFAR10_IMAGE_LEN, 1, &class_index, 1,
                         probabilities, CIFAR10_NUM_CLASSES) != CIFAR10_OK ||
        cifar10_class_name(model, (size_t)class_index, name, sizeof name, NULL) != CIFAR10_OK) {
        const char *message;
        cifar10_last_error(&message);
        fprintf(stderr, "cifar10: %s\n", message);
        cifar10_close(&model);
        return -1;
    }
    printf("%s (%.1f%%)\n", name, 100.0 * probabilities[class_index]);
    cifar10_close(&model);
    return class_index;
}
/* ---- end of README example ---- */

static uint8_t *read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    uint8_t *data = NULL;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size >= 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc((size_t)size + 1)) != NULL) {
            *len = fread(data, 1, (size_t)size, f);
            if (*len != (size_t)size) { free(data); data = NULL; }
        }
    }
    fclose(f);
    return data;
}

/* CIFAR-10 records (label, then R, G and B planes) to labels and interleaved HWC images. */
static void records_to_hwc(const uint8_t *records, size_t n, uint8_t *labels, uint8_t *hwc) {
    for (size_t i = 0; i < n; i++) {
        const uint8_t *record = records + i * RECORD_LEN;
        labels[i] = record[0];
        for (size_t p = 0; p < PLANE; p++)
            for (size_t c = 0; c < 3; c++) hwc[i * CIFAR10_IMAGE_LEN + p * 3 + c] = record[1 + c * PLANE + p];
    }
}

/* The library's preprocessing, written again: central 24x24 crop, planar, standardised
 * per image with double sums, (x - mean) / max(stddev, 1/sqrt(1728)). */
static void preprocess(const uint8_t *hwc, float *out) {
    for (size_t c = 0; c < 3; c++)
        for (size_t y = 0; y < 24; y++)
            for (size_t x = 0; x < 24; x++) out[(c * 24 + y) * 24 + x] = hwc[((y + 4) * 32 + x + 4) * 3 + c];
    double sum = 0, squares = 0;
    for (size_t i = 0; i < CIFAR10_INPUT_LEN; i++) sum += out[i];
    double mean = sum / CIFAR10_INPUT_LEN;
    for (size_t i = 0; i < CIFAR10_INPUT_LEN; i++) squares += (out[i] - mean) * (out[i] - mean);
    double scale = fmax(sqrt(squares / CIFAR10_INPUT_LEN), 1.0 / sqrt((double)CIFAR10_INPUT_LEN));
    for (size_t i = 0; i < CIFAR10_INPUT_LEN; i++) out[i] = (float)((out[i] - mean) / scale);
}

struct job {
    cifar10_model model;
    const uint8_t *images;
    size_t n;
    int32_t *classes;
    float *probabilities;
    cifar10_status status;
};

static void *run_job(void *arg) {
    struct job *job = arg;
    job->status = cifar10_classify(job->model, job->images, job->n * CIFAR10_IMAGE_LEN, job->n, job->classes, job->n,
                                   job->probabilities, job->n * CIFAR10_NUM_CLASSES);
    return NULL;
}

static void check_metadata(cifar10_model model) {
    const char *version = NULL;
    EXPECT_OK(cifar10_version(&version));
    CHECK(version && strlen(version) >= 5, "version \"%s\"", version ? version : "(null)");
    char name[32];
    size_t name_len = 0;
    printf("libcifar10 %s; classes:", version ? version : "?");
    for (size_t i = 0; i < CIFAR10_NUM_CLASSES; i++) {
        EXPECT_OK(cifar10_class_name(model, i, name, sizeof name, &name_len));
        CHECK(name_len == strlen(name) && name_len > 0, "class %zu name length %zu", i, name_len);
        printf(" %s", name);
    }
    EXPECT_OK(cifar10_class_name(model, 0, name, sizeof name, NULL));
    CHECK(strcmp(name, "airplane") == 0, "class 0 is \"%s\"", name);
    uint64_t step = 0;
    double precision = 0;
    uint32_t threads = 0;
    EXPECT_OK(cifar10_step(model, &step));
    /* An int8 model does not record a precision@1: its quantizer never sees the test set. */
    cifar10_status stated = cifar10_precision_at_1(model, &precision);
    CHECK(stated == CIFAR10_OK || stated == CIFAR10_ERR_NOT_AVAILABLE, "precision_at_1 status %d", (int)stated);
    EXPECT_OK(cifar10_threads(model, &threads));
    printf("\nstep %llu, precision@1 %.4f, threads %u\n", (unsigned long long)step, precision, threads);
    CHECK(step > 0, "step %llu", (unsigned long long)step);
    CHECK(stated != CIFAR10_OK || (precision > 0.1 && precision <= 1.0), "precision@1 %f", precision);
    CHECK(threads == 1, "threads %u", threads);
}

/* Top-k of the first `n` images agrees with classify: same first class, same probability,
 * probabilities in decreasing order. */
static void check_top_k(cifar10_model model, const uint8_t *hwc, size_t n, const int32_t *classes, const float *probs) {
    const size_t k = 3;
    int32_t *top = malloc(n * k * sizeof *top);
    float *top_p = malloc(n * k * sizeof *top_p);
    EXPECT_OK(cifar10_top_k(model, hwc, n * CIFAR10_IMAGE_LEN, n, k, top, n * k, top_p, n * k));
    for (size_t i = 0; i < n; i++) {
        CHECK(top[i * k] == classes[i], "image %zu: top-1 %d, classify %d", i, top[i * k], classes[i]);
        CHECK(top_p[i * k] == probs[i * CIFAR10_NUM_CLASSES + classes[i]], "image %zu: top-1 probability", i);
        CHECK(top_p[i * k] >= top_p[i * k + 1] && top_p[i * k + 1] >= top_p[i * k + 2], "image %zu: order", i);
    }
    free(top);
    free(top_p);
}

/* Logits of inputs preprocessed here: their softmax is classify's probabilities. */
static void check_logits(cifar10_model model, const uint8_t *hwc, size_t n, const float *probs) {
    float *inputs = malloc(n * CIFAR10_INPUT_LEN * sizeof *inputs);
    float *logits = malloc(n * CIFAR10_NUM_CLASSES * sizeof *logits);
    for (size_t i = 0; i < n; i++) preprocess(hwc + i * CIFAR10_IMAGE_LEN, inputs + i * CIFAR10_INPUT_LEN);
    EXPECT_OK(cifar10_logits(model, inputs, n * CIFAR10_INPUT_LEN, n, logits, n * CIFAR10_NUM_CLASSES));
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        const float *row = logits + i * CIFAR10_NUM_CLASSES;
        double max = row[0], sum = 0;
        for (size_t c = 1; c < CIFAR10_NUM_CLASSES; c++) max = fmax(max, row[c]);
        for (size_t c = 0; c < CIFAR10_NUM_CLASSES; c++) sum += exp(row[c] - max);
        for (size_t c = 0; c < CIFAR10_NUM_CLASSES; c++)
            worst = fmax(worst, fabs(exp(row[c] - max) / sum - probs[i * CIFAR10_NUM_CLASSES + c]));
    }
    printf("logits: softmax within %.2g of classify's probabilities\n", worst);
    CHECK(worst < 1e-6, "softmax of logits differs from probabilities by %g", worst);
    free(inputs);
    free(logits);
}

/* Two threads classify the two halves of the first `n` images on one handle at once; the
 * results must be exactly the single-threaded ones. */
static void check_threads(cifar10_model model, const uint8_t *hwc, size_t n, const int32_t *classes, const float *probs) {
    int32_t *c = malloc(n * sizeof *c);
    float *p = malloc(n * CIFAR10_NUM_CLASSES * sizeof *p);
    size_t half = n / 2;
    struct job jobs[2] = {
        {model, hwc, half, c, p, CIFAR10_ERR_INTERNAL},
        {model, hwc + half * CIFAR10_IMAGE_LEN, n - half, c + half, p + half * CIFAR10_NUM_CLASSES, CIFAR10_ERR_INTERNAL},
    };
    pthread_t threads[2];
    for (int t = 0; t < 2; t++) CHECK(pthread_create(&threads[t], NULL, run_job, &jobs[t]) == 0, "pthread_create");
    for (int t = 0; t < 2; t++) pthread_join(threads[t], NULL);
    for (int t = 0; t < 2; t++) CHECK(jobs[t].status == CIFAR10_OK, "thread %d: status %d", t, jobs[t].status);
    CHECK(memcmp(c, classes, n * sizeof *c) == 0, "two threads: classes differ from one thread's");
    CHECK(memcmp(p, probs, n * CIFAR10_NUM_CLASSES * sizeof *p) == 0, "two threads: probabilities differ");
    printf("two threads on one handle: %zu images, same results\n", n);
    free(c);
    free(p);
}

/* The model from memory (2 threads per call) gives the same results as from its file. */
static void check_open_bytes(const uint8_t *bytes, size_t len, const uint8_t *hwc, size_t n, const float *probs) {
    enum { MAX = 16 };
    cifar10_model model = 0;
    int32_t c[MAX];
    float p[MAX * CIFAR10_NUM_CLASSES];
    n = n < MAX ? n : MAX;
    EXPECT_OK(cifar10_open_bytes(bytes, len, 2, &model));
    EXPECT_OK(cifar10_classify(model, hwc, n * CIFAR10_IMAGE_LEN, n, c, n, p, n * CIFAR10_NUM_CLASSES));
    CHECK(memcmp(p, probs, n * CIFAR10_NUM_CLASSES * sizeof *p) == 0, "model from bytes: probabilities differ");
    EXPECT_OK(cifar10_close(&model));
}

static void check_bad_opens(const char *path, const uint8_t *bytes, size_t len) {
    cifar10_model model = 12345;
    expect_error(cifar10_open_path(NULL, 1, &model), CIFAR10_ERR_NULL_POINTER, "open_path(NULL path)");
    CHECK(model == 12345, "model changed by a call refused for a NULL path");
    expect_error(cifar10_open_path(path, 1, NULL), CIFAR10_ERR_NULL_POINTER, "open_path(NULL model)");
    expect_error(cifar10_open_path("/nonexistent/cifar10.safetensors", 1, &model), CIFAR10_ERR_IO,
                 "open_path(missing file)");
    CHECK(model == 0, "model not reset to 0 on failure");
    expect_error(cifar10_open_path(path, CIFAR10_MAX_THREADS + 1, &model), CIFAR10_ERR_INVALID_ARGUMENT,
                 "open_path(too many threads)");
    expect_error(cifar10_open_bytes(NULL, len, 1, &model), CIFAR10_ERR_NULL_POINTER, "open_bytes(NULL)");
    expect_error(cifar10_open_bytes(bytes, 0, 1, &model), CIFAR10_ERR_INVALID_MODEL, "open_bytes(0 bytes)");
    expect_error(cifar10_open_bytes(bytes, len / 2, 1, &model), CIFAR10_ERR_INVALID_MODEL, "open_bytes(truncated)");
    uint8_t *corrupt = malloc(len);
    memcpy(corrupt, bytes, len);
    corrupt[len - 100] ^= 0x55; /* inside the last tensor: the stored digest no longer matches */
    expect_error(cifar10_open_bytes(corrupt, len, 1, &model), CIFAR10_ERR_INVALID_MODEL, "open_bytes(flipped bits)");
    char name[] = "/tmp/cifar10-corrupt-XXXXXX";
    int fd = mkstemp(name);
    CHECK(fd >= 0, "mkstemp");
    if (fd >= 0) {
        CHECK(write(fd, corrupt, 4096) == 4096, "write corrupt file");
        close(fd);
        expect_error(cifar10_open_path(name, 1, &model), CIFAR10_ERR_INVALID_MODEL, "open_path(corrupt file)");
        unlink(name);
    }
    free(corrupt);
    CHECK(model == 0, "model not 0 after failed opens");
}

static void check_bad_calls(cifar10_model model, const uint8_t *hwc) {
    int32_t c[4];
    float p[4 * CIFAR10_NUM_CLASSES];
    const size_t img = CIFAR10_IMAGE_LEN, k = CIFAR10_NUM_CLASSES;
    expect_error(cifar10_classify(model, NULL, 2 * img, 2, c, 2, p, 2 * k), CIFAR10_ERR_NULL_POINTER, "classify(NULL images)");
    expect_error(cifar10_classify(model, hwc, 2 * img, 2, NULL, 2, p, 2 * k), CIFAR10_ERR_NULL_POINTER, "classify(NULL classes)");
    expect_error(cifar10_classify(model, hwc, 2 * img, 2, c, 2, NULL, 2 * k), CIFAR10_ERR_NULL_POINTER, "classify(NULL probabilities)");
    expect_error(cifar10_classify(0, hwc, 2 * img, 2, c, 2, p, 2 * k), CIFAR10_ERR_INVALID_HANDLE, "classify(handle 0)");
    expect_error(cifar10_classify(987654321, hwc, 2 * img, 2, c, 2, p, 2 * k), CIFAR10_ERR_INVALID_HANDLE, "classify(unknown handle)");
    expect_error(cifar10_classify(model, hwc, 0, 0, c, 0, p, 0), CIFAR10_ERR_EMPTY_BATCH, "classify(n = 0)");
    expect_error(cifar10_classify(model, hwc, 2 * img, SIZE_MAX, c, 2, p, 2 * k), CIFAR10_ERR_BATCH_TOO_LARGE, "classify(n = SIZE_MAX)");
    expect_error(cifar10_classify(model, hwc, 2 * img, CIFAR10_MAX_BATCH + 1, c, 2, p, 2 * k), CIFAR10_ERR_BATCH_TOO_LARGE,
                 "classify(n = CIFAR10_MAX_BATCH + 1)");
    expect_error(cifar10_classify(model, hwc, 2 * img - 1, 2, c, 2, p, 2 * k), CIFAR10_ERR_BUFFER_LENGTH, "classify(short images)");
    expect_error(cifar10_classify(model, hwc, 2 * img, 2, c, 3, p, 2 * k), CIFAR10_ERR_BUFFER_LENGTH, "classify(long classes)");
    expect_error(cifar10_classify(model, hwc, 2 * img, 2, c, 2, p, k), CIFAR10_ERR_BUFFER_LENGTH, "classify(short probabilities)");
    expect_error(cifar10_top_k(model, hwc, img, 1, 0, c, 0, p, 0), CIFAR10_ERR_INVALID_ARGUMENT, "top_k(k = 0)");
    expect_error(cifar10_top_k(model, hwc, img, 1, 11, c, 11, p, 11), CIFAR10_ERR_INVALID_ARGUMENT, "top_k(k = 11)");
    expect_error(cifar10_top_k(model, hwc, img, 1, 2, c, 1, p, 2), CIFAR10_ERR_BUFFER_LENGTH, "top_k(short classes)");
    float inputs[2 * CIFAR10_INPUT_LEN + 1];
    memset(inputs, 0, sizeof inputs);
    expect_error(cifar10_logits(model, inputs, 2 * CIFAR10_INPUT_LEN, 2, p, k), CIFAR10_ERR_BUFFER_LENGTH, "logits(short logits)");
    expect_error(cifar10_logits(model, inputs, 2 * CIFAR10_INPUT_LEN, 0, p, 0), CIFAR10_ERR_EMPTY_BATCH, "logits(n = 0)");
    /* The library's one input rule (the server's too): finite and within +-1e6. */
    const float bad_values[] = {NAN, INFINITY, -INFINITY, 1e30f};
    for (size_t b = 0; b < sizeof bad_values / sizeof bad_values[0]; b++) {
        inputs[CIFAR10_INPUT_LEN + 7] = bad_values[b];
        expect_error(cifar10_logits(model, inputs, 2 * CIFAR10_INPUT_LEN, 2, p, 2 * k), CIFAR10_ERR_INVALID_ARGUMENT,
                     "logits(NaN, infinite or 1e30 input)");
        const char *why = last_error();
        CHECK(strstr(why, "input value 1735 (image 1)") != NULL, "logits(bad input) message: %s", why);
    }
    inputs[CIFAR10_INPUT_LEN + 7] = 0;
    expect_error(cifar10_logits(model, NULL, 0, 1, p, k), CIFAR10_ERR_NULL_POINTER, "logits(NULL inputs)");
    const float *misaligned = (const float *)(const void *)((const char *)inputs + 1);
    expect_error(cifar10_logits(model, misaligned, CIFAR10_INPUT_LEN, 1, p, k), CIFAR10_ERR_INVALID_ARGUMENT,
                 "logits(misaligned inputs)");
    char name[4];
    size_t name_len = 0;
    expect_error(cifar10_class_name(model, 10, name, sizeof name, NULL), CIFAR10_ERR_INVALID_ARGUMENT, "class_name(index 10)");
    expect_error(cifar10_class_name(model, 0, name, sizeof name, &name_len), CIFAR10_ERR_BUFFER_TOO_SMALL, "class_name(short buffer)");
    CHECK(name_len == strlen("airplane"), "name_len %zu for a short buffer", name_len);
    expect_error(cifar10_class_name(model, 0, NULL, 8, NULL), CIFAR10_ERR_NULL_POINTER, "class_name(NULL buffer)");
    expect_error(cifar10_step(model, NULL), CIFAR10_ERR_NULL_POINTER, "step(NULL)");
    expect_error(cifar10_precision_at_1(model, NULL), CIFAR10_ERR_NULL_POINTER, "precision_at_1(NULL)");
    expect_error(cifar10_threads(model, NULL), CIFAR10_ERR_NULL_POINTER, "threads(NULL)");
    expect_error(cifar10_version(NULL), CIFAR10_ERR_NULL_POINTER, "version(NULL)");
    CHECK(cifar10_last_error(NULL) == CIFAR10_ERR_NULL_POINTER, "last_error(NULL)");
    const char *version;
    EXPECT_OK(cifar10_version(&version));
    CHECK(strcmp(last_error(), "") == 0, "last error not cleared by a success: %s", last_error());
}

/* Closing: a copy of a closed handle is refused, closing 0 or NULL does nothing. */
static void check_close(cifar10_model model, const uint8_t *hwc) {
    cifar10_model copy = model;
    int32_t c;
    float p[CIFAR10_NUM_CLASSES];
    EXPECT_OK(cifar10_close(&model));
    CHECK(model == 0, "close did not zero the handle");
    EXPECT_OK(cifar10_close(&model));
    EXPECT_OK(cifar10_close(NULL));
    expect_error(cifar10_classify(copy, hwc, CIFAR10_IMAGE_LEN, 1, &c, 1, p, CIFAR10_NUM_CLASSES), CIFAR10_ERR_CLOSED_HANDLE,
                 "classify(closed handle)");
    expect_error(cifar10_step(copy, &(uint64_t){0}), CIFAR10_ERR_CLOSED_HANDLE, "step(closed handle)");
    expect_error(cifar10_close(&copy), CIFAR10_ERR_CLOSED_HANDLE, "close(closed handle)");
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s MODEL SAMPLE EXPECTED_CORRECT\n", argv[0]);
        return 2;
    }
    const char *model_path = argv[1];
    size_t records_len = 0, model_len = 0;
    uint8_t *records = read_file(argv[2], &records_len);
    uint8_t *model_bytes = read_file(model_path, &model_len);
    if (!records || !model_bytes || records_len % RECORD_LEN != 0 || records_len == 0) {
        fprintf(stderr, "cannot read %s and %s (or the sample is not whole CIFAR-10 records)\n", argv[2], model_path);
        return 2;
    }
    size_t n = records_len / RECORD_LEN;
    size_t subset = n < SUBSET ? n : SUBSET;
    uint8_t *labels = malloc(n);
    uint8_t *hwc = malloc(n * CIFAR10_IMAGE_LEN);
    int32_t *classes = malloc(n * sizeof *classes);
    float *probs = malloc(n * CIFAR10_NUM_CLASSES * sizeof *probs);
    records_to_hwc(records, n, labels, hwc);

    cifar10_model model = 0;
    EXPECT_OK(cifar10_open_path(model_path, 1, &model));
    CHECK(model != 0, "open_path gave handle 0");
    check_metadata(model);

    EXPECT_OK(cifar10_classify(model, hwc, n * CIFAR10_IMAGE_LEN, n, classes, n, probs, n * CIFAR10_NUM_CLASSES));
    long correct = 0;
    for (size_t i = 0; i < n; i++) correct += classes[i] == labels[i];
    printf("correct: %ld/%zu (expected %s)\n", correct, n, argv[3]);
    if (strcmp(argv[3], "-") != 0) CHECK(correct == atol(argv[3]), "correct %ld, expected %s", correct, argv[3]);

    CHECK(readme_example(model_path, hwc) == classes[0], "README example disagrees with classify");
    check_top_k(model, hwc, subset, classes, probs);
    check_logits(model, hwc, subset, probs);
    check_threads(model, hwc, subset, classes, probs);
    check_open_bytes(model_bytes, model_len, hwc, subset, probs);
    printf("bad inputs:\n");
    check_bad_opens(model_path, model_bytes, model_len);
    check_bad_calls(model, hwc);
    check_close(model, hwc);

    free(records);
    free(model_bytes);
    free(labels);
    free(hwc);
    free(classes);
    free(probs);
    if (failures) fprintf(stderr, "%d check(s) failed\n", failures);
    else printf("all checks passed\n");
    return failures ? 1 : 0;
}
