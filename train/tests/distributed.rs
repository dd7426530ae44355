//! Data-parallel training across processes through libtorch's c10d (Gloo on the CPU, over
//! loopback), with the real `cifar10-train` binary: 2 processes × 1 tower make exactly the
//! updates of 1 process × 2 towers (launched by hand and by the project's `torchrun`), a
//! 2-process run resumes bit for bit, a killed rank stops the survivor within 60 s naming
//! it, and a wrong master address or a port in use is an error within the timeout.
mod support;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::sample_data_dir;
use train::checkpoint::{self, Checkpoint};

const BIN: &str = env!("CARGO_BIN_EXE_cifar10-train");
/// Steps of the equivalence runs (the 50), checkpointed every 10 to compare
/// the weights along the way, not only at the end.
const STEPS: &str = "50";

/// A scratch folder for one test, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nobody listens on now (the kernel's pick for port 0).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The training flags shared by every run here: CPU, batch 64 per tower, one intra-op
/// thread per tower on both sides (the gradients depend on the thread count).
fn train_args(data: &Path, train_dir: &Path, max_steps: &str) -> Vec<String> {
    let mut args: Vec<String> =
        ["train", "--devices", "cpu", "--batch-size", "64", "--threads", "1"].into_iter().map(String::from).collect();
    args.extend(["--data-dir".into(), data.display().to_string()]);
    args.extend(["--train-dir".into(), train_dir.display().to_string()]);
    args.extend(
        ["--max-steps", max_steps, "--log-frequency", "5", "--summary-every", "0", "--checkpoint-every", "10"]
            .map(String::from),
    );
    args.extend(["--keep-checkpoints", "10", "--dist-timeout", "20"].map(String::from));
    args
}

