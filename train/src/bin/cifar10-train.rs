//! `cifar10-train`: train the CIFAR-10 tutorial model, evaluate it, export its weights.
//!
//! ```text
//! cifar10-train train --train-dir runs/a --max-steps 30000
//! cifar10-train train --train-dir runs/a --max-steps 60000 --resume
//! cifar10-train train --train-dir runs/b --devices cuda:0,cuda:1 --batch-size 128   # 256 examples a step
//! torchrun --nproc-per-node 2 --no-python cifar10-train train --train-dir runs/c   # 2 processes, Gloo
//! cifar10-train eval --train-dir runs/a [--every 300]
//! cifar10-train export --train-dir runs/a --output model.safetensors
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use model_format::cifar::Dataset;
use model_format::Weights;
use model_format::WeightsKind;
use tch::Device;
use train::checkpoint::{self, Checkpoint};
use train::config::{self, TrainConfig};
use train::evaluate::EvalSet;
use train::export;
use train::trainer;
use train::{towers, TrainError};

/// Set by Ctrl-C: the loops stop at the next step boundary and save.
static STOP: AtomicBool = AtomicBool::new(false);

#[derive(FromArgs)]
/// Train, evaluate and export the CIFAR-10 tutorial CNN (tch / libtorch).
struct Cli {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Train(TrainArgs),
    Eval(EvalArgs),
    Export(ExportArgs),
}

#[derive(FromArgs)]
#[argh(subcommand, name = "train")]
/// Train with distorted inputs, SGD, weight decay and moving averages; checkpoint as it goes.
struct TrainArgs {
    /// cifar-10-batches-bin folder (default: $CIFAR10_DATA_DIR, else ../shared/cifar10/cifar-10-batches-bin)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// where checkpoints and event logs go
    #[argh(option, default = "PathBuf::from(\"cifar10_train\")")]
    train_dir: PathBuf,
    /// total steps to reach (a resumed run counts its earlier steps)
    #[argh(option, default = "1_000_000")]
    max_steps: u64,
    /// examples per tower per step (as in cifar10_multi_gpu_train.py each tower reads its own batch, so a step trains on batch-size x towers examples and the learning rate decays after proportionally fewer steps)
    #[argh(option, default = "128")]
    batch_size: usize,
    /// steps between log lines
    #[argh(option, default = "10")]
    log_frequency: u64,
    /// seed of the initial weights, input order and distortions
    #[argh(option, default = "0")]
    seed: u64,
    /// comma-separated devices: cpu, cuda:0, cuda:1, ... (default: cuda:$LOCAL_RANK under a launcher, else every CUDA device, else cpu on a machine without GPUs; when the driver lists GPUs that libtorch cannot use, the run stops unless --devices cpu is given)
    #[argh(option)]
    devices: Option<String>,
    /// model replicas (towers) per device, each with its own batch
    #[argh(option, default = "1")]
    towers: usize,
    /// initial learning rate
    #[argh(option, default = "0.1")]
    learning_rate: f64,
    /// learning-rate decay factor
    #[argh(option, default = "0.1")]
    learning_rate_decay_factor: f64,
    /// epochs after which the learning rate decays
    #[argh(option, default = "350.0")]
    num_epochs_per_decay: f64,
    /// decay of the weights' moving average, in (0, 1)
    #[argh(option, default = "0.9999")]
    moving_average_decay: f64,
    /// steps between checkpoints (one is always written at the end)
    #[argh(option, default = "1000")]
    checkpoint_every: u64,
    /// checkpoints to keep
    #[argh(option, default = "5")]
    keep_checkpoints: usize,
    /// continue from the newest checkpoint in --train-dir
    #[argh(switch)]
    resume: bool,
    /// steps between TensorBoard histograms and images (0: no summaries)
    #[argh(option, default = "100")]
    summary_every: u64,
    /// steps between precision@1 evaluations on the test set (0: never)
    #[argh(option, default = "0")]
    eval_every: u64,
    /// threads preparing input batches with --augment-on host (default: 1 for CPU towers; 2 per CUDA tower, at most the cores left after one per tower)
    #[argh(option)]
    input_workers: Option<usize>,
    /// where the distortions run: `device` (batched tensor ops on the first tower's device, the training set held there; the default with a CUDA device) or `host` (input threads; the default on the CPU)
    #[argh(option)]
    augment_on: Option<String>,
    /// libtorch intra-op threads, 1 to 1024 (default: libtorch's choice)
    #[argh(option)]
    threads: Option<usize>,
    /// deterministic cuDNN convolutions without autotuning: reproducible CUDA runs, somewhat slower (off by default: cuDNN picks the fastest algorithms, which may differ in the last bits from run to run; no effect on the CPU)
    #[argh(switch)]
    deterministic_cudnn: bool,
    /// train on only the first N training examples (quick experiments)
    #[argh(option)]
    train_examples: Option<usize>,
    /// this process's rank in a data-parallel run, 0 to WORLD_SIZE-1 (default: $RANK, else 0)
    #[argh(option)]
    rank: Option<usize>,
    /// processes training together (default: $WORLD_SIZE, else 1: a run on its own)
    #[argh(option)]
    world_size: Option<usize>,
    /// host of rank 0's rendezvous store (default: $MASTER_ADDR, else 127.0.0.1)
    #[argh(option)]
    master_addr: Option<String>,
    /// port of the rendezvous store (default: $MASTER_PORT, else 29500)
    #[argh(option)]
    master_port: Option<u16>,
    /// collective backend: gloo (CPU; the default) or nccl (CUDA; not built into this trainer yet)
    #[argh(option)]
    dist_backend: Option<String>,
    /// seconds that the rendezvous and each collective may take before the run stops with an error, 1 to 3600
    #[argh(option, default = "60")]
    dist_timeout: u64,
}

