//! The dependency rules of the design, checked on the real manifests:
//! - `infer`, the embeddable engine, can never pull an HTTP stack, a CLI parser, a progress
//!   bar, a TLS stack or a native library, with any combination of its features;
//! - its edge build (`--no-default-features`) depends on model-format and ndarray alone;
//! - every dependency of every crate is used: a normal or build dependency is named in code
//!   that runs outside tests (`src/`, `build.rs`), a dev-dependency in the package's code.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

/// The platform this test was built for (set by the root `build.rs`).
const BUILD_TARGET: &str = env!("CIFAR10_BUILD_TARGET");

/// Cargo, run offline in the workspace with a cargo home that holds only what a build on
/// this platform downloads (see [`build_only_cargo_home`]). Every cargo call in this file goes
/// through here, so a call that needs more than a fresh machine has (such as `cargo metadata`
/// without `--filter-platform`, which wants the manifests of Windows-only crates) fails here
/// on every machine, not only on a machine whose cache happens to lack them.
fn cargo() -> Command {
    let mut command = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    command.current_dir(env!("CARGO_MANIFEST_DIR")).env("CARGO_HOME", build_only_cargo_home()).arg("--offline");
    command
}

/// The user's cargo home, where the build's downloads are.
fn user_cargo_home() -> PathBuf {
    match std::env::var_os("CARGO_HOME") {
        Some(home) => PathBuf::from(home),
        None => PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cargo"),
    }
}

/// The registry packages (`name-version`) that a build of the whole workspace, every feature
/// on, resolves for this platform: what `cargo test --workspace --all-features` downloads.
fn packages_built_here() -> BTreeSet<String> {
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["metadata", "--offline", "--locked", "--all-features", "--format-version", "1"])
        .args(["--filter-platform", BUILD_TARGET])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    meta["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["source"].as_str().is_some_and(|s| s.starts_with("registry+")))
        .map(|p| format!("{}-{}", p["name"].as_str().unwrap(), p["version"].as_str().unwrap()))
        .collect()
}

/// A cargo home made of the user's registry index and, of the downloaded crates, only those
/// in [`packages_built_here`] (links, nothing copied): the cache of a machine that has built
/// this workspace once and nothing else. Made once per test process under cargo's scratch
/// folder for tests (`target/tmp`).
fn build_only_cargo_home() -> &'static Path {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let user = user_cargo_home();
        let home = Path::new(env!("CARGO_TARGET_TMPDIR")).join("build-only-cargo-home");
        let _ = std::fs::remove_dir_all(&home);
        let keep = packages_built_here();
        for registry in read_dir_names(&user.join("registry/index")) {
            let index = home.join("registry/index");
            std::fs::create_dir_all(&index).unwrap();
            std::os::unix::fs::symlink(user.join("registry/index").join(&registry), index.join(&registry)).unwrap();
            for (folder, suffix) in [("cache", ".crate"), ("src", "")] {
                let from = user.join("registry").join(folder).join(&registry);
                let to = home.join("registry").join(folder).join(&registry);
                std::fs::create_dir_all(&to).unwrap();
                for name in read_dir_names(&from) {
                    if keep.contains(name.strip_suffix(suffix).unwrap_or(&name)) {
                        std::os::unix::fs::symlink(from.join(&name), to.join(&name)).unwrap();
                    }
                }
            }
        }
        for config in ["config.toml", "config"] {
            if user.join(config).exists() {
                std::fs::copy(user.join(config), home.join(config)).unwrap();
            }
        }
        home
    })
}

fn read_dir_names(dir: &Path) -> Vec<String> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect(),
        Err(_) => Vec::new(),
    }
}

/// Package names in `infer`'s dependency tree (normal edges) with the given feature flags.
fn tree(package: &str, flags: &[&str], depth: Option<usize>) -> BTreeSet<String> {
    let mut command = cargo();
    command.args(["tree", "-p", package, "-e", "normal", "--prefix", "none", "--format", "{p}"]);
    if let Some(depth) = depth {
        command.args(["--depth", &depth.to_string()]);
    }
    let out = command.args(flags).output().expect("cargo tree runs");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let names = text.lines().filter_map(|l| l.split_whitespace().next().map(String::from));
    names.collect()
}