/// Rank `rank` of `world` with the launcher variables set, as a SLURM script would.
fn spawn_rank(rank: usize, world: usize, port: u16, args: &[String]) -> Child {
    Command::new(BIN)
        .args(args)
        .env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env_remove("TORCHELASTIC_USE_AGENT_STORE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr))
}

/// Runs ranks 0..world of one job to the end; their outputs, rank order.
fn run_ranks(world: usize, args: &[String]) -> Vec<Output> {
    let port = free_port();
    let children: Vec<Child> = (0..world).map(|rank| spawn_rank(rank, world, port, args)).collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn alone(args: &[String]) -> Output {
    Command::new(BIN).args(args).env_remove("WORLD_SIZE").env_remove("RANK").output().unwrap()
}

/// The `loss = x.xx` values of the log lines, in order.
fn losses(text: &str) -> Vec<String> {
    text.lines().filter_map(|l| l.split("loss = ").nth(1)).map(|l| l.split(' ').next().unwrap().to_string()).collect()
}

/// Every checkpoint in `dir`, step order.
fn checkpoints(dir: &Path) -> Vec<Checkpoint> {
    checkpoint::list(dir).unwrap().into_iter().map(|(_, path)| Checkpoint::load(&path).unwrap()).collect()
}

/// The same weights and averages, bit for bit, at the same steps.
fn assert_same_weights(a: &[Checkpoint], b: &[Checkpoint]) {
    assert_eq!(a.iter().map(|c| c.step).collect::<Vec<_>>(), b.iter().map(|c| c.step).collect::<Vec<_>>());
    for (x, y) in a.iter().zip(b) {
        assert!(x.raw == y.raw, "raw weights differ at step {}", x.step);
        assert!(x.ema == y.ema, "moving averages differ at step {}", x.step);
    }
}

#[test]
fn two_processes_of_one_tower_train_like_one_process_of_two_towers_by_hand_and_under_torchrun() {
    let scratch = Scratch::new("equal");
    let data = sample_data_dir(&scratch.0);

    let one_dir = scratch.0.join("one-process");
    let mut args = train_args(&data, &one_dir, STEPS);
    args.extend(["--towers".into(), "2".into()]);
    let one = alone(&args);
    assert!(one.status.success(), "{}", text(&one));
    let reference = checkpoints(&one_dir);
    assert_eq!(reference.len(), 5, "checkpoints at 10..50");
    assert_eq!(reference[0].schedule.world_size, 1);

    let two_dir = scratch.0.join("two-processes");
    let outputs = run_ranks(2, &train_args(&data, &two_dir, STEPS));
    for (rank, out) in outputs.iter().enumerate() {
        assert!(out.status.success(), "rank {rank}: {}", text(out));
    }
    let (chief, other) = (text(&outputs[0]), text(&outputs[1]));
    assert!(chief.contains("rank 0 of 2: joined the Gloo group") && chief.contains("2 towers in all"), "{chief}");
    assert!(chief.contains("all-reduce: "), "{chief}");
    assert_eq!(losses(&chief), losses(&text(&one)), "the logged losses");
    assert_eq!(losses(&chief).len(), 10);
    assert!(losses(&other).is_empty(), "only rank 0 logs: {other}");
    let two = checkpoints(&two_dir);
    assert_same_weights(&reference, &two);
    assert_eq!((two[0].schedule.world_size, two[0].schedule.towers), (2, 1));

    // The real launcher: torchrun (`python -m torch.distributed.run`, its entry point, from
    // the project's venv); its agent serves the store (TORCHELASTIC_USE_AGENT_STORE).
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(python.exists(), "{} is missing: run scripts/setup.sh", python.display());
    let launched_dir = scratch.0.join("torchrun");
    let port = free_port().to_string();
    let out = Command::new(&python)
        .args([
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc-per-node",
            "2",
            "--master-addr",
            "127.0.0.1",
            "--master-port",
            &port,
        ])
        .args(["--no-python", BIN])
        .args(train_args(&data, &launched_dir, STEPS))
        .env_remove("WORLD_SIZE")
        .env_remove("RANK")
        .output()
        .unwrap();
    assert!(out.status.success(), "torchrun: {}", text(&out));
    assert!(text(&out).contains("rank 1 of 2: joined the Gloo group"), "{}", text(&out));
    assert_same_weights(&reference, &checkpoints(&launched_dir));
}

#[test]
fn a_two_process_run_resumes_bit_for_bit_and_refuses_another_world_size() {
    let scratch = Scratch::new("resume");
    let data = sample_data_dir(&scratch.0);
    let straight_dir = scratch.0.join("straight");
    for out in run_ranks(2, &train_args(&data, &straight_dir, "30")) {
        assert!(out.status.success(), "{}", text(&out));
    }
    let split_dir = scratch.0.join("split");
    for out in run_ranks(2, &train_args(&data, &split_dir, "15")) {
        assert!(out.status.success(), "{}", text(&out));
    }
    let mut resume = train_args(&data, &split_dir, "30");
    resume.push("--resume".into());
    // Alone, the checkpoint's world size is refused by name, before any step.
    let refused = alone(&resume);
    assert!(!refused.status.success());
    assert!(text(&refused).contains("WORLD_SIZE 2 in the checkpoint, 1 in this run"), "{}", text(&refused));
    for out in run_ranks(2, &resume) {
        assert!(out.status.success(), "{}", text(&out));
    }
    let (a, b) = (checkpoints(&straight_dir), checkpoints(&split_dir));
    assert_eq!(a.last().unwrap().step, 30);
    // The split run also holds its step-15 end checkpoint; compare the steps both have.
    let b: Vec<Checkpoint> = b.into_iter().filter(|c| c.step.is_multiple_of(10)).collect();
    assert_same_weights(&a, &b);
}

#[test]
fn a_killed_rank_stops_the_survivor_within_60_s_naming_it_and_the_checkpoint_loads() {
    let scratch = Scratch::new("kill");
    let data = sample_data_dir(&scratch.0);
    let dir = scratch.0.join("run");
    let args = train_args(&data, &dir, "100000");
    let port = free_port();
    let mut chief = spawn_rank(0, 2, port, &args);
    let mut victim = spawn_rank(1, 2, port, &args);
    let start = Instant::now();
    while checkpoint::latest(&dir).ok().flatten().is_none() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        assert!(chief.try_wait().unwrap().is_none(), "rank 0 ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    victim.kill().unwrap(); // SIGKILL
    let _ = victim.wait();
    let killed = Instant::now();
    let status = loop {
        if let Some(status) = chief.try_wait().unwrap() {
            break status;
        }
        if killed.elapsed() > Duration::from_secs(60) {
            let _ = chief.kill();
            panic!("rank 0 still runs 60 s after rank 1 was killed");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = chief.wait_with_output().unwrap();
    assert!(!status.success(), "{}", text(&out));
    let log = text(&out);
    assert!(log.contains("rank 0: all-reduce failed: lost rank 1"), "{log}");
    let last = checkpoint::latest(&dir).unwrap().unwrap();
    let ckpt = Checkpoint::load(&last).unwrap();
    assert!(ckpt.step >= 10 && ckpt.step.is_multiple_of(10), "step {}", ckpt.step);
}

#[test]
fn a_wrong_master_address_or_a_port_in_use_is_an_error_within_the_timeout() {
    let scratch = Scratch::new("rendezvous");
    let data = sample_data_dir(&scratch.0);
    let mut args = train_args(&data, &scratch.0.join("run"), "5");
    let timeout = args.iter().position(|a| a == "--dist-timeout").unwrap();
    args[timeout + 1] = "5".into();
    // Rank 1 looking for a store where none is (a TEST-NET address, RFC 5737).
    let start = Instant::now();
    let out = Command::new(BIN)
        .args(&args)
        .args(["--rank", "1", "--world-size", "2", "--master-addr", "192.0.2.1", "--master-port", "29511"])
        .output()
        .unwrap();
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    assert!(!out.status.success());
    let log = text(&out);
    assert!(
        log.contains(
            "rank 1: could not join the rendezvous store at 192.0.2.1:29511 (MASTER_ADDR:MASTER_PORT) within 5 s"
        ),
        "{log}"
    );
    // Rank 0 cannot serve the store on a port another program holds.
    let holder = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let start = Instant::now();
    let out = spawn_rank(0, 2, port, &args).wait_with_output().unwrap();
    assert!(start.elapsed() < Duration::from_secs(30), "{:?}", start.elapsed());
    assert!(!out.status.success());
    let log = text(&out);
    assert!(log.contains(&format!("rank 0: could not serve the rendezvous store at 127.0.0.1:{port}")), "{log}");
    // Bad launcher values are refused by name with the valid range.
    let out = Command::new(BIN).args(&args).env("WORLD_SIZE", "2").env("RANK", "2").output().unwrap();
    assert!(text(&out).contains("--rank / RANK 2 is outside the valid range 0 to 1"), "{}", text(&out));
    assert!(!scratch.0.join("run").exists(), "a refused run wrote its train dir");
}

/// Two network namespaces joined by a veth pair: two hosts on one machine. Made by the test
/// (root and `ip` needed), removed at the end whatever happens.
struct TwoHosts {
    names: [String; 2],
    addrs: [&'static str; 2],
    ifaces: [String; 2],
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("`ip` (iproute2) runs; the test needs root");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), text(&out));
}

impl TwoHosts {
    fn new() -> TwoHosts {
        let id = std::process::id() % 100_000;
        let names = [format!("c10d-a-{id}"), format!("c10d-b-{id}")];
        let ifaces = [format!("vc{id}a"), format!("vc{id}b")];
        let hosts = TwoHosts { names, addrs: ["10.231.7.1", "10.231.7.2"], ifaces };
        for ns in &hosts.names {
            ip(&["netns", "add", ns]);
        }
        ip(&["link", "add", &hosts.ifaces[0], "type", "veth", "peer", "name", &hosts.ifaces[1]]);
        for i in 0..2 {
            let (ns, iface) = (hosts.names[i].as_str(), hosts.ifaces[i].as_str());
            ip(&["link", "set", iface, "netns", ns]);
            ip(&["-n", ns, "addr", "add", &format!("{}/30", hosts.addrs[i]), "dev", iface]);
            ip(&["-n", ns, "link", "set", iface, "up"]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        hosts
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth pair, and so the pair.
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
    }
}

#[test]
fn two_hosts_joined_by_a_veth_pair_train_like_one_process_of_two_towers() {
    let scratch = Scratch::new("netns");
    let data = sample_data_dir(&scratch.0);
    let one_dir = scratch.0.join("one-process");
    let mut args = train_args(&data, &one_dir, "20");
    args.extend(["--towers".into(), "2".into()]);
    let one = alone(&args);
    assert!(one.status.success(), "{}", text(&one));

    let hosts = TwoHosts::new();
    let two_dir = scratch.0.join("two-hosts");
    let args = train_args(&data, &two_dir, "20");
    let children: Vec<Child> = (0..2)
        .map(|rank| {
            Command::new("ip")
                .args(["netns", "exec", &hosts.names[rank], BIN])
                .args(&args)
                .env("RANK", rank.to_string())
                .env("WORLD_SIZE", "2")
                .env("LOCAL_RANK", "0")
                .env("MASTER_ADDR", hosts.addrs[0])
                .env("MASTER_PORT", "29517")
                .env("GLOO_SOCKET_IFNAME", &hosts.ifaces[rank])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (rank, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "rank {rank}: {}", text(&out));
        if rank == 0 {
            assert!(text(&out).contains("joined the Gloo group through 10.231.7.1:29517"), "{}", text(&out));
        }
    }
    assert_same_weights(&checkpoints(&one_dir), &checkpoints(&two_dir));
    drop(hosts);
}

/// The step number of the `stopped at step N` line.
fn stopped_at(log: &str) -> u64 {
    let line = log.lines().find(|l| l.starts_with("stopped at step ")).unwrap_or_else(|| panic!("no stop line: {log}"));
    line["stopped at step ".len()..].split(':').next().unwrap().parse().unwrap()
}

#[test]
fn ctrl_c_on_one_rank_stops_every_rank_after_the_same_step_with_a_checkpoint() {
    let scratch = Scratch::new("interrupt");
    let data = sample_data_dir(&scratch.0);
    let dir = scratch.0.join("run");
    let args = train_args(&data, &dir, "100000");
    let port = free_port();
    let chief = spawn_rank(0, 2, port, &args);
    let other = spawn_rank(1, 2, port, &args);
    let start = Instant::now();
    while checkpoint::latest(&dir).ok().flatten().is_none() {
        assert!(start.elapsed() < Duration::from_secs(120), "no checkpoint after 2 minutes");
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = Command::new("kill").args(["-INT", &other.id().to_string()]).status().unwrap();
    assert!(status.success());
    let (chief, other) = (chief.wait_with_output().unwrap(), other.wait_with_output().unwrap());
    assert!(chief.status.success(), "{}", text(&chief));
    assert!(other.status.success(), "{}", text(&other));
    let step = stopped_at(&text(&chief));
    assert_eq!(stopped_at(&text(&other)), step);
    assert_eq!(Checkpoint::load(&checkpoint::latest(&dir).unwrap().unwrap()).unwrap().step, step);
}