/// Where this process stands in a data-parallel run: flags first, then the variables a
/// launcher (torchrun, a SLURM script) sets.
struct Launch {
    rank: usize,
    world_size: usize,
    rendezvous: Option<c10d::Rendezvous>,
}

fn env_number<T: std::str::FromStr>(name: &str) -> Result<Option<T>, TrainError> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| TrainError::Config(format!("{name}={text:?} is not a valid number"))),
        Err(_) => Ok(None),
    }
}

fn launch(args: &TrainArgs, devices: &[Device]) -> Result<Launch, TrainError> {
    let world_size = match args.world_size {
        Some(n) => n,
        None => env_number("WORLD_SIZE")?.unwrap_or(1),
    };
    let rank = match args.rank {
        Some(r) => r,
        None => env_number("RANK")?.unwrap_or(0),
    };
    if world_size == 0 {
        return Err(TrainError::Config("--world-size / WORLD_SIZE 0: must be at least 1 (processes)".into()));
    }
    if rank >= world_size {
        return Err(TrainError::Config(format!(
            "--rank / RANK {rank} is outside the valid range 0 to {} (WORLD_SIZE {world_size} minus 1)",
            world_size - 1
        )));
    }
    if world_size == 1 {
        return Ok(Launch { rank, world_size, rendezvous: None });
    }
    let backend = match args.dist_backend.as_deref() {
        Some(name) => name.to_string(),
        None if devices.iter().any(|d| d.is_cuda()) => "nccl".to_string(),
        None => "gloo".to_string(),
    };
    match backend.as_str() {
        "gloo" => {}
        "nccl" => {
            return Err(TrainError::Config(
                "--dist-backend nccl (the default on CUDA devices): this trainer is not built with NCCL yet; \
                 pass --dist-backend gloo (the gradients then go through host memory)"
                    .into(),
            ))
        }
        other => return Err(TrainError::Config(format!("--dist-backend `{other}`: valid backends are gloo and nccl"))),
    }
    if !(1..=3600).contains(&args.dist_timeout) {
        return Err(TrainError::Config(format!("--dist-timeout {}: must be 1 to 3600 seconds", args.dist_timeout)));
    }
    let master_addr = match &args.master_addr {
        Some(addr) => addr.clone(),
        None => std::env::var("MASTER_ADDR").unwrap_or_else(|_| "127.0.0.1".into()),
    };
    let master_port = match args.master_port {
        Some(port) => port,
        None => env_number("MASTER_PORT")?.unwrap_or(29500),
    };
    // Under torchrun the elastic agent already serves the store on MASTER_PORT; each
    // restart of the workers gets its own keys in it.
    let agent_store = std::env::var("TORCHELASTIC_USE_AGENT_STORE").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let attempt = std::env::var("TORCHELASTIC_RESTART_COUNT").unwrap_or_else(|_| "0".into());
    Ok(Launch {
        rank,
        world_size,
        rendezvous: Some(c10d::Rendezvous {
            master_addr,
            master_port,
            rank,
            world_size,
            serve_store: rank == 0 && !agent_store,
            prefix: format!("cifar10-train/{attempt}/"),
            interface: std::env::var("GLOO_SOCKET_IFNAME").ok().filter(|s| !s.is_empty()),
            timeout: Duration::from_secs(args.dist_timeout),
        }),
    })
}