/// Crates no feature of the engine may bring in (`ort-sys` is allowed: with `load-dynamic`
/// it only declares ONNX Runtime's C API, which is opened at run time).
const FORBIDDEN_IN_INFER: [&str; 15] = [
    "axum",
    "hyper",
    "tokio",
    "h2",
    "argh",
    "clap",
    "indicatif",
    "ureq",
    "rustls",
    "ring",
    "openssl-sys",
    "native-tls",
    "torch-sys",
    "tch",
    "cc",
];

#[test]
fn no_feature_of_the_engine_pulls_a_server_a_cli_a_progress_bar_or_tls() {
    for flags in [&["--no-default-features"][..], &[], &["--all-features"]] {
        let all = tree("cifar10-infer", flags, None);
        for forbidden in FORBIDDEN_IN_INFER {
            assert!(!all.contains(forbidden), "infer {flags:?} pulls {forbidden}");
        }
    }
}

#[test]
fn the_edge_build_depends_on_the_contract_and_ndarray_only() {
    let direct: Vec<String> = tree("cifar10-infer", &["--no-default-features"], Some(1)).into_iter().collect();
    assert_eq!(direct, ["cifar10-infer", "model-format", "ndarray"]);
    let with_defaults: Vec<String> = tree("cifar10-infer", &[], Some(1)).into_iter().collect();
    assert_eq!(with_defaults, ["cifar10-infer", "image", "model-format", "ndarray"]);
}

#[test]
fn model_format_stays_lean() {
    let direct: Vec<String> = tree("model-format", &[], Some(1)).into_iter().collect();
    // libc: the O_NOFOLLOW flag of the crash-safe writer's temporary files (its value differs
    // between architectures, so it is not written out by hand).
    assert_eq!(direct, ["libc", "model-format", "safetensors", "serde_json"]);
}

/// One declared dependency of a workspace package.
struct Declared {
    package: String,
    /// The name code uses for it (`use NAME::…`): the rename, else the library's name.
    code_name: String,
    /// The native library it `links`, whose build facts a build script reads as `DEP_<LINKS>_*`.
    links: Option<String>,
    kind: String,
}

/// Every dependency declared by a workspace member, with the name code refers to it by.
fn declared_dependencies() -> (Vec<Declared>, Vec<(String, PathBuf)>) {
    let out = cargo()
        .args(["metadata", "--locked", "--all-features", "--format-version", "1", "--filter-platform", BUILD_TARGET])
        .output()
        .expect("cargo metadata runs");
    assert!(out.status.success(), "cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    let meta: Value = serde_json::from_slice(&out.stdout).unwrap();
    let packages = meta["packages"].as_array().unwrap();
    let members: BTreeSet<&str> =
        meta["workspace_members"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let links = |name: &str| -> Option<String> {
        let package = packages.iter().find(|p| p["name"] == name)?;
        package["links"].as_str().map(|l| l.to_uppercase().replace('-', "_"))
    };
    let lib_name = |name: &str| -> String {
        packages
            .iter()
            .filter(|p| p["name"] == name)
            .flat_map(|p| p["targets"].as_array().unwrap())
            .find(|t| t["kind"].as_array().unwrap().iter().any(|k| k == "lib" || k == "proc-macro" || k == "rlib"))
            .and_then(|t| t["name"].as_str())
            .unwrap_or(name)
            .replace('-', "_")
    };
    let mut declared = Vec::new();
    let mut roots = Vec::new();
    for package in packages.iter().filter(|p| members.contains(p["id"].as_str().unwrap())) {
        let name = package["name"].as_str().unwrap().to_string();
        let dir = Path::new(package["manifest_path"].as_str().unwrap()).parent().unwrap().to_path_buf();
        roots.push((name.clone(), dir));
        for dep in package["dependencies"].as_array().unwrap() {
            let code_name = match dep["rename"].as_str() {
                Some(rename) => rename.replace('-', "_"),
                None => lib_name(dep["name"].as_str().unwrap()),
            };
            let kind = dep["kind"].as_str().unwrap_or("normal").to_string();
            let links = links(dep["name"].as_str().unwrap());
            declared.push(Declared { package: name.clone(), code_name, links, kind });
        }
    }
    (declared, roots)
}

/// The Rust files of a package: `(path, is it code that runs outside tests)`. The root
/// package's `tests/`, `benches/` and `examples/` are its tests; another member's folders are
/// skipped here, since they are packages of their own.
fn rust_files(dir: &Path, member_dirs: &[PathBuf]) -> Vec<(PathBuf, bool)> {
    fn walk(dir: &Path, skip: &[PathBuf], out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                let hidden = name.to_string_lossy().starts_with('.') || name == "target";
                if !hidden && !skip.contains(&path) {
                    walk(&path, skip, out);
                }
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let others: Vec<PathBuf> = member_dirs.iter().filter(|d| d.as_path() != dir).cloned().collect();
    let mut files = Vec::new();
    walk(dir, &others, &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(dir).unwrap();
            let runs = relative.starts_with("src") || relative == Path::new("build.rs");
            (path, runs)
        })
        .collect()
}

/// Whether `text` names the crate `name` as a path root (`name::`, `use name`, `extern crate name`).
fn names_crate(text: &str, name: &str) -> bool {
    let bytes = text.as_bytes();
    text.match_indices(name).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = &text[at + name.len()..];
        let starts_word = before.is_none_or(|b| !(b.is_ascii_alphanumeric() || b == b'_'));
        starts_word && (after.starts_with("::") || after.starts_with(';') || after.starts_with(" as "))
    })
}

