//! Every output flag of every command is refused, before any work, when it names any input
//! of that command (model, data files, the image classified), however it is spelt: the path
//! itself, through `sub/..`, a hard link or a symbolic link. The inputs stay as they were.

use std::path::{Path, PathBuf};
use std::process::Command;

fn cifar10() -> Command {
    Command::new(env!("CARGO_BIN_EXE_cifar10"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// A data folder with every file a command reads (twenty records stand in for each
/// training file), a float model and a PNG image.
struct Fixture {
    dir: PathBuf,
    data: PathBuf,
    model: PathBuf,
    image: PathBuf,
}

impl Fixture {
    fn new(tag: &str) -> Fixture {
        let dir = std::env::temp_dir().join(format!("cifar10-outputs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let data = dir.join("data");
        std::fs::create_dir_all(data.join("sub")).unwrap();
        let sample = std::fs::read(repo("data/sample/test_batch.bin")).unwrap();
        for name in model_format::cifar::TRAIN_FILES {
            std::fs::write(data.join(name), &sample[..20 * 3073]).unwrap();
        }
        std::fs::write(data.join("test_batch.bin"), &sample).unwrap();
        std::fs::copy(repo("data/sample/batches.meta.txt"), data.join("batches.meta.txt")).unwrap();
        let model = dir.join("model.safetensors");
        infer::random_weights(5).save(&model).unwrap();
        let image = dir.join("cat.png");
        image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, 99])).save(&image).unwrap();
        Fixture { dir, data, model, image }
    }

    /// Every output flag of every command, with every input that command reads.
    fn commands(&self) -> Vec<(&'static str, Vec<PathBuf>, Vec<PathBuf>)> {
        let data_files: Vec<PathBuf> =
            std::fs::read_dir(&self.data).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_file()).collect();
        let with_data = |mut inputs: Vec<PathBuf>| {
            inputs.extend(data_files.iter().cloned());
            inputs
        };
        let d = |flag: &str, path: &Path| vec![PathBuf::from(flag), path.to_path_buf()];
        vec![
            (
                "--plot",
                [d("eval", Path::new("")), d("--model", &self.model), d("--data-dir", &self.data)].concat(),
                with_data(vec![self.model.clone()]),
            ),
            (
                "--plot",
                [d("classify", Path::new("")), d("--model", &self.model), vec![self.image.clone()]].concat(),
                vec![self.model.clone(), self.image.clone()],
            ),
            (
                "--out",
                [
                    d("quantize", Path::new("")),
                    d("--model", &self.model),
                    d("--data-dir", &self.data),
                    d("--calibration-images", Path::new("20")),
                ]
                .concat(),
                with_data(vec![self.model.clone()]),
            ),
            ("--out", [d("export-onnx", Path::new("")), d("--model", &self.model)].concat(), vec![self.model.clone()]),
        ]
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `path` spelt four ways: itself, through `sub/..`, a hard link and a symbolic link (the
/// links named `.png`, so that `--plot`'s name check is not what refuses them).
fn spellings(fixture: &Fixture, path: &Path, n: usize) -> Vec<PathBuf> {
    let name = path.file_name().unwrap();
    let through_sub = path.parent().unwrap().join("sub").join("..").join(name);
    let hard = fixture.dir.join(format!("hard-{n}.png"));
    std::fs::hard_link(path, &hard).unwrap();
    let soft = fixture.dir.join(format!("soft-{n}.png"));
    std::os::unix::fs::symlink(path, &soft).unwrap();
    vec![path.to_path_buf(), through_sub, hard, soft]
}

#[test]
fn every_output_flag_refuses_every_input_of_its_command_through_links_too() {
    let fixture = Fixture::new("every");
    std::fs::create_dir_all(fixture.model.parent().unwrap().join("sub")).unwrap();
    let mut n = 0;
    let mut tried = 0;
    for (flag, args, inputs) in fixture.commands() {
        // The first word is the command; the empty path after it is dropped.
        let args: Vec<&PathBuf> = args.iter().filter(|a| !a.as_os_str().is_empty()).collect();
        for input in &inputs {
            let before = std::fs::read(input).unwrap();
            for output in spellings(&fixture, input, n) {
                n += 1;
                let run = cifar10().args(&args).arg(flag).arg(&output).output().unwrap();
                let stderr = String::from_utf8_lossy(&run.stderr);
                let what = format!("{} {flag} {}", args[0].display(), output.display());
                assert!(!run.status.success(), "{what} succeeded");
                assert!(stderr.contains(flag), "{what}: the error does not name {flag}: {stderr}");
                assert!(
                    stderr.contains("is the same file as the input") || stderr.contains("is a symbolic link"),
                    "{what}: {stderr}"
                );
                assert!(
                    run.stdout.is_empty(),
                    "{what} worked before refusing: {}",
                    String::from_utf8_lossy(&run.stdout)
                );
                assert_eq!(std::fs::read(input).unwrap(), before, "{what} changed {}", input.display());
                tried += 1;
            }
        }
    }
    // 4 commands; eval and quantize read the model and 7 data files.
    assert_eq!(tried, 4 * (8 + 2 + 8 + 1));
}

#[test]
fn classify_plot_over_the_image_it_classifies_is_refused() {
    let fixture = Fixture::new("image");
    let before = std::fs::read(&fixture.image).unwrap();
    let run = cifar10()
        .args(["classify", "--model"])
        .arg(&fixture.model)
        .arg("--plot")
        .arg(&fixture.image)
        .arg(&fixture.image)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!run.status.success());
    assert!(
        stderr.contains(&format!(
            "--plot {0}: is the same file as the input {0}: writing it would destroy the input",
            fixture.image.display()
        )),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&fixture.image).unwrap(), before);
}

#[test]
fn thread_counts_over_the_bound_and_fifo_images_are_refused_at_once() {
    let fixture = Fixture::new("limits");
    let started = std::time::Instant::now();
    let eval = cifar10()
        .args(["eval", "--threads", "3000", "--model"])
        .arg(&fixture.model)
        .arg("--data-dir")
        .arg(&fixture.data)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&eval.stderr).contains("--threads is 3000, expected 1 to 256"), "{eval:?}");
    let classify = cifar10()
        .args(["classify", "--threads", "0", "--model"])
        .arg(&fixture.model)
        .arg(&fixture.image)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&classify.stderr).contains("--threads is 0, expected 1 to 256"), "{classify:?}");
    let serve =
        cifar10().args(["serve", "--workers", "64", "--threads", "8", "--model"]).arg(&fixture.model).output().unwrap();
    let stderr = String::from_utf8_lossy(&serve.stderr);
    assert!(
        stderr.contains("--workers 64 × --threads 8 is 512 engine threads, more than the limit of 256"),
        "{stderr}"
    );
    let name = cifar10().args(["serve", "--name", "a/b", "--model"]).arg(&fixture.model).output().unwrap();
    assert!(String::from_utf8_lossy(&name.stderr).contains("--name \"a/b\""), "{name:?}");
    // A FIFO named like an image is refused without waiting for a writer.
    let fifo = fixture.dir.join("fifo.png");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let mut child = cifar10()
        .args(["classify", "--model"])
        .arg(&fixture.model)
        .arg(&fifo)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("classify blocked on a FIFO");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    assert!(String::from_utf8_lossy(&output.stderr).contains("is a FIFO, not a regular file"), "{output:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}
