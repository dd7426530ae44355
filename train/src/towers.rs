//! Data-parallel training over "towers": replicas of the network, `towers_per_device` on
//! each device. As in `cifar10_multi_gpu_train.py`, each tower reads its own batch (its slice
//! of the step's examples), runs forward and backward on its own thread, and the gradients
//! are averaged on the first tower's device, applied once there, and copied to every other
//! tower before the next step. Any number of towers works, since the step's examples are
//! `towers × batch`.
//!
//! Each tower has one worker thread for the whole run, made when the towers are, fed through
//! a channel and reused every step: libtorch keeps per-thread state (cuDNN's tuned
//! convolution plans, the current stream), so threads born every step would pay for it
//! again on every step. A worker only ever runs its own tower, so all its work is on its
//! device (every op runs on its tensors' device; tch has no call to set a thread's current
//! CUDA device, and nothing here relies on it).
//!
//! Each tower's weights are one buffer ([`crate::flat`]) and so are its gradients: the
//! reduction adds one buffer per tower, the update is one kernel, and the broadcast copies
//! one buffer per tower. The weight decay's gradient is added after autograd, to the decayed
//! tensors' slices, with the same bits as autograd's (tested).
//!
//! Where the host waits: [`Towers::compute`] returns when every worker has *issued* its
//! step (on a CUDA device the kernels are queued, not finished; on the CPU they are done).
//! Inputs go to CUDA towers from pinned memory (see [`crate::inputs`]), and the losses stay
//! on the device as tensors until the training loop reads them back at a log step.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::thread::JoinHandle;

use model_format::arch::TENSORS;
use tch::{Device, Kind, Tensor};

use crate::error::TrainError;
use crate::flat;
use crate::model::Net;

/// Parses a `--devices` list such as `cpu` or `cuda:0,cuda:1`, checking that each exists.
///
/// ```
/// assert_eq!(train::towers::parse_devices("cpu").unwrap(), vec![tch::Device::Cpu]);
/// assert!(train::towers::parse_devices("cuda:7").is_err() || tch::Cuda::device_count() > 7);
/// assert!(train::towers::parse_devices("tpu").is_err());
/// ```
pub fn parse_devices(list: &str) -> Result<Vec<Device>, TrainError> {
    parse_devices_among(list, tch::Cuda::device_count())
}

/// [`parse_devices`] on a machine where libtorch can use `cuda_count` CUDA devices.
fn parse_devices_among(list: &str, cuda_count: i64) -> Result<Vec<Device>, TrainError> {
    let devices = list
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| parse_device(name, cuda_count))
        .collect::<Result<Vec<_>, _>>()?;
    if devices.is_empty() {
        return Err(TrainError::Config("--devices: the list is empty (use e.g. `cpu` or `cuda:0,cuda:1`)".into()));
    }
    Ok(devices)
}

fn parse_device(name: &str, cuda_count: i64) -> Result<Device, TrainError> {
    let device = match name {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match name.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => Device::Cuda(index),
            _ => {
                return Err(TrainError::Config(format!(
                    "--devices: `{name}` is not a device (use `cpu`, `cuda` or `cuda:N`)"
                )))
            }
        },
    };
    if let Device::Cuda(index) = device {
        if index as i64 >= cuda_count {
            return Err(TrainError::Config(format!(
                "--devices: `{name}` does not exist: this machine has {cuda_count} CUDA device(s) that libtorch can use"
            )));
        }
    }
    Ok(device)
}

/// Every CUDA device, or the CPU when there is none (the library's default; the
/// `cifar10-train` binary decides with [`choose_devices`], which refuses to fall back).
pub fn default_devices() -> Vec<Device> {
    match tch::Cuda::device_count() {
        0 => vec![Device::Cpu],
        n => (0..n as usize).map(Device::Cuda).collect(),
    }
}

/// What decides a run's devices: the machine as the driver and libtorch see it, and the
/// flags.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceFacts<'a> {
    /// GPUs the NVIDIA driver lists ([`driver_gpu_count`]).
    pub driver_gpus: usize,
    /// CUDA devices libtorch can use (`tch::Cuda::device_count()`).
    pub libtorch_cuda: i64,
    /// `--devices`, when given.
    pub flag: Option<&'a str>,
    /// `$LOCAL_RANK`, set by a launcher that starts one process per GPU.
    pub local_rank: Option<usize>,
}