#[derive(FromArgs)]
#[argh(subcommand, name = "eval")]
/// Precision@1 of the averaged weights over the whole test set.
struct EvalArgs {
    /// cifar-10-batches-bin folder
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// folder of the training run (its newest checkpoint is evaluated)
    #[argh(option, default = "PathBuf::from(\"cifar10_train\")")]
    train_dir: PathBuf,
    /// a checkpoint file or an exported weights file instead of the newest checkpoint
    #[argh(option)]
    checkpoint: Option<PathBuf>,
    /// evaluate the raw weights instead of their moving average
    #[argh(switch)]
    raw: bool,
    /// device to evaluate on (cpu, cuda:N)
    #[argh(option, default = "String::from(\"cpu\")")]
    device: String,
    /// re-evaluate the newest checkpoint every SECONDS until Ctrl-C
    #[argh(option)]
    every: Option<u64>,
    /// also log precision@1 to TensorBoard event files here
    #[argh(option)]
    eval_dir: Option<PathBuf>,
}

#[derive(FromArgs)]
#[argh(subcommand, name = "export")]
/// Write a checkpoint's weights to a model-format safetensors file with metadata.
struct ExportArgs {
    /// cifar-10-batches-bin folder (for the fingerprint and the measured precision)
    #[argh(option)]
    data_dir: Option<PathBuf>,
    /// folder of the training run
    #[argh(option, default = "PathBuf::from(\"cifar10_train\")")]
    train_dir: PathBuf,
    /// checkpoint to export (default: the newest in --train-dir)
    #[argh(option)]
    checkpoint: Option<PathBuf>,
    /// the weights file to write
    #[argh(option)]
    output: PathBuf,
    /// also write the raw (not averaged) weights to this file
    #[argh(option)]
    raw_output: Option<PathBuf>,
    /// device used to measure precision@1
    #[argh(option, default = "String::from(\"cpu\")")]
    device: String,
}

