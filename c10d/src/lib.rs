//! Data-parallel collectives through libtorch's own distributed engine (c10d): a `TCPStore`
//! rendezvous and a `ProcessGroupGloo`, the implementations inside the wheel's
//! `libtorch_cpu.so`, reached through a small C++ shim (`csrc/shim.cpp`). Nothing here
//! sends tensors itself.
//!
//! Every call is bounded by the group's timeout: an unreachable master, a port in use or a
//! dead peer is an error ([`DistError`]), never a hang. C++ exceptions come back as their
//! message.

use std::ffi::{c_char, c_void, CString};
use std::fmt;
use std::time::Duration;

use tch::{Device, Tensor};

extern "C" {
    #[allow(clippy::too_many_arguments)]
    fn c10d_group_new(
        host: *const c_char,
        port: u16,
        rank: i32,
        world: i32,
        is_server: i32,
        prefix: *const c_char,
        ifname: *const c_char,
        timeout_ms: i64,
        err: *mut c_char,
        err_len: usize,
    ) -> *mut c_void;
    fn c10d_group_free(group: *mut c_void);
    fn c10d_all_reduce_sum(group: *mut c_void, tensor: *mut c_void, err: *mut c_char, err_len: usize) -> i32;
    fn c10d_broadcast(group: *mut c_void, tensor: *mut c_void, root: i32, err: *mut c_char, err_len: usize) -> i32;
    fn c10d_barrier(group: *mut c_void, err: *mut c_char, err_len: usize) -> i32;
    fn c10d_find_lost(group: *mut c_void, grace_ms: i64, lost: *mut u8, err: *mut c_char, err_len: usize) -> i32;
}

/// Room for a C++ exception's message.
const ERR_LEN: usize = 4096;

/// How long survivors of a failed collective wait for each other before naming the ranks
/// that did not report as lost.
pub const GRACE: Duration = Duration::from_secs(3);

/// Where and how to meet the other ranks.
#[derive(Debug, Clone)]
pub struct Rendezvous {
    /// `MASTER_ADDR`: the host serving the TCPStore.
    pub master_addr: String,
    /// `MASTER_PORT`.
    pub master_port: u16,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Serve the store here (rank 0 of a plain launch); false when a launcher's agent
    /// already serves it (`TORCHELASTIC_USE_AGENT_STORE=True` under torchrun).
    pub serve_store: bool,
    /// Prefix of this run's keys in the store (a launcher's store outlives one attempt).
    pub prefix: String,
    /// Network interface for Gloo's connections (`GLOO_SOCKET_IFNAME`); None: the address
    /// this machine's hostname resolves to, else loopback (libtorch's default).
    pub interface: Option<String>,
    /// Bound on the rendezvous and on every collective.
    pub timeout: Duration,
}

/// Which collective failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Sum over ranks.
    AllReduce,
    /// Root's values to every rank.
    Broadcast,
    /// Everyone waits for everyone.
    Barrier,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Op::AllReduce => "all-reduce",
            Op::Broadcast => "broadcast",
            Op::Barrier => "barrier",
        })
    }
}

/// What went wrong, naming the rank and the address at fault.
#[derive(Debug, Clone, PartialEq)]
pub enum DistError {
    /// The settings make no group (rank out of range, a NUL in a name...).
    Config(String),
    /// The rendezvous failed: no store at the address, the port in use, a rank missing at
    /// the timeout.
    Connect { rank: usize, addr: String, port: u16, serving: bool, timeout: Duration, message: String },
    /// A collective failed; `lost` are the ranks that did not report back afterwards (empty
    /// when that could not be told).
    Collective { op: Op, rank: usize, lost: Vec<usize>, message: String },
}

impl fmt::Display for DistError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistError::Config(message) => f.write_str(message),
            DistError::Connect { rank, addr, port, serving, timeout, message } => write!(
                f,
                "rank {rank}: could not {} the rendezvous store at {addr}:{port} (MASTER_ADDR:MASTER_PORT) \
                 within {:.0} s: {}",
                if *serving { "serve" } else { "join" },
                timeout.as_secs_f64(),
                message.trim()
            ),
            DistError::Collective { op, rank, lost, message } => {
                write!(f, "rank {rank}: {op} failed")?;
                match lost.as_slice() {
                    [] => {}
                    [one] => write!(f, ": lost rank {one}")?,
                    many => write!(f, ": lost ranks {many:?}")?,
                }
                write!(f, " ({})", message.trim())
            }
        }
    }
}