/// The devices a run trains on, refusing the silent CPU fallback: `--devices` when given;
/// else `cuda:$LOCAL_RANK` under a launcher, every CUDA device, or the CPU on a machine with
/// no GPU. When the driver lists GPUs that libtorch cannot use (a CPU-only libtorch, or a
/// driver older than the CUDA version libtorch was built for), only an explicit
/// `--devices cpu` trains on the CPU; anything else stops with the reason.
///
/// ```
/// use train::towers::{choose_devices, DeviceFacts};
/// let facts = DeviceFacts { driver_gpus: 8, libtorch_cuda: 0, flag: None, local_rank: None };
/// assert!(choose_devices(&facts).unwrap_err().to_string().contains("--devices cpu"));
/// let cpu = DeviceFacts { flag: Some("cpu"), ..facts };
/// assert_eq!(choose_devices(&cpu).unwrap(), vec![tch::Device::Cpu]);
/// ```
pub fn choose_devices(facts: &DeviceFacts) -> Result<Vec<Device>, TrainError> {
    let unusable = facts.driver_gpus > 0 && facts.libtorch_cuda == 0;
    let why = || {
        format!(
            "the NVIDIA driver lists {} GPU(s) but libtorch can use none (a CPU-only libtorch, or a driver older than \
             the CUDA version libtorch was built for: check `nvidia-smi` against the torch wheel's CUDA version)",
            facts.driver_gpus
        )
    };
    match facts.flag {
        Some(list) => parse_devices_among(list, facts.libtorch_cuda).map_err(|e| match e {
            TrainError::Config(message) if unusable => TrainError::Config(format!("{message}; {}", why())),
            other => other,
        }),
        None if unusable => Err(TrainError::Config(format!(
            "{}; refusing to train on the CPU instead: fix that, or pass --devices cpu to train on the CPU",
            why()
        ))),
        None => match (facts.libtorch_cuda, facts.local_rank) {
            (0, _) => Ok(vec![Device::Cpu]),
            (n, Some(rank)) if rank as i64 >= n => Err(TrainError::Config(format!(
                "LOCAL_RANK={rank} but libtorch sees {n} CUDA device(s) (0 to {}): pass --devices",
                n - 1
            ))),
            (_, Some(rank)) => Ok(vec![Device::Cuda(rank)]),
            (n, None) => Ok((0..n as usize).map(Device::Cuda).collect()),
        },
    }
}

/// GPUs the NVIDIA driver lists: the entries of `/proc/driver/nvidia/gpus`, else the `GPU `
/// lines of `nvidia-smi -L`, else 0.
pub fn driver_gpu_count() -> usize {
    if let Ok(entries) = std::fs::read_dir("/proc/driver/nvidia/gpus") {
        let count = entries.count();
        if count > 0 {
            return count;
        }
    }
    std::process::Command::new("nvidia-smi")
        .arg("-L")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map_or(0, |out| String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.starts_with("GPU ")).count())
}

