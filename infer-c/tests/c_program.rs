//! Builds `tests/c/classify_sample.c` with the system C compiler (`cc` on PATH) against
//! `libcifar10.a` and against `libcifar10.so`, and runs it on the in-repo sample: it must
//! get exactly the manifest's count, agree across two threads on one handle, and refuse
//! every bad input (see the C file). The static build also runs under valgrind (no errors,
//! no leaks) on the sample's first records (valgrind runs this code some 500 times slower:
//! the whole sample would take most of an hour), and `tests/c/header_compiles.cpp` checks
//! the header from C++.
//!
//! The libraries are the ones cargo built for this test run (the crate's `cdylib` and
//! `staticlib`, in this test's own folder `target/<profile>/deps`; the copies cargo puts in
//! `target/<profile>` come from `cargo build` and may be stale or unoptimised).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn repo_file(path: &str) -> PathBuf {
    crate_dir().join("..").join(path)
}

/// `target/<profile>/deps`, where this test runs from and cargo builds `libcifar10.a` and
/// `libcifar10.so` for it.
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("path of the test executable");
    let dir = exe.parent().expect("test executable in target/<profile>/deps").to_path_buf();
    for lib in ["libcifar10.a", "libcifar10.so"] {
        assert!(dir.join(lib).is_file(), "{} not found: cargo builds it with this test", dir.join(lib).display());
    }
    // A program linked against the library looks for it by its soname, as an installed
    // library is found (scripts/install-c.sh makes the same link).
    // Tests run on parallel threads: another one may make the link first.
    match std::os::unix::fs::symlink("libcifar10.so", dir.join(env!("CIFAR10_SONAME"))) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => panic!("link the soname to the library: {e}"),
        _ => dir,
    }
}

fn out_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cifar10-c-tests");
    std::fs::create_dir_all(&dir).expect("create the test build folder");
    dir
}

/// Runs `command`, failing the test with its output unless it succeeds.
fn run(command: &mut Command) -> Output {
    let output = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e} (is it installed?)"));
    let text = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "{command:?} failed ({}):\n{text}", output.status);
    println!("{text}");
    output
}

/// The bundled float model.
const MODEL: &str = "models/cifar10.safetensors";
/// The bundled int8 model (the manifest's `int8` section).
const INT8_MODEL: &str = "models/cifar10-int8.safetensors";

/// A bundled model's count of correct answers on the sample, from the manifest: `results`
/// for the float model, `int8.results` for the int8 one.
fn expected_correct(model: &str) -> u64 {
    let path = repo_file("models/cifar10.manifest.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let manifest: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    let section = if model == INT8_MODEL { &manifest["int8"] } else { &manifest };
    section["results"]["sample"]["correct"]["cpu"].as_u64().expect("results.sample.correct.cpu in the manifest")
}

/// Compiles the C test program; `link` says how to link libcifar10.
fn build_c_program(name: &str, link: &[String]) -> PathBuf {
    let exe = out_dir().join(name);
    run(Command::new("cc")
        .args(["-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Werror", "-I"])
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c/classify_sample.c"))
        .args(link)
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe));
    exe
}

fn static_link() -> Vec<String> {
    vec![library_dir().join("libcifar10.a").display().to_string()]
}

fn shared_link() -> Vec<String> {
    let dir = library_dir().display().to_string();
    vec![format!("-L{dir}"), "-lcifar10".into(), format!("-Wl,-rpath,{dir}")]
}

/// Runs the C program with `model` on the whole sample; it must get the manifest's count.
fn run_c_program_on_the_sample(exe: &Path, model: &str) {
    let expected = expected_correct(model);
    let text = run_c_program(exe, &[], model, &repo_file("data/sample/test_batch.bin"), &expected.to_string());
    assert!(text.contains(&format!("correct: {expected}/1000")), "{text}");
}

