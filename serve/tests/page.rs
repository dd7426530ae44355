//! The page at `GET /`, driven in a real browser: Debian's headless `chromium` through
//! `chromedriver` (WebDriver). It uploads record 0 of the in-repo sample as a PNG and checks
//! the top-1 label and probability shown against the library's answer for the same image,
//! the 32×32 preview against the image's pixels, the model card, the messages for a file
//! that is not an image, one that is too large and a busy server, and the layout at phone
//! width. It saves
//! screenshots under `target/` (README shows a copy kept in `docs/`).
//!
//! Needs `chromium` and `chromedriver` on PATH: `bash scripts/setup-browser.sh` installs them.
//! Without them this test fails (it does not skip).

mod serve_support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use image::RgbImage;
use infer::cpu::CpuEngine;
use infer::Classifier;
use model_format::cifar::Records;
use model_format::{Model, Weights};
use serde_json::json;
use serve::{Limits, ModelCard, ServeConfig, Server};

/// How long the page may take to show an answer: generous, for a loaded CI machine; only a
/// bound so that a broken page fails instead of hanging.
const PATIENCE: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The full path of `program` on PATH, or a failure that says how to install it.
fn require(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{program}` is not installed: run `bash scripts/setup-browser.sh` (installs Debian's chromium and \
                 chromium-driver), then run the tests again"
            )
        })
}

/// chromedriver on a free loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    fn start() -> Driver {
        let chromedriver = require("chromedriver");
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        Driver { child, url: format!("http://127.0.0.1:{port}") }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh, empty temporary folder for this test.
fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("cifar10-page-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headless Chromium session, retried while chromedriver is still starting.
async fn browser(driver: &Driver, profile: &Path) -> Client {
    let chromium = require("chromium");
    let mut args: Vec<String> = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        // Only loopback is reachable: never route the page's requests through a proxy.
        "--no-proxy-server",
        "--window-size=1100,1000",
    ]
    .map(String::from)
    .into();
    args.push(format!("--user-data-dir={}", profile.display()));
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": { "binary": chromium, "args": args },
    });
    let serde_json::Value::Object(capabilities) = capabilities else { unreachable!() };
    let mut last_error = String::new();
    for _ in 0..100 {
        match ClientBuilder::new(HttpConnector::new()).capabilities(capabilities.clone()).connect(&driver.url).await {
            Ok(client) => return client,
            Err(e) => last_error = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no WebDriver session from chromedriver at {}: {last_error}", driver.url);
}

/// The bundled model, served with its model card, on a free loopback port.
fn start_server() -> (Server, Classifier, Weights) {
    let model = repo().join("models/cifar10.safetensors");
    let weights = Weights::load(&model).unwrap();
    let engine: Arc<dyn infer::Engine> = Arc::new(CpuEngine::new(&weights, 1).unwrap());
    let config = ServeConfig {
        addr: "127.0.0.1:0".into(),
        log_requests: false,
        class_names: weights.metadata.class_names.clone(),
        model_card: Some(ModelCard::for_model(&Model::from(weights.clone()), "models/cifar10.safetensors")),
        ..ServeConfig::default()
    };
    let server = Server::start(config, engine).unwrap();
    // The library's answer comes from its own classifier, not the server's engine.
    let classifier = Classifier::from_path(&model).unwrap();
    (server, classifier, weights)
}

/// Record 0 of the in-repo sample as interleaved RGB, and its bytes as a PNG file in `dir`.
fn sample_png(dir: &Path) -> (Vec<u8>, PathBuf) {
    let records = Records::read_file(repo().join("data/sample/test_batch.bin")).unwrap();
    let planar = records.image(0);
    let hwc: Vec<u8> = (0..32 * 32).flat_map(|p| (0..3).map(move |c| planar[c * 1024 + p])).collect();
    let path = dir.join("record0.png");
    RgbImage::from_raw(32, 32, hwc.clone()).unwrap().save(&path).unwrap();
    (hwc, path)
}

async fn text_of(client: &Client, css: &str) -> String {
    client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("no {css}: {e}")).text().await.unwrap()
}

async fn upload(client: &Client, file: &Path) {
    let input = client.find(Locator::Css("#file")).await.expect("a file input");
    input.send_keys(&file.display().to_string()).await.expect("the file is chosen");
}

/// Waits until `css` matches an element, failing with the page's status line if it never does.
async fn wait_for(client: &Client, css: &str) {
    if let Err(e) = client.wait().at_most(PATIENCE).for_element(Locator::Css(css)).await {
        let status = text_of(client, "#status").await;
        let error = text_of(client, "#error").await;
        panic!("the page never showed {css} ({e}); status: {status:?}; error: {error:?}");
    }
}

/// Waits until the text of `css` contains `needle`, and returns that text.
async fn wait_for_text(client: &Client, css: &str, needle: &str) -> String {
    let period = Duration::from_millis(100);
    let mut text = String::new();
    for _ in 0..PATIENCE.as_millis() / period.as_millis() {
        text = text_of(client, css).await;
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(period).await;
    }
    panic!("{css} never said {needle:?}; it says {text:?}");
}

fn save_screenshot(png: &[u8], name: &str) -> PathBuf {
    let path = repo().join("target").join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_classifies_an_upload_as_the_library_does() {
    let dir = temp_dir("run");
    let (server, classifier, weights) = start_server();
    let driver = Driver::start();
    let client = browser(&driver, &dir.join("profile")).await;
    let mut outcome = check_page(&client, &server, &classifier, &weights, &dir).await;
    if outcome.is_ok() {
        outcome = check_busy_server(&client, &dir).await;
    }
    let _ = client.close().await;
    drop(driver);
    server.shutdown().unwrap();
    outcome.unwrap_or_else(|e| panic!("{e}"));
    std::fs::remove_dir_all(dir).unwrap();
}

async fn check_page(
    client: &Client,
    server: &Server,
    classifier: &Classifier,
    weights: &Weights,
    dir: &Path,
) -> Result<(), String> {
    client.goto(&format!("http://{}/", server.addr())).await.map_err(|e| e.to_string())?;
    assert_eq!(client.title().await.unwrap(), "CIFAR-10 classifier");
    check_model_card(client, weights).await;
    check_labels_and_keyboard(client).await;
    check_classification(client, classifier, dir).await;
    let screenshot = client.screenshot().await.map_err(|e| e.to_string())?;
    save_screenshot(&screenshot, "page.png");
    check_preview_of_a_larger_image(client, dir).await;
    check_phone_width(client).await;
    check_not_an_image(client, dir).await;
    check_too_large(client, dir).await;
    Ok(())
}

/// A server whose engine is stuck with a full queue answers 503: the page says it is busy.
async fn check_busy_server(client: &Client, dir: &Path) -> Result<(), String> {
    use serve_support::{get, image, image_request, metric, post_json, start, GatedEngine};
    let engine = GatedEngine::new();
    let server = start(engine.clone(), |c| {
        c.max_wait = Duration::ZERO;
        c.limits = Limits { max_batch: 1, max_queued_images: 1, ..Limits::default() };
    });
    let addr = server.addr();
    // The gate is held on a thread of its own (not across this function's awaits) until
    // `release` is sent or dropped.
    let (release, released) = std::sync::mpsc::channel::<()>();
    let (closed_tx, closed) = std::sync::mpsc::channel();
    let gate_engine = engine.clone();
    let holder = std::thread::spawn(move || {
        let _closed = gate_engine.gate.lock().unwrap();
        closed_tx.send(()).unwrap();
        let _ = released.recv();
    });
    closed.recv().unwrap();
    let infer = move || post_json(addr, "/v2/models/cifar10/infer", &image_request(&image(0), 1)).status;
    let running = std::thread::spawn(infer);
    engine.wait_entered(1);
    let queued = std::thread::spawn(infer);
    let depth = |addr| metric(&String::from_utf8(get(addr, "/metrics").body).unwrap(), "cifar10_queue_depth_images");
    for _ in 0..PATIENCE.as_millis() / 10 {
        if depth(addr) >= 1.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(depth(addr) >= 1.0, "the second request never queued");

    client.goto(&format!("http://{addr}/")).await.map_err(|e| e.to_string())?;
    wait_for(client, "#card dd + dt").await;
    let (_, png) = sample_png(dir);
    upload(client, &png).await;
    let message = wait_for_text(client, "#error", "busy").await;
    assert!(message.contains("overloaded"), "the server's reason is missing: {message}");
    save_screenshot(&client.screenshot().await.map_err(|e| e.to_string())?, "page-busy.png");

    drop(release);
    holder.join().unwrap();
    assert_eq!(running.join().unwrap(), 200);
    assert_eq!(queued.join().unwrap(), 200);
    server.shutdown().map_err(|e| e.to_string())
}

/// Every control has a name, and the keyboard reaches the drop zone, then the file input.
async fn check_labels_and_keyboard(client: &Client) {
    let unnamed = client
        .execute(
            "return [...document.querySelectorAll('input, button, [role=button], [role=img], canvas')] \
               .filter(e => !((e.labels && e.labels.length ? e.labels[0].textContent : '') \
                              || e.getAttribute('aria-label') || e.getAttribute('aria-labelledby') \
                              || e.textContent).trim()) \
               .map(e => e.outerHTML.slice(0, 80));",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unnamed, json!([]), "controls without a label");
    client.execute("document.activeElement.blur(); window.focus();", vec![]).await.unwrap();
    const TAB: &str = "\u{E004}";
    let body = client.find(Locator::Css("body")).await.unwrap();
    body.send_keys(TAB).await.unwrap();
    assert_eq!(client.active_element().await.unwrap().attr("id").await.unwrap().as_deref(), Some("drop"));
    client.active_element().await.unwrap().send_keys(TAB).await.unwrap();
    assert_eq!(client.active_element().await.unwrap().attr("id").await.unwrap().as_deref(), Some("file"));
}

async fn check_model_card(client: &Client, weights: &Weights) {
    wait_for(client, "#card dd + dt").await;
    let card = text_of(client, "#card").await;
    let metadata = &weights.metadata;
    let step = metadata.step.expect("the bundled model records its step");
    let precision = metadata.precision_at_1.expect("the bundled model records its precision");
    let fingerprint = metadata.dataset_fingerprint.as_deref().expect("the bundled model records its data");
    for expected in [
        "cifar10".to_string(),
        thousands(step),
        format!("{precision:.4}"),
        fingerprint.to_string(),
        "float32".to_string(),
        "cpu".to_string(),
        "up to 64 images".to_string(),
    ] {
        assert!(card.contains(&expected), "the model card has no {expected:?}:\n{card}");
    }
}

/// `30000` as the page writes it: `30,000`.
fn thousands(n: u64) -> String {
    let digits: Vec<char> = n.to_string().chars().collect();
    let groups: Vec<String> = digits.rchunks(3).rev().map(|g| g.iter().collect()).collect();
    groups.join(",")
}

async fn check_classification(client: &Client, classifier: &Classifier, dir: &Path) {
    let (hwc, png) = sample_png(dir);
    upload(client, &png).await;
    wait_for(client, "#top5 li").await;
    let rows = client.find_all(Locator::Css("#top5 li")).await.unwrap();
    assert_eq!(rows.len(), 5, "five classes shown");

    let expected = classifier.classify_image(&std::fs::read(&png).unwrap(), "record0.png").unwrap();
    let top = &expected.top_k(1)[0];
    let shown_label = rows[0].find(Locator::Css(".label")).await.unwrap().text().await.unwrap();
    let shown_percent = rows[0].find(Locator::Css(".probability")).await.unwrap().text().await.unwrap();
    let exact: f32 = rows[0].attr("data-probability").await.unwrap().unwrap().parse().unwrap();
    assert_eq!(shown_label, top.label, "top-1 label");
    assert_eq!(shown_percent, format!("{:.1}%", 100.0 * top.probability), "top-1 probability as shown");
    assert!((exact - top.probability).abs() <= 1e-6, "top-1 probability {exact} vs the library's {}", top.probability);
    assert!(text_of(client, "#latency").await.contains(" ms"), "no latency shown");

    // The preview is the image as the model sees it: a 32×32 PNG is shown pixel for pixel.
    assert_eq!(preview_pixels(client).await, hwc, "the 32×32 preview is not the image's pixels");
}

/// The 32×32 RGB pixels the page shows, once drawn (the page clears the preview when a file
/// is chosen and draws it after decoding, alongside the request).
async fn preview_pixels(client: &Client) -> Vec<u8> {
    let script = "const c = document.getElementById('resized'); \
                  return Array.from(c.getContext('2d').getImageData(0, 0, 32, 32).data);";
    let mut rgba: Vec<u8> = Vec::new();
    for _ in 0..PATIENCE.as_millis() / 100 {
        rgba = serde_json::from_value(client.execute(script, vec![]).await.unwrap()).unwrap();
        if rgba.chunks_exact(4).any(|p| p[3] != 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rgba.chunks_exact(4).flat_map(|p| p[..3].to_vec()).collect()
}

/// A larger image is scaled in the page as the server scales it (the page redoes the
/// server's triangle filter in JavaScript; float rounding may differ by one level).
async fn check_preview_of_a_larger_image(client: &Client, dir: &Path) {
    let image = RgbImage::from_fn(97, 61, |x, y| image::Rgb([(x * 5) as u8, (y * 7 + x) as u8, ((x ^ y) * 3) as u8]));
    let path = dir.join("larger.png");
    image.save(&path).unwrap();
    upload(client, &path).await;
    wait_for_text(client, "#status", "larger.png: ").await;
    let served = infer::image_input::decode_hwc(&std::fs::read(&path).unwrap(), "larger.png").unwrap();
    let shown = preview_pixels(client).await;
    let worst = shown.iter().zip(&served).map(|(&a, &b)| a.abs_diff(b)).max().unwrap();
    assert!(worst <= 1, "the preview differs from the server's 32×32 by up to {worst} levels");
}

async fn check_phone_width(client: &Client) {
    let (width, height) = client.get_window_size().await.unwrap();
    client.set_window_size(390, 844).await.unwrap();
    let overflow = client
        .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;", vec![])
        .await
        .unwrap();
    save_screenshot(&client.screenshot().await.unwrap(), "page-phone.png");
    assert_eq!(overflow.as_i64(), Some(0), "the page scrolls sideways at phone width");
    client.set_window_size(width as u32, height as u32).await.unwrap();
}

async fn check_not_an_image(client: &Client, dir: &Path) {
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "these are notes, not a picture\n").unwrap();
    upload(client, &notes).await;
    let message = wait_for_text(client, "#error", "could not read this file as an image").await;
    assert!(message.contains("not a PNG or JPEG image"), "the server's reason is missing: {message}");
    assert!(client.find_all(Locator::Css("#top5 li")).await.unwrap().is_empty(), "stale results shown");
}

async fn check_too_large(client: &Client, dir: &Path) {
    let big = dir.join("big.png");
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(Limits::default().max_body_bytes + 1, 0);
    std::fs::write(&big, bytes).unwrap();
    upload(client, &big).await;
    wait_for_text(client, "#error", "too large").await;
}