/// `cpu`, `cuda:0`, …: a device as `--devices` spells it.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// What one training step computed. The losses are scalars on the first tower's device, not
/// yet read back (reading them waits for the step to finish).
pub struct StepOutput {
    /// Mean cross-entropy over the step's examples.
    pub cross_entropy: Tensor,
    /// Cross-entropy plus weight decay.
    pub total_loss: Tensor,
    /// Gradients averaged over the towers, on the first tower's device, as one buffer laid
    /// out like [`Net::flat`] ([`Towers::gradient_views`] shows them per tensor).
    pub gradients: Tensor,
    /// The first tower's layer outputs, when asked for (summaries).
    pub activations: Option<Vec<(&'static str, Tensor)>>,
    /// The thread id (Linux TID) of the thread that ran each tower's part, tower order, where
    /// the platform tells it: the same threads every step.
    pub tower_threads: Vec<Option<u32>>,
}

/// The replicas and their worker threads. Tower 0 holds the master copy of the weights.
pub struct Towers {
    nets: Vec<Net>,
    workers: Vec<Worker>,
}

impl Towers {
    /// `per_device` replicas on each of `devices`, all holding `values`, each with its
    /// worker thread.
    pub fn new(values: &[Vec<f32>], devices: &[Device], per_device: usize) -> Result<Towers, TrainError> {
        if per_device == 0 || devices.is_empty() {
            return Err(TrainError::Config("--towers: need at least one tower on at least one device".into()));
        }
        let nets = devices
            .iter()
            .flat_map(|&d| std::iter::repeat_n(d, per_device))
            .map(|device| Net::from_values(values, device))
            .collect::<Result<Vec<_>, _>>()?;
        let master = nets[0].device();
        let workers =
            nets.iter().enumerate().map(|(i, net)| Worker::spawn(i, net, master)).collect::<Result<Vec<_>, _>>()?;
        Ok(Towers { nets, workers })
    }

    /// Number of towers.
    pub fn count(&self) -> usize {
        self.nets.len()
    }

    /// The tower holding the master weights.
    pub fn master(&self) -> &Net {
        &self.nets[0]
    }

    /// A gradient buffer (as [`StepOutput::gradients`]) seen as one tensor per variable,
    /// [`model_format::arch::TENSORS`] order.
    pub fn gradient_views(&self, gradients: &Tensor) -> Result<Vec<Tensor>, TrainError> {
        flat::views(gradients, self.master().params())
    }

    /// Forward and backward on every tower, concurrently, each on its worker thread:
    /// `images` `[T·B,3,24,24]` and `labels` `[T·B]` hold the towers' batches back to back,
    /// tower `i` taking examples `i·B .. (i+1)·B`. Returns the averaged gradients and losses.
    pub fn compute(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        want_activations: bool,
    ) -> Result<StepOutput, TrainError> {
        self.run_step(images, labels, want_activations, true)
    }

    /// [`Towers::compute`] without the division: the gradients and losses summed over this
    /// process's towers, for a data-parallel step that sums over every process first and
    /// divides once by the total tower count (so 2 processes × 1 tower give 1 process × 2
    /// towers' bits).
    pub fn compute_sum(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        want_activations: bool,
    ) -> Result<StepOutput, TrainError> {
        self.run_step(images, labels, want_activations, false)
    }

    /// Splits the step's examples into the towers' batches, runs them, and sums (then, with
    /// `divide`, averages) their gradients and losses.
    fn run_step(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        want_activations: bool,
        divide: bool,
    ) -> Result<StepOutput, TrainError> {
        let examples = images.size()[0] as usize;
        if examples == 0 || !examples.is_multiple_of(self.count()) {
            return Err(TrainError::Config(format!(
                "a step of {examples} examples is not {} towers' batches of equal size",
                self.count()
            )));
        }
        let per_tower = (examples / self.count()) as i64;
        let outputs = self.run_towers(images, labels, want_activations, per_tower);
        average(outputs?, self.master().device(), divide)
    }

    /// Copies the master weights to every other tower (after a broadcast into the master).
    pub fn copy_master_to_others(&mut self) -> Result<(), TrainError> {
        let (master, others) = self.nets.split_first().expect("at least one tower");
        tch::no_grad(|| -> Result<(), TrainError> {
            for net in others {
                net.flat().shallow_clone().f_copy_(master.flat())?;
            }
            Ok(())
        })
    }

