//! Classification and logits: `cifar10_classify`, `cifar10_top_k`, `cifar10_logits`.

use infer::Prediction;
use model_format::arch::{IMAGE_LEN, INPUT_LEN, NUM_CLASSES};

use crate::args::{batch, expect_len, input, non_null, output};
use crate::handles::{self, cifar10_model, Model};
use crate::status::cifar10_status::{self, CIFAR10_ERR_INVALID_ARGUMENT};
use crate::status::{guard, Failure};

/// Images or inputs handed to the engine per call: bounds the library's own memory
/// whatever `n` is.
const CHUNK: usize = 256;

/// Classifies `n` interleaved (HWC) 32×32 RGB images: `images` holds `images_len ==
/// n * CIFAR10_IMAGE_LEN` bytes (`[n][32][32][3]`, R, G, B). Writes each image's most
/// probable class (0–9) to `classes` (`classes_len == n`) and its ten class probabilities
/// to `probabilities` (`probabilities_len == n * CIFAR10_NUM_CLASSES`, `[n][10]`).
///
/// Errors: `CIFAR10_ERR_NULL_POINTER`, `CIFAR10_ERR_INVALID_HANDLE`,
/// `CIFAR10_ERR_CLOSED_HANDLE`, `CIFAR10_ERR_EMPTY_BATCH` (`n == 0`),
/// `CIFAR10_ERR_BATCH_TOO_LARGE`, `CIFAR10_ERR_BUFFER_LENGTH`; the outputs are then
/// unspecified.
///
/// # Safety
/// Each pointer must be valid for its stated length; the outputs must not overlap.
#[no_mangle]
pub unsafe extern "C" fn cifar10_classify(
    model: cifar10_model,
    images: *const u8,
    images_len: usize,
    n: usize,
    classes: *mut i32,
    classes_len: usize,
    probabilities: *mut f32,
    probabilities_len: usize,
) -> cifar10_status {
    guard(|| {
        non_null(images, "images")?;
        non_null(classes, "classes")?;
        non_null(probabilities, "probabilities")?;
        let model = handles::get(model)?;
        let n = batch(n)?;
        expect_len("images", images_len, n * IMAGE_LEN, n)?;
        expect_len("classes", classes_len, n, n)?;
        expect_len("probabilities", probabilities_len, n * NUM_CLASSES, n)?;
        // SAFETY: non-NULL (checked above) and valid for these lengths (the caller's contract).
        let images = unsafe { input(images, images_len, "images")? };
        let classes = unsafe { output(classes, classes_len, "classes")? };
        let probabilities = unsafe { output(probabilities, probabilities_len, "probabilities")? };
        predict(&model, images, |i, prediction| {
            classes[i] = prediction.class as i32;
            probabilities[i * NUM_CLASSES..][..NUM_CLASSES].copy_from_slice(&prediction.probabilities);
        })
    })
}

/// Like `cifar10_classify`, giving each image's `k` most probable classes (1 ≤ `k` ≤ 10),
/// most probable first: `classes` and `probabilities` are `[n][k]` (`classes_len ==
/// probabilities_len == n * k`). Ties go to the lower class index.
///
/// Errors: those of `cifar10_classify`, and `CIFAR10_ERR_INVALID_ARGUMENT` for `k`
/// outside 1–10.
///
/// # Safety
/// Each pointer must be valid for its stated length; the outputs must not overlap.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the C signature: a pointer and a length per buffer
pub unsafe extern "C" fn cifar10_top_k(
    model: cifar10_model,
    images: *const u8,
    images_len: usize,
    n: usize,
    k: usize,
    classes: *mut i32,
    classes_len: usize,
    probabilities: *mut f32,
    probabilities_len: usize,
) -> cifar10_status {
    guard(|| {
        non_null(images, "images")?;
        non_null(classes, "classes")?;
        non_null(probabilities, "probabilities")?;
        let model = handles::get(model)?;
        let n = batch(n)?;
        if !(1..=NUM_CLASSES).contains(&k) {
            return Err(Failure::new(CIFAR10_ERR_INVALID_ARGUMENT, format!("k is {k}, expected 1 to {NUM_CLASSES}")));
        }
        expect_len("images", images_len, n * IMAGE_LEN, n)?;
        expect_len("classes", classes_len, n * k, n)?;
        expect_len("probabilities", probabilities_len, n * k, n)?;
        // SAFETY: non-NULL (checked above) and valid for these lengths (the caller's contract).
        let images = unsafe { input(images, images_len, "images")? };
        let classes = unsafe { output(classes, classes_len, "classes")? };
        let probabilities = unsafe { output(probabilities, probabilities_len, "probabilities")? };
        predict(&model, images, |i, prediction| {
            for (j, ranked) in prediction.top_k(k).iter().enumerate() {
                classes[i * k + j] = ranked.class as i32;
                probabilities[i * k + j] = ranked.probability;
            }
        })
    })
}

/// The logits (`[n][10]`, `logits_len == n * CIFAR10_NUM_CLASSES`) of `n` preprocessed
/// inputs (`[n][3][24][24]` floats, `inputs_len == n * CIFAR10_INPUT_LEN`): the central
/// 24×24 crop of each image, planar, standardised per image as `(x − mean) /
/// max(stddev, 1/√1728)`.
///
/// Errors: as for `cifar10_classify`; `CIFAR10_ERR_INVALID_ARGUMENT` for an input value that
/// is NaN, infinite or beyond ±1e6 (preprocessed images lie within ±42); `CIFAR10_ERR_INTERNAL`
/// when the logits are not finite (the model overflowed). The last error names the value or
/// the image.
///
/// # Safety
/// Each pointer must be valid for its stated length; the buffers must not overlap.
#[no_mangle]
pub unsafe extern "C" fn cifar10_logits(
    model: cifar10_model,
    inputs: *const f32,
    inputs_len: usize,
    n: usize,
    logits: *mut f32,
    logits_len: usize,
) -> cifar10_status {
    guard(|| {
        non_null(inputs, "inputs")?;
        non_null(logits, "logits")?;
        let model = handles::get(model)?;
        let n = batch(n)?;
        expect_len("inputs", inputs_len, n * INPUT_LEN, n)?;
        expect_len("logits", logits_len, n * NUM_CLASSES, n)?;
        // SAFETY: non-NULL (checked above) and valid for these lengths (the caller's contract).
        let inputs = unsafe { input(inputs, inputs_len, "inputs")? };
        let logits = unsafe { output(logits, logits_len, "logits")? };
        // The library's checked path (inputs finite and within ±1e6, logits finite); it runs
        // the engine in chunks itself.
        Ok(model.classifier.logits_flat(inputs, n, logits)?)
    })
}

/// Classifies HWC `images` chunk by chunk, handing each prediction and its index to `each`.
fn predict(model: &Model, images: &[u8], mut each: impl FnMut(usize, &Prediction)) -> Result<(), Failure> {
    for (c, chunk) in images.chunks(CHUNK * IMAGE_LEN).enumerate() {
        for (i, prediction) in model.classifier.classify_hwc(chunk)?.iter().enumerate() {
            each(c * CHUNK + i, prediction);
        }
    }
    Ok(())
}