/// Runs the C program (under `wrapper`, if any) and checks that all its checks passed.
fn run_c_program(exe: &Path, wrapper: &[&str], model: &str, sample: &Path, expected: &str) -> String {
    let (program, args) = match wrapper.split_first() {
        Some((first, rest)) => (first.to_string(), [rest, &[exe.to_str().expect("UTF-8 path")]].concat()),
        None => (exe.display().to_string(), vec![]),
    };
    let output = run(Command::new(program).args(args).arg(repo_file(model)).arg(sample).arg(expected));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(text.contains("all checks passed"), "{text}");
    text
}

#[test]
fn c_program_linked_statically_gets_the_manifest_count() {
    let exe = build_c_program("classify_sample_static", &static_link());
    run_c_program_on_the_sample(&exe, MODEL);
}

/// The same program, unchanged, opens the int8 model: the library reads the variant from the file.
#[test]
fn c_program_on_the_int8_model_gets_its_manifest_count() {
    let exe = build_c_program("classify_sample_int8", &static_link());
    run_c_program_on_the_sample(&exe, INT8_MODEL);
}

#[test]
fn c_program_linked_dynamically_gets_the_manifest_count() {
    let exe = build_c_program("classify_sample_shared", &shared_link());
    let ldd = run(Command::new("ldd").arg(&exe));
    assert!(String::from_utf8_lossy(&ldd.stdout).contains("libcifar10.so"), "not linked to libcifar10.so");
    run_c_program_on_the_sample(&exe, MODEL);
}

/// Records of the sample the valgrind run classifies.
const VALGRIND_RECORDS: usize = 8;

#[test]
fn c_program_under_valgrind_has_no_errors_and_no_leaks() {
    let exe = build_c_program("classify_sample_valgrind", &static_link());
    let log = out_dir().join("valgrind.log");
    let log_arg = format!("--log-file={}", log.display());
    let suppressions = format!("--suppressions={}", crate_dir().join("tests/c/valgrind.supp").display());
    let sample = std::fs::read(repo_file("data/sample/test_batch.bin")).expect("the sample");
    let prefix = out_dir().join("sample_prefix.bin");
    std::fs::write(&prefix, &sample[..VALGRIND_RECORDS * 3073]).expect("write the sample's first records");
    let text = run_c_program(
        &exe,
        &[
            "valgrind",
            "--leak-check=full",
            "--show-leak-kinds=definite,indirect,possible",
            "--errors-for-leak-kinds=definite,indirect,possible",
            "--error-exitcode=1",
            &suppressions,
            &log_arg,
        ],
        MODEL,
        &prefix,
        "-",
    );
    assert!(text.contains(&format!("/{VALGRIND_RECORDS} (expected -)")), "{text}");
    let report = std::fs::read_to_string(&log).expect("valgrind log");
    assert!(report.contains("ERROR SUMMARY: 0 errors"), "valgrind found errors:\n{report}");
    for kind in ["definitely lost", "indirectly lost", "possibly lost"] {
        let leaked = report.lines().any(|l| l.contains(kind) && !l.contains(&format!("{kind}: 0 bytes")));
        assert!(!leaked, "valgrind: memory {kind}:\n{report}");
    }
}

#[test]
fn cpp_program_includes_the_header_and_calls_the_library() {
    let exe = out_dir().join("header_compiles");
    run(Command::new("c++")
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", "-I"])
        .arg(crate_dir().join("include"))
        .arg(crate_dir().join("tests/c/header_compiles.cpp"))
        .args(static_link())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(&exe));
    let output = run(Command::new(&exe).arg(repo_file("models/cifar10.safetensors")));
    assert!(String::from_utf8_lossy(&output.stdout).contains("a grey image is a"));
}

#[test]
fn shared_library_exports_only_cifar10_symbols() {
    let output = run(Command::new("nm").args(["-D", "--defined-only"]).arg(library_dir().join("libcifar10.so")));
    let symbols: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().nth(2).map(str::to_string))
        .collect();
    assert!(symbols.iter().any(|s| s == "cifar10_classify"), "{symbols:?}");
    let foreign: Vec<&String> = symbols.iter().filter(|s| !s.starts_with("cifar10_")).collect();
    assert!(foreign.is_empty(), "libcifar10.so exports symbols without the cifar10_ prefix: {foreign:?}");
}