    fn run_towers(
        &mut self,
        images: &Tensor,
        labels: &Tensor,
        want_activations: bool,
        per_tower: i64,
    ) -> Result<Vec<TowerOutput>, TrainError> {
        // Every job is sent before any result is read, so the towers run together; every
        // result of a sent job is read before an error is returned, so that no result is
        // left behind for the next step.
        let sent: Vec<bool> = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, worker)| {
                let (start, wanted) = (i as i64 * per_tower, want_activations && i == 0);
                let job = Job {
                    images: images.narrow(0, start, per_tower),
                    labels: labels.narrow(0, start, per_tower),
                    want_activations: wanted,
                };
                worker.jobs.as_ref().is_some_and(|jobs| jobs.send(job).is_ok())
            })
            .collect();
        let outputs: Vec<Result<TowerOutput, TrainError>> =
            self.workers.iter().zip(sent).map(|(worker, sent)| worker.result(sent)).collect();
        outputs.into_iter().collect()
    }

    /// Applies `gradients` (a buffer as [`StepOutput::gradients`]) with plain SGD to the
    /// master weights, then copies them to every other tower: one kernel for the update,
    /// one copy per other tower.
    pub fn apply(&mut self, gradients: &Tensor, learning_rate: f64) -> Result<(), TrainError> {
        let (master, others) = self.nets.split_first().expect("at least one tower");
        // `w += g · (−lr)` as one fused in-place kernel (addcmul_), rather than a product
        // into a temporary and a subtraction. The factor is a 0-dim tensor filled on the
        // device itself, so nothing is copied from the host.
        let step = Tensor::f_full([], -learning_rate, (Kind::Float, master.device()))?;
        tch::no_grad(|| -> Result<(), TrainError> {
            let _ = master.flat().shallow_clone().f_addcmul_(gradients, &step)?;
            for net in others {
                net.flat().shallow_clone().f_copy_(master.flat())?;
            }
            Ok(())
        })
    }
}

/// A tower's long-lived thread: jobs in, results out.
struct Worker {
    /// `None` once the towers are dropped, which ends the thread's loop.
    jobs: Option<Sender<Job>>,
    results: Receiver<Result<TowerOutput, TrainError>>,
    handle: Option<JoinHandle<()>>,
}

/// One step's work for a tower: its slice of the batch.
struct Job {
    images: Tensor,
    labels: Tensor,
    want_activations: bool,
}

/// What a worker thread holds: handles of its tower's variables (sharing their storage) and
/// the devices it computes on and reports to.
struct TowerContext {
    params: Vec<Tensor>,
    device: Device,
    master: Device,
    thread: Option<u32>,
}

impl Worker {
    fn spawn(index: usize, net: &Net, master: Device) -> Result<Worker, TrainError> {
        let params: Vec<Tensor> = net.params().iter().map(Tensor::shallow_clone).collect();
        let device = net.device();
        let (jobs, job_queue) = channel::<Job>();
        let (results_out, results) = channel();
        let handle = std::thread::Builder::new()
            .name(format!("tower-{index}"))
            .spawn(move || {
                let context = TowerContext { params, device, master, thread: current_thread_id() };
                for job in job_queue {
                    if results_out.send(context.step(&job)).is_err() {
                        break;
                    }
                }
            })
            .map_err(|e| TrainError::Config(format!("could not start tower {index}'s thread: {e}")))?;
        Ok(Worker { jobs: Some(jobs), results, handle: Some(handle) })
    }