impl std::error::Error for DistError {}

/// A process group of `world_size` ranks (Gloo).
pub struct ProcessGroup {
    raw: *mut c_void,
    rank: usize,
    world_size: usize,
    /// Whether this rank served the store (then its loss takes the store with it).
    store_on_rank0: bool,
}

/// The C++ exception's message, without the stack trace libtorch appends to it.
fn message(buffer: &[u8]) -> String {
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    let text = String::from_utf8_lossy(&buffer[..end]);
    let text = text.split("Exception raised from").next().unwrap_or_default();
    text.trim().replace('\n', "; ")
}

fn c_string(what: &str, value: &str) -> Result<CString, DistError> {
    CString::new(value).map_err(|_| DistError::Config(format!("{what} `{value}` holds a NUL byte")))
}

impl ProcessGroup {
    /// Meets the other ranks (the rendezvous through the store, then Gloo's connections
    /// between every pair), within `r.timeout`.
    pub fn connect(r: &Rendezvous) -> Result<ProcessGroup, DistError> {
        if r.world_size == 0 || r.rank >= r.world_size || r.world_size > i32::MAX as usize {
            return Err(DistError::Config(format!(
                "RANK {} is not in 0..WORLD_SIZE ({}): each of WORLD_SIZE processes needs its own rank",
                r.rank, r.world_size
            )));
        }
        let host = c_string("MASTER_ADDR", &r.master_addr)?;
        let prefix = c_string("the store prefix", &r.prefix)?;
        let iface = c_string("GLOO_SOCKET_IFNAME", r.interface.as_deref().unwrap_or(""))?;
        let mut err = vec![0u8; ERR_LEN];
        let timeout_ms = i64::try_from(r.timeout.as_millis()).unwrap_or(i64::MAX);
        // SAFETY: the strings outlive the call; `err` has ERR_LEN bytes.
        let raw = unsafe {
            c10d_group_new(
                host.as_ptr(),
                r.master_port,
                r.rank as i32,
                r.world_size as i32,
                i32::from(r.serve_store),
                prefix.as_ptr(),
                iface.as_ptr(),
                timeout_ms,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if raw.is_null() {
            return Err(DistError::Connect {
                rank: r.rank,
                addr: r.master_addr.clone(),
                port: r.master_port,
                serving: r.serve_store,
                timeout: r.timeout,
                message: message(&err),
            });
        }
        Ok(ProcessGroup { raw, rank: r.rank, world_size: r.world_size, store_on_rank0: r.serve_store || r.rank != 0 })
    }

    /// This process's rank.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// Number of ranks.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    fn checked(tensor: &Tensor) -> Result<(), DistError> {
        if tensor.device() != Device::Cpu || !tensor.is_contiguous() {
            return Err(DistError::Config(format!(
                "Gloo takes contiguous CPU tensors, not one on {:?} (contiguous: {})",
                tensor.device(),
                tensor.is_contiguous()
            )));
        }
        Ok(())
    }

    /// Sums `tensor` (contiguous, on the CPU) over all ranks, in place.
    pub fn all_reduce_sum(&self, tensor: &mut Tensor) -> Result<(), DistError> {
        Self::checked(tensor)?;
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: `tensor.as_mut_ptr()` is tch's C_tensor, an `at::Tensor*` that lives as long
        // as `tensor`; the shim only borrows it for the call.
        let rc = unsafe { c10d_all_reduce_sum(self.raw, tensor.as_mut_ptr().cast(), err.as_mut_ptr().cast(), ERR_LEN) };
        self.outcome(Op::AllReduce, rc, &err)
    }

    /// Overwrites `tensor` (contiguous, on the CPU) on every rank with rank `root`'s.
    pub fn broadcast(&self, tensor: &mut Tensor, root: usize) -> Result<(), DistError> {
        Self::checked(tensor)?;
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: as in all_reduce_sum.
        let rc = unsafe {
            c10d_broadcast(self.raw, tensor.as_mut_ptr().cast(), root as i32, err.as_mut_ptr().cast(), ERR_LEN)
        };
        self.outcome(Op::Broadcast, rc, &err)
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DistError> {
        let mut err = vec![0u8; ERR_LEN];
        // SAFETY: `err` has ERR_LEN bytes.
        let rc = unsafe { c10d_barrier(self.raw, err.as_mut_ptr().cast(), ERR_LEN) };
        self.outcome(Op::Barrier, rc, &err)
    }

    fn outcome(&self, op: Op, rc: i32, err: &[u8]) -> Result<(), DistError> {
        if rc == 0 {
            return Ok(());
        }
        Err(DistError::Collective { op, rank: self.rank, lost: self.find_lost(), message: message(err) })
    }

    /// After a failure: the ranks that do not report through the store within [`GRACE`].
    /// When the store itself is gone and rank 0 served it, rank 0 is the lost one.
    fn find_lost(&self) -> Vec<usize> {
        let mut lost = vec![0u8; self.world_size];
        let mut err = vec![0u8; ERR_LEN];
        let grace = GRACE.as_millis() as i64;
        // SAFETY: `lost` has world_size bytes, `err` ERR_LEN.
        let rc = unsafe { c10d_find_lost(self.raw, grace, lost.as_mut_ptr(), err.as_mut_ptr().cast(), ERR_LEN) };
        if rc != 0 {
            return if self.store_on_rank0 && self.rank != 0 { vec![0] } else { Vec::new() };
        }
        lost.iter().enumerate().filter(|(_, &l)| l != 0).map(|(r, _)| r).collect()
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: `raw` came from c10d_group_new and is freed once.
        unsafe { c10d_group_free(self.raw) }
    }
}

impl fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProcessGroup {{ rank: {}, world_size: {} }}", self.rank, self.world_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn free_port() -> u16 {
        TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn rendezvous(port: u16, rank: usize, world: usize) -> Rendezvous {
        Rendezvous {
            master_addr: "127.0.0.1".into(),
            master_port: port,
            rank,
            world_size: world,
            serve_store: rank == 0,
            prefix: "test/".into(),
            interface: Some("lo".into()),
            timeout: Duration::from_secs(20),
        }
    }

    /// Two ranks in two threads of this process: the sum, the broadcast and the barrier.
    #[test]
    fn two_ranks_sum_broadcast_and_meet() {
        let port = free_port();
        let ranks: Vec<_> = (0..2)
            .map(|rank| {
                std::thread::spawn(move || {
                    let group = ProcessGroup::connect(&rendezvous(port, rank, 2)).unwrap();
                    let mut t = Tensor::from_slice(&[1.0f32 + rank as f32, 10.0]);
                    group.all_reduce_sum(&mut t).unwrap();
                    let sum = Vec::<f32>::try_from(&t).unwrap();
                    let mut b = Tensor::from_slice(&[rank as f32; 3]);
                    group.broadcast(&mut b, 1).unwrap();
                    group.barrier().unwrap();
                    (sum, Vec::<f32>::try_from(&b).unwrap())
                })
            })
            .collect();
        for handle in ranks {
            let (sum, broadcast) = handle.join().unwrap();
            assert_eq!(sum, [3.0, 20.0]);
            assert_eq!(broadcast, [1.0; 3]);
        }
    }

    #[test]
    fn a_master_that_never_answers_is_an_error_within_the_timeout() {
        let port = free_port();
        let r = Rendezvous { timeout: Duration::from_secs(3), ..rendezvous(port, 1, 2) };
        let start = std::time::Instant::now();
        let err = ProcessGroup::connect(&r).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(15), "{:?}", start.elapsed());
        let text = err.to_string();
        assert!(text.contains(&format!("rank 1: could not join the rendezvous store at 127.0.0.1:{port}")), "{text}");
    }

    #[test]
    fn a_port_in_use_is_refused_at_once_by_name() {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let start = std::time::Instant::now();
        let err = ProcessGroup::connect(&rendezvous(port, 0, 2)).unwrap_err().to_string();
        assert!(start.elapsed() < Duration::from_secs(10), "{:?}", start.elapsed());
        assert!(err.contains(&format!("rank 0: could not serve the rendezvous store at 127.0.0.1:{port}")), "{err}");
    }

    #[test]
    fn a_rank_out_of_range_is_refused() {
        let err = ProcessGroup::connect(&rendezvous(1, 2, 2)).unwrap_err().to_string();
        assert!(err.contains("RANK 2 is not in 0..WORLD_SIZE (2)"), "{err}");
    }
}