#[test]
fn every_dependency_is_used() {
    let (declared, roots) = declared_dependencies();
    let member_dirs: Vec<PathBuf> = roots.iter().map(|(_, dir)| dir.clone()).collect();
    let mut unused = Vec::new();
    for (package, dir) in &roots {
        let files: Vec<(String, bool)> = rust_files(dir, &member_dirs)
            .into_iter()
            .map(|(path, runs)| {
                let text = std::fs::read_to_string(&path).unwrap();
                // The code (not the comments) of src files compiled only for tests counts as tests.
                let runs = runs && !text.starts_with("#![cfg(test)]");
                (text, runs)
            })
            .collect();
        for dep in declared.iter().filter(|d| &d.package == package) {
            let used = files.iter().any(|(text, runs)| {
                let read_by_build_script =
                    dep.links.as_ref().is_some_and(|links| text.contains(&format!("DEP_{links}_")));
                (*runs || dep.kind == "dev") && (names_crate(text, &dep.code_name) || read_by_build_script)
            });
            if !used {
                unused.push(format!("{package}: {} dependency `{}`", dep.kind, dep.code_name));
            }
        }
    }
    assert!(unused.is_empty(), "declared but never used outside tests:\n{}", unused.join("\n"));
}

#[test]
fn the_unused_dependency_check_finds_an_unused_name() {
    assert!(names_crate("use ndarray::Array2;", "ndarray"));
    assert!(names_crate("let x = md5::Md5::new();", "md5"));
    assert!(!names_crate("// the ndarray crate", "ndarray"));
    assert!(!names_crate("use my_ndarray::X;", "ndarray"));
    assert!(!names_crate("ndarray_engine::run()", "ndarray"));
}

#[test]
fn the_build_only_cargo_home_refuses_what_a_fresh_machine_cannot_do() {
    // The lock file names crates for other platforms (windows-sys and the like): asking for the
    // whole graph needs their manifests, which a build here never downloads.
    let out = cargo().args(["metadata", "--locked", "--all-features", "--format-version", "1"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "cargo metadata for every platform worked from a build-only cache");
    assert!(stderr.contains("--offline"), "unexpected failure: {stderr}");
}

/// Every `.rs` file of the workspace outside `target/` and hidden folders.
fn workspace_rust_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    rust_files(root, &[]).into_iter().map(|(path, _)| path).collect()
}

#[test]
fn no_other_test_runs_cargo() {
    // Other tests would run cargo with the user's own cache, the mistake this file guards against.
    let this_file = Path::new(env!("CARGO_MANIFEST_DIR")).join(file!());
    let spawns_cargo = ["var(\"CARGO\")", "Command::new(\"cargo\")", "env!(\"CARGO\")"];
    let offenders: Vec<String> = workspace_rust_files()
        .into_iter()
        .filter(|path| *path != this_file)
        .filter(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            spawns_cargo.iter().any(|pattern| text.contains(pattern))
        })
        .map(|path| path.display().to_string())
        .collect();
    assert!(offenders.is_empty(), "these files run cargo; move the call into tests/dependencies.rs: {offenders:?}");
}