    /// The result of the job just sent (`sent`), or why there is none.
    fn result(&self, sent: bool) -> Result<TowerOutput, TrainError> {
        let died = || TrainError::Config("a tower's worker thread stopped (it panicked; see the message above)".into());
        if !sent {
            return Err(died());
        }
        self.results.recv().map_err(|_| died())?
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Closing the job channel ends the worker's loop.
        self.jobs = None;
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// The calling thread's id as the kernel numbers it (`/proc/self/task/<id>`), on Linux.
pub fn current_thread_id() -> Option<u32> {
    std::fs::read_link("/proc/thread-self").ok()?.file_name()?.to_str()?.parse().ok()
}

struct TowerOutput {
    cross_entropy: Tensor,
    total_loss: Tensor,
    /// One buffer laid out like the tower's [`Net::flat`], on the tower's device.
    gradients: Tensor,
    activations: Option<Vec<(&'static str, Tensor)>>,
    thread: Option<u32>,
}

/// `tensor` on `device`. A copy to a CUDA device does not wait (the device's stream orders
/// it before the kernels that read it); a copy to the CPU does, since the host reads it next.
pub fn to_device(tensor: &Tensor, device: Device) -> Result<Tensor, TrainError> {
    Ok(tensor.f_to_device_(device, tensor.kind(), device.is_cuda(), false)?)
}

impl TowerContext {
    fn step(&self, job: &Job) -> Result<TowerOutput, TrainError> {
        let xs = to_device(&job.images, self.device)?;
        let ys = to_device(&job.labels, self.device)?;
        let (logits, activations) = if job.want_activations {
            let net_activations = crate::model::forward_with_activations(&self.params, &xs);
            (net_activations.0, Some(net_activations.1.into_iter().map(|(n, a)| (n, a.detach())).collect()))
        } else {
            (crate::model::forward(&self.params, &xs), None)
        };
        let (cross_entropy, total_loss, gradients) = losses_and_gradients(&self.params, &logits, &ys)?;
        Ok(TowerOutput {
            cross_entropy: to_device(&cross_entropy, self.master)?,
            total_loss: to_device(&total_loss, self.master)?,
            gradients,
            activations,
            thread: self.thread,
        })
    }
}

/// The cross-entropy of `logits` against `labels`, the total loss (plus weight decay), both
/// detached, and the total loss's gradient as one buffer laid out like `params`.
///
/// Autograd differentiates the cross-entropy only; the weight decay's gradient `λ·W` is then
/// added to its tensors' slices (a multiply and an add per decayed tensor), instead of
/// autograd's square, sum, scale and their backward kernels. The result is the same bits
/// (`folded_weight_decay_gives_autograd_s_gradient_bit_for_bit`): autograd's gradient of
/// `½λ·ΣW²` is `(½λ)·(2·W)`, the same rounded product `λ·W` (doubling is exact), added once to
/// the cross-entropy's gradient. The decay's value, for the loss, is computed as before.
fn losses_and_gradients(
    params: &[Tensor],
    logits: &Tensor,
    labels: &Tensor,
) -> Result<(Tensor, Tensor, Tensor), TrainError> {
    let cross_entropy =
        logits.f_log_softmax(-1, Kind::Float)?.f_nll_loss(labels, None::<Tensor>, tch::Reduction::Mean, -100)?;
    let gradients = Tensor::f_run_backward(&[&cross_entropy], params, false, false)?;
    let cross_entropy = cross_entropy.detach();
    tch::no_grad(|| {
        let gradients = flat::concat(&gradients, params)?;
        let views = flat::views(&gradients, params)?;
        let decayed = TENSORS.iter().zip(params.iter().zip(&views)).filter(|(spec, _)| spec.weight_decay > 0.0);
        for (spec, (param, gradient)) in decayed {
            let _ = gradient.shallow_clone().f_add_(&param.f_mul_scalar(f64::from(spec.weight_decay))?)?;
        }
        let total_loss = match crate::model::weight_decay_loss(params) {
            Some(decay) => cross_entropy.f_add(&decay)?,
            None => cross_entropy.shallow_clone(),
        };
        Ok((cross_entropy, total_loss, gradients))
    })
}

/// The towers' mean: one add per tower into the first tower's gradient buffer (copied to
/// the master device first where needed), then one division (none when `divide` is false:
/// the sum).
fn average(outputs: Vec<TowerOutput>, master: Device, divide: bool) -> Result<StepOutput, TrainError> {
    let n = outputs.len() as f64;
    let mut iter = outputs.into_iter();
    let first = iter.next().expect("at least one tower");
    let (mut gradients, mut ce, mut total) = (first.gradients, first.cross_entropy, first.total_loss);
    let mut tower_threads = vec![first.thread];
    tch::no_grad(|| -> Result<(), TrainError> {
        for out in iter {
            let _ = gradients.f_add_(&to_device(&out.gradients, master)?)?;
            ce = ce.f_add(&out.cross_entropy)?;
            total = total.f_add(&out.total_loss)?;
            tower_threads.push(out.thread);
        }
        if divide && n > 1.0 {
            let _ = gradients.f_div_scalar_(n)?;
            ce = ce.f_div_scalar(n)?;
            total = total.f_div_scalar(n)?;
        }
        Ok(())
    })?;
    Ok(StepOutput { cross_entropy: ce, total_loss: total, gradients, activations: first.activations, tower_threads })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model_format::init::initial_tensors;

    fn batch(n: i64) -> (Tensor, Tensor) {
        let xs = Tensor::randn([n, 3, 24, 24], (Kind::Float, Device::Cpu));
        let ys = Tensor::arange(n, (Kind::Int64, Device::Cpu)).remainder(10);
        (xs, ys)
    }

    /// The issue's equivalence in per-tower terms: 2 towers × 64 examples per tower make the
    /// same update as 1 tower × 128, on the same 128 examples.
    #[test]
    fn two_towers_of_64_update_like_one_tower_of_128() {
        tch::manual_seed(0);
        let (xs, ys) = batch(128);
        let values = initial_tensors(11);
        let mut one = Towers::new(&values, &[Device::Cpu], 1).unwrap();
        let mut two = Towers::new(&values, &[Device::Cpu], 2).unwrap();
        let a = one.compute(&xs, &ys, false).unwrap();
        let b = two.compute(&xs, &ys, false).unwrap();
        assert_eq!(two.count(), 2);
        assert!((a.cross_entropy.double_value(&[]) - b.cross_entropy.double_value(&[])).abs() < 1e-5);
        assert!((a.total_loss.double_value(&[]) - b.total_loss.double_value(&[])).abs() < 1e-5);
        one.apply(&a.gradients, 0.1).unwrap();
        two.apply(&b.gradients, 0.1).unwrap();
        let start = Net::from_values(&values, Device::Cpu).unwrap().values().unwrap();
        let after_one = one.master().values().unwrap();
        for net in &two.nets {
            for ((x, y), s) in net.values().unwrap().iter().zip(&after_one).zip(&start) {
                let max_step = y.iter().zip(s).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(max_step > 0.0, "the update changed nothing");
                for (u, v) in x.iter().zip(y) {
                    assert!((u - v).abs() <= 1e-6 + 1e-4 * max_step, "{u} vs {v}");
                }
            }
        }
    }

    #[test]
    fn each_tower_runs_on_its_own_thread_and_the_same_one_every_step() {
        let (xs, ys) = batch(6);
        let mut towers = Towers::new(&initial_tensors(2), &[Device::Cpu], 3).unwrap();
        let first = towers.compute(&xs, &ys, false).unwrap().tower_threads;
        assert_eq!(first.len(), 3);
        let ids: std::collections::BTreeSet<u32> = first.iter().map(|t| t.expect("Linux names its threads")).collect();
        assert_eq!(ids.len(), 3, "three towers, three threads: {first:?}");
        assert!(!ids.contains(&current_thread_id().unwrap()), "the caller's thread is not a tower's");
        for _ in 0..3 {
            assert_eq!(towers.compute(&xs, &ys, false).unwrap().tower_threads, first);
        }
    }

    #[test]
    fn folded_weight_decay_gives_autograd_s_gradient_bit_for_bit() {
        // Trained-like weights are not needed: the initial ones have the decayed tensors'
        // full range of magnitudes.
        let net = Net::new(Device::Cpu, 9);
        let (xs, ys) = batch(16);
        let logits = net.forward(&xs);
        let ce =
            logits.log_softmax(-1, Kind::Float).f_nll_loss(&ys, None::<Tensor>, tch::Reduction::Mean, -100).unwrap();
        let total = &ce + net.weight_decay_loss().unwrap();
        let by_autograd = Tensor::run_backward(&[&total], net.params(), true, false);
        let by_autograd = flat::concat(&by_autograd, net.params()).unwrap();
        let without = Tensor::run_backward(&[&ce], net.params(), true, false);
        let (folded_ce, folded_total, folded) = losses_and_gradients(net.params(), &logits, &ys).unwrap();
        let bits = |t: &Tensor| Vec::<f32>::try_from(t).unwrap().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&folded), bits(&by_autograd));
        assert_eq!(folded_ce.double_value(&[]), ce.double_value(&[]));
        assert_eq!(folded_total.double_value(&[]), total.double_value(&[]));
        // and the decay did contribute: without it the gradient differs
        assert_ne!(bits(&flat::concat(&without, net.params()).unwrap()), bits(&folded));
    }

    #[test]
    fn any_tower_count_takes_its_own_batches() {
        for count in [3, 5, 7] {
            let (xs, ys) = batch(2 * count as i64);
            let mut towers = Towers::new(&initial_tensors(1), &[Device::Cpu], count).unwrap();
            let out = towers.compute(&xs, &ys, false).unwrap();
            assert!(out.total_loss.double_value(&[]).is_finite(), "{count} towers");
            let odd = count as i64 + 1;
            let err = towers.compute(&xs.narrow(0, 0, odd), &ys.narrow(0, 0, odd), false).err().unwrap().to_string();
            assert!(err.contains(&format!("{count} towers")), "{err}");
        }
    }

    fn facts(driver_gpus: usize, libtorch_cuda: i64, flag: Option<&str>) -> DeviceFacts<'_> {
        DeviceFacts { driver_gpus, libtorch_cuda, flag, local_rank: None }
    }

