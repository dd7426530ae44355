//! `--plot` of `cifar10 eval` and `cifar10 classify`, run as a user would: the PNG is opened
//! and checked (size, not blank, text drawn, the image's pixels), the SVG read as text, and
//! paths that must not be replaced are refused.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cifar10_cli::plot::{Chart, ConfusionChart, TopKChart};
use image::{Rgb, RgbImage};
use model_format::cifar::Records;

fn cifar10() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cifar10"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn bundled_model() -> PathBuf {
    repo().join("models/cifar10.safetensors")
}

/// The bundled model's count on the sample, as the manifest records it: `"817/1000"`.
fn sample_score() -> String {
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(repo().join("models/cifar10.manifest.json")).unwrap()).unwrap();
    let sample = &manifest["results"]["sample"];
    format!("{}/{}", sample["correct"]["cpu"], sample["total"])
}

fn sample_dir() -> PathBuf {
    repo().join("data/sample")
}

/// A fresh, empty temporary folder for one test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cifar10-plot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn succeeded(output: &Output) -> String {
    assert!(output.status.success(), "failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn failed_with(output: &Output) -> String {
    assert!(!output.status.success(), "succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Record 0 of the in-repo sample as interleaved RGB, and written as a PNG in `dir`.
fn sample_png(dir: &Path) -> (Vec<u8>, PathBuf) {
    let records = Records::read_file(sample_dir().join("test_batch.bin")).unwrap();
    let planar = records.image(0);
    let hwc: Vec<u8> = (0..32 * 32).flat_map(|p| (0..3).map(move |c| planar[c * 1024 + p])).collect();
    let path = dir.join("record0.png");
    RgbImage::from_raw(32, 32, hwc.clone()).unwrap().save(&path).unwrap();
    (hwc, path)
}

fn eval_plot(plot: &Path) -> Output {
    cifar10()
        .args(["eval", "--threads", "2", "--model"])
        .arg(bundled_model())
        .arg("--data-dir")
        .arg(sample_dir())
        .arg("--plot")
        .arg(plot)
        .output()
        .unwrap()
}

/// Pixels of the chart's text colour (near black) in the rows `rows` of `image`.
fn ink_in_rows(image: &RgbImage, rows: std::ops::Range<u32>) -> usize {
    rows.flat_map(|y| (0..image.width()).map(move |x| (x, y)))
        .filter(|&(x, y)| image.get_pixel(x, y).0.iter().all(|&v| v < 90))
        .count()
}

fn distinct_colours(image: &RgbImage) -> usize {
    let mut colours: Vec<[u8; 3]> = image.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    colours.len()
}

#[test]
fn eval_plot_draws_the_confusion_matrix_as_a_png() {
    let dir = temp_dir("eval-png");
    let plot = dir.join("confusion.png");
    let stdout = succeeded(&eval_plot(&plot));
    assert!(stdout.contains(&format!("({})", sample_score())), "{stdout}");

    let image = image::open(&plot).expect("a readable PNG").to_rgb8();
    let names: Vec<String> = model_format::CLASS_NAMES.iter().map(|s| s.to_string()).collect();
    let confusion = [[0; 10]; 10];
    let expected = ConfusionChart { confusion: &confusion, class_names: &names, title: String::new() }.size();
    assert_eq!(image.dimensions(), expected);
    assert!(distinct_colours(&image) > 50, "the chart is (nearly) blank");
    assert!(ink_in_rows(&image, 10..40) > 200, "no title text: is the bundled font drawn?");
    // The diagonal is the darkest blue: most images of each class are classified right.
    let dark_blue = image.pixels().filter(|p| p.0[2] > 150 && p.0[0] < 100).count();
    assert!(dark_blue > 3 * 60 * 60, "only {dark_blue} pixels of dark cells");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_plot_writes_svg_when_the_name_ends_in_svg() {
    let dir = temp_dir("eval-svg");
    let plot = dir.join("confusion.svg");
    succeeded(&eval_plot(&plot));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    for text in ["airplane", "truck", "predicted class", "true class", &sample_score()] {
        assert!(svg.contains(text), "the SVG has no {text:?}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn classify_plot_draws_the_image_beside_its_top5_bars() {
    let dir = temp_dir("classify");
    let (hwc, png) = sample_png(&dir);
    let plot = dir.join("top5.png");
    let output =
        cifar10().arg("classify").arg("--model").arg(bundled_model()).arg("--plot").arg(&plot).arg(&png).output();
    let stdout = succeeded(&output.unwrap());
    assert!(stdout.starts_with(&format!("{}: ", png.display())), "{stdout}");

    let image = image::open(&plot).expect("a readable PNG").to_rgb8();
    let chart = TopKChart { image_hwc: &hwc, ranked: vec![(String::new(), 0.0); 5], title: String::new() };
    assert_eq!(image.dimensions(), chart.size());
    assert!(ink_in_rows(&image, 15..45) > 100, "no title text");
    // The image is drawn 9× at (24, 70): the centre of each enlarged pixel is the pixel.
    for (x, y) in [(0u32, 0u32), (31, 0), (5, 17), (31, 31)] {
        let at = image.get_pixel(24 + 9 * x + 4, 70 + 9 * y + 4);
        let i = 3 * (y * 32 + x) as usize;
        assert_eq!(*at, Rgb([hwc[i], hwc[i + 1], hwc[i + 2]]), "pixel ({x}, {y})");
    }
    // Five bars in the bar colour.
    let bar = image.pixels().filter(|p| p.0 == [59, 130, 196]).count();
    assert!(bar > 30 * 30, "no bars drawn");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn plot_refuses_the_model_file_links_folders_and_other_names() {
    let dir = temp_dir("refuse");
    let model = dir.join("model.png");
    std::fs::copy(bundled_model(), &model).unwrap();
    let before = std::fs::read(&model).unwrap();
    let (_, png) = sample_png(&dir);
    let classify_plot = |plot: &Path| {
        cifar10().arg("classify").arg("--model").arg(&model).arg("--plot").arg(plot).arg(&png).output().unwrap()
    };

    let err = failed_with(&classify_plot(&model));
    assert!(err.contains("is the same file as the input"), "{err}");
    assert_eq!(std::fs::read(&model).unwrap(), before, "the model file was changed");

    let folder = dir.join("folder.png");
    std::fs::create_dir(&folder).unwrap();
    let err = failed_with(&classify_plot(&folder));
    assert!(err.contains("not a regular file"), "{err}");
    assert!(folder.is_dir());

    // A link to the image classified is that input; a link to any other file is refused too.
    let link = dir.join("link.png");
    std::os::unix::fs::symlink(&png, &link).unwrap();
    let err = failed_with(&classify_plot(&link));
    assert!(err.contains("is the same file as the input"), "{err}");
    let other = dir.join("other.png");
    std::fs::write(&other, b"not an input").unwrap();
    let link = dir.join("link-to-other.png");
    std::os::unix::fs::symlink(&other, &link).unwrap();
    let err = failed_with(&classify_plot(&link));
    assert!(err.contains("is a symbolic link"), "{err}");
    assert_eq!(std::fs::read(&other).unwrap(), b"not an input");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());

    let err = failed_with(&classify_plot(&dir.join("chart.jpg")));
    assert!(err.contains("--plot") && err.contains(".png or .svg"), "{err}");

    let two = cifar10()
        .args(["classify", "--model"])
        .arg(&model)
        .arg("--plot")
        .arg(dir.join("two.png"))
        .args([&png, &png])
        .output()
        .unwrap();
    let err = failed_with(&two);
    assert!(err.contains("--plot draws one image"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn eval_checks_the_plot_path_before_evaluating() {
    let dir = temp_dir("eval-early");
    let folder = dir.join("already-a-folder.png");
    std::fs::create_dir(&folder).unwrap();
    let output = eval_plot(&folder);
    let err = failed_with(&output);
    assert!(err.contains("not a regular file"), "{err}");
    assert!(!err.contains("evaluating"), "it evaluated first: {err}");
    assert!(output.stdout.is_empty(), "it reported before refusing: {}", String::from_utf8_lossy(&output.stdout));
    std::fs::remove_dir_all(dir).unwrap();
}