fn main() -> ExitCode {
    let cli: Cli = argh::from_env();
    let _ = ctrlc::set_handler(|| {
        if STOP.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("interrupt: stopping after this step and saving a checkpoint (Ctrl-C again to abort)");
    });
    let result = match cli.command {
        Command::Train(args) => run_train(args),
        Command::Eval(args) => run_eval(args),
        Command::Export(args) => run_export(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_train(args: TrainArgs) -> Result<(), TrainError> {
    if let Some(threads) = args.threads {
        tch::set_num_threads(config::check_threads(threads)?);
    }
    let dataset = Dataset::locate(args.data_dir.as_deref())?;
    let mut train_records = dataset.train()?;
    if let Some(n) = args.train_examples {
        if n == 0 {
            return Err(TrainError::Config("--train-examples must be at least 1".into()));
        }
        train_records = train_records.head(n);
    }
    let test_records = if args.eval_every > 0 { Some(dataset.test()?) } else { None };
    let devices = towers::choose_devices(&towers::DeviceFacts {
        driver_gpus: towers::driver_gpu_count(),
        libtorch_cuda: tch::Cuda::device_count(),
        flag: args.devices.as_deref(),
        local_rank: std::env::var("LOCAL_RANK").ok().and_then(|r| r.parse().ok()),
    })?;
    let chosen_by = if args.devices.is_some() { "--devices" } else { "default" };
    let launch = launch(&args, &devices)?;
    let augment_on = match &args.augment_on {
        Some(text) => train::augment::AugmentOn::parse(text)?,
        None => train::augment::AugmentOn::default_for(&devices),
    };
    let towers = devices.len() * args.towers;
    let cuda_towers = devices.iter().filter(|d| d.is_cuda()).count() * args.towers;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let input_workers = args.input_workers.unwrap_or_else(|| config::default_input_workers(cores, towers, cuda_towers));
    let config = TrainConfig {
        train_dir: args.train_dir,
        max_steps: args.max_steps,
        batch_size: args.batch_size,
        log_frequency: args.log_frequency,
        seed: args.seed,
        devices,
        towers_per_device: args.towers,
        learning_rate: args.learning_rate,
        learning_rate_decay_factor: args.learning_rate_decay_factor,
        epochs_per_decay: args.num_epochs_per_decay,
        moving_average_decay: args.moving_average_decay,
        checkpoint_every: args.checkpoint_every,
        keep_checkpoints: args.keep_checkpoints,
        resume: args.resume,
        summary_every: args.summary_every,
        eval_every: args.eval_every,
        input_workers,
        augment_on,
        deterministic_cudnn: args.deterministic_cudnn,
        rank: launch.rank,
        world_size: launch.world_size,
    };
    let group = match &launch.rendezvous {
        Some(r) => {
            let group = c10d::ProcessGroup::connect(r)?;
            println!(
                "rank {} of {}: joined the Gloo group through {}:{} ({} towers in all, {} examples per step)",
                r.rank,
                r.world_size,
                r.master_addr,
                r.master_port,
                config.total_towers(),
                config.world_batch()
            );
            Some(group)
        }
        None => None,
    };
    let device_names: Vec<String> = config.devices.iter().map(|&d| towers::device_name(d)).collect();
    println!(
        "training {} parameters on {} example(s) from {}, on devices {} ({chosen_by}; libtorch sees {} CUDA device(s)), \
         {} tower(s) per device = {} tower(s), batch {} per tower = {} examples per step, {} intra-op thread(s), \
         distortions on the {}, into {}",
        model_format::PARAM_COUNT,
        train_records.len(),
        dataset.dir.display(),
        device_names.join(","),
        tch::Cuda::device_count(),
        config.towers_per_device,
        config.tower_count(),
        config.batch_size,
        config.global_batch(),
        tch::get_num_threads(),
        match config.augment_on {
            train::augment::AugmentOn::Device => "device".to_string(),
            train::augment::AugmentOn::Host => format!("host ({} input thread(s))", config.input_workers),
        },
        config.train_dir.display()
    );
    let outcome = trainer::train_in_group(
        &config,
        Arc::new(train_records),
        test_records.as_ref(),
        &STOP,
        &mut |_, _| {},
        group.as_ref(),
    )?;
    println!(
        "{} at step {}: {:.2} steps/sec, {:.1} examples/sec over this run, {:.2}% of the time waiting for input, \
         summaries {:.2}% of the time on the training thread and {:.2}% on their own thread; checkpoint {}",
        if outcome.interrupted { "stopped" } else { "done" },
        outcome.step,
        outcome.steps_per_sec,
        outcome.examples_per_sec,
        100.0 * outcome.input_wait,
        100.0 * outcome.summary_share,
        100.0 * outcome.summary_thread_share,
        outcome.checkpoint.display()
    );
    if group.is_some() {
        println!(
            "all-reduce: {:.2} ms per step (waiting for the slowest rank included)",
            1e3 * outcome.all_reduce_per_step
        );
    }
    Ok(())
}

/// The weights to evaluate or export: from a checkpoint (EMA or raw) or a weights file.
struct Loaded {
    values: Vec<Vec<f32>>,
    step: u64,
    /// "averaged" or "raw".
    kind: String,
    source: PathBuf,
}

fn load(path: &Path, raw: bool) -> Result<Loaded, TrainError> {
    match Checkpoint::load(path) {
        Ok(ckpt) => Ok(Loaded {
            values: if raw { ckpt.raw } else { ckpt.ema },
            step: ckpt.step,
            kind: if raw { "raw" } else { "averaged" }.into(),
            source: path.into(),
        }),
        // Not a checkpoint: accept an exported weights file, else report the checkpoint error.
        Err(ckpt_err) => match Weights::load(path) {
            Ok(weights) => Ok(Loaded {
                values: weights.iter().map(|(_, d)| d.to_vec()).collect(),
                step: weights.metadata.step.unwrap_or(0),
                kind: match weights.metadata.weights_kind {
                    Some(WeightsKind::Raw) => "raw".into(),
                    Some(WeightsKind::Averaged) => "averaged".into(),
                    None => "unlabelled".into(),
                },
                source: path.into(),
            }),
            Err(_) => Err(ckpt_err),
        },
    }
}

fn newest_checkpoint(train_dir: &Path) -> Result<PathBuf, TrainError> {
    checkpoint::latest(train_dir)?.ok_or_else(|| {
        TrainError::Config(format!(
            "{}: no checkpoint (model.ckpt-*.safetensors) found; train first or pass --checkpoint",
            train_dir.display()
        ))
    })
}

fn device(name: &str) -> Result<Device, TrainError> {
    let devices = towers::parse_devices(name)?;
    match devices.as_slice() {
        [one] => Ok(*one),
        _ => Err(TrainError::Config(format!("--device: give one device, not `{name}`"))),
    }
}

fn run_eval(args: EvalArgs) -> Result<(), TrainError> {
    let device = device(&args.device)?;
    let dataset = Dataset::locate(args.data_dir.as_deref())?;
    let test = EvalSet::new(&dataset.test()?);
    let mut board = args.eval_dir.as_deref().map(train::tensorboard::Board::create).transpose()?;
    let mut last: Option<PathBuf> = None;
    loop {
        let path = match &args.checkpoint {
            Some(path) => path.clone(),
            None => newest_checkpoint(&args.train_dir)?,
        };
        if last.as_ref() != Some(&path) {
            let loaded = load(&path, args.raw)?;
            let precision = test.precision_of(&loaded.values, device)?;
            println!(
                "{}: precision @ 1 = {precision:.4} on {} test images ({} weights of step {}, {})",
                train::progress::utc_now(),
                test.len(),
                loaded.kind,
                loaded.step,
                loaded.source.display()
            );
            if let Some(board) = board.as_mut() {
                board.scalar("precision @ 1", loaded.step, precision)?;
                board.flush()?;
            }
            last = Some(path);
        }
        let Some(every) = args.every else { return Ok(()) };
        if sleep_unless_stopped(Duration::from_secs(every)) {
            return Ok(());
        }
    }
}

/// Refuses outputs that would overwrite the checkpoint being exported, any checkpoint of the
/// run (in --train-dir or beside --checkpoint), or each other; before anything is read.
fn check_outputs(args: &ExportArgs, source: &Path) -> Result<(), TrainError> {
    let source_dir = source.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut outputs = vec![(&args.output, "--output")];
    outputs.extend(args.raw_output.as_ref().map(|raw| (raw, "--raw-output")));
    for (i, &(output, flag)) in outputs.iter().enumerate() {
        let mut reads = vec![source];
        reads.extend(outputs.iter().enumerate().filter(|&(j, _)| j != i).map(|(_, (other, _))| other.as_path()));
        for train_dir in [args.train_dir.as_path(), source_dir] {
            export::check_output(flag, output, train_dir, &reads)?;
        }
    }
    Ok(())
}

/// Sleeps `total`, waking early when Ctrl-C is pressed; true when stopped.
fn sleep_unless_stopped(total: Duration) -> bool {
    let tick = Duration::from_millis(200);
    let mut slept = Duration::ZERO;
    while slept < total {
        if STOP.load(Ordering::SeqCst) {
            return true;
        }
        std::thread::sleep(tick);
        slept += tick;
    }
    STOP.load(Ordering::SeqCst)
}

fn run_export(args: ExportArgs) -> Result<(), TrainError> {
    let device = device(&args.device)?;
    let dataset = Dataset::locate(args.data_dir.as_deref())?;
    let path = match &args.checkpoint {
        Some(path) => path.clone(),
        None => newest_checkpoint(&args.train_dir)?,
    };
    check_outputs(&args, &path)?;
    let checkpoint = Checkpoint::load(&path)?;
    let fingerprint = dataset.fingerprint()?;
    let test = EvalSet::new(&dataset.test()?);
    let mut outputs = vec![(WeightsKind::Averaged, args.output.clone())];
    if let Some(raw) = &args.raw_output {
        outputs.push((WeightsKind::Raw, raw.clone()));
    }
    for (kind, output) in outputs {
        let weights = export::to_weights(&checkpoint, &path, kind, &test, &fingerprint, device)?;
        weights.save(&output)?;
        println!(
            "wrote {} ({} weights of step {}, precision @ 1 = {:.4} on {} test images)",
            output.display(),
            kind.as_str(),
            checkpoint.step,
            weights.metadata.precision_at_1.unwrap_or(f64::NAN),
            test.len()
        );
    }
    Ok(())
}