    #[test]
    fn gpus_that_libtorch_cannot_use_stop_the_run_unless_cpu_is_asked_for() {
        let err = choose_devices(&facts(2, 0, None)).unwrap_err().to_string();
        assert!(err.contains("lists 2 GPU(s) but libtorch can use none") && err.contains("--devices cpu"), "{err}");
        assert_eq!(choose_devices(&facts(2, 0, Some("cpu"))).unwrap(), vec![Device::Cpu]);
        let err = choose_devices(&facts(2, 0, Some("cuda:0"))).unwrap_err().to_string();
        assert!(err.contains("`cuda:0` does not exist") && err.contains("libtorch can use none"), "{err}");
    }

    #[test]
    fn the_default_is_every_usable_gpu_else_the_cpu_of_a_machine_without_one() {
        assert_eq!(choose_devices(&facts(0, 0, None)).unwrap(), vec![Device::Cpu]);
        assert_eq!(choose_devices(&facts(2, 2, None)).unwrap(), vec![Device::Cuda(0), Device::Cuda(1)]);
        // libtorch's count decides even where the driver's listing is unreadable
        assert_eq!(choose_devices(&facts(0, 1, None)).unwrap(), vec![Device::Cuda(0)]);
        assert_eq!(choose_devices(&facts(2, 2, Some("cuda:1,cpu"))).unwrap(), vec![Device::Cuda(1), Device::Cpu]);
        let err = choose_devices(&facts(1, 1, Some("cuda:1"))).unwrap_err().to_string();
        assert!(err.contains("`cuda:1` does not exist") && !err.contains("can use none"), "{err}");
    }

    #[test]
    fn a_launcher_s_local_rank_picks_one_gpu() {
        let ranked = |rank| DeviceFacts { local_rank: Some(rank), ..facts(4, 4, None) };
        assert_eq!(choose_devices(&ranked(2)).unwrap(), vec![Device::Cuda(2)]);
        assert!(choose_devices(&ranked(4)).unwrap_err().to_string().contains("LOCAL_RANK=4"));
        let flagged = DeviceFacts { flag: Some("cuda:0,cuda:1"), ..ranked(2) };
        assert_eq!(choose_devices(&flagged).unwrap().len(), 2, "--devices wins over LOCAL_RANK");
    }

    #[test]
    fn devices_are_named_as_the_flag_spells_them() {
        assert_eq!([Device::Cpu, Device::Cuda(3)].map(device_name), ["cpu", "cuda:3"]);
    }

    #[test]
    fn unknown_or_missing_devices_are_refused() {
        let missing = format!("cuda:{}", tch::Cuda::device_count());
        let err = parse_devices(&format!("cpu,{missing}")).unwrap_err().to_string();
        assert!(err.contains(&missing) && err.contains("does not exist"), "{err}");
        assert!(parse_devices("gpu0").unwrap_err().to_string().contains("`gpu0`"));
        assert!(parse_devices("").is_err());
        assert_eq!(parse_devices("cpu, cpu").unwrap(), vec![Device::Cpu, Device::Cpu]);
    }
}
