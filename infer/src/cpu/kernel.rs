//! Which instruction set the engine's inner loops use, chosen at run time.
//!
//! Every kernel computes each value with the same chain of fused multiply-adds in the same
//! order (the portable one through [`f32::mul_add`]), so all of them give the same bits:
//! the choice changes speed, never a result.

use std::fmt;
use std::str::FromStr;

use crate::error::InferError;

/// Environment variable that forces a kernel for [`super::CpuEngine::new`]: `auto` (or unset)
/// picks the fastest this CPU runs; `avx512`, `avx2` or `portable` pick one by name.
pub const KERNEL_ENV: &str = "INFER_CPU_KERNEL";

/// The inner loops of the engine: the convolutions' register-blocked product and the fully
/// connected layers' blocked dot products.
///
/// ```
/// use infer::cpu::Kernel;
/// assert!(Kernel::Portable.is_available());
/// assert!(Kernel::best().is_available());
/// assert_eq!("avx2".parse::<Kernel>().unwrap(), Kernel::Avx2Fma);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// AVX-512F (x86-64): an 8 × 48 tile of 24 `zmm` accumulators.
    Avx512,
    /// AVX2 and FMA (x86-64): a 6 × 16 tile of 12 `ymm` accumulators.
    Avx2Fma,
    /// Plain Rust with [`f32::mul_add`], for any CPU (slow where FMA is done in software).
    Portable,
}

impl Kernel {
    /// Every kernel, fastest first.
    pub const ALL: [Kernel; 3] = [Kernel::Avx512, Kernel::Avx2Fma, Kernel::Portable];

    /// The fastest kernel this CPU runs.
    pub fn best() -> Kernel {
        Kernel::ALL.into_iter().find(|k| k.is_available()).unwrap_or(Kernel::Portable)
    }

    /// Whether this CPU has the instructions the kernel needs.
    pub fn is_available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => std::arch::is_x86_feature_detected!("avx512f"),
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            Kernel::Avx512 | Kernel::Avx2Fma => false,
            Kernel::Portable => true,
        }
    }

    /// The name [`KERNEL_ENV`] and [`FromStr`] accept.
    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512 => "avx512",
            Kernel::Avx2Fma => "avx2",
            Kernel::Portable => "portable",
        }
    }

    /// The kernel [`KERNEL_ENV`] asks for, or [`Kernel::best`] when it is unset or `auto`.
    /// An unknown name, or a kernel this CPU lacks, is an error naming the variable.
    pub fn from_env() -> Result<Kernel, InferError> {
        let Some(value) = std::env::var_os(KERNEL_ENV) else { return Ok(Kernel::best()) };
        let value = value.to_string_lossy();
        if value == "auto" {
            return Ok(Kernel::best());
        }
        let kernel: Kernel = value.parse().map_err(|e| InferError::Backend(format!("{KERNEL_ENV}: {e}")))?;
        kernel.check_available()
    }

    /// `Ok(self)` when this CPU runs the kernel, else an error saying which ones it runs.
    pub(crate) fn check_available(self) -> Result<Kernel, InferError> {
        if self.is_available() {
            return Ok(self);
        }
        let available: Vec<&str> = Kernel::ALL.iter().filter(|k| k.is_available()).map(|k| k.name()).collect();
        Err(InferError::Backend(format!(
            "the {} kernel needs instructions this CPU lacks; it runs: {}",
            self.name(),
            available.join(", ")
        )))
    }
}

/// The ReLU every step applies, written as `MAXPS(v, 0)` computes it (`v > 0 ? v : 0`, so
/// NaN and −0 give +0): `f32::max` leaves the sign of a zero to the compiler, which could
/// differ between kernels.
#[inline(always)]
pub(crate) fn relu(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// One part of a step that the team shares out (a range of channels, of im2col rows…).
pub(crate) trait Part: Sync {
    /// Runs part `i`; marked `#[inline(always)]` by implementations, so that it is compiled
    /// into [`Kernel::run_part`]'s per-instruction-set copies.
    fn run(&self, i: usize);
}

impl Kernel {
    /// Runs `part.run(i)` compiled for this kernel's instruction set: the plain loops of
    /// pooling, LRN and im2col then move whole vector registers. They use only exactly
    /// rounded operations (copies, max, +, ×, ÷, √ each on its own, never contracted), so the
    /// bits do not depend on the kernel.
    #[inline(always)]
    pub(crate) fn run_part<P: Part>(self, part: &P, i: usize) {
        match self {
            // SAFETY: engines only hold kernels this CPU runs (checked when they are built).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { part_avx512(part, i) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2Fma => unsafe { part_avx2(part, i) },
            _ => part.run(i),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn part_avx512<P: Part>(part: &P, i: usize) {
    part.run(i)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn part_avx2<P: Part>(part: &P, i: usize) {
    part.run(i)
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kernel {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kernel::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| format!("unknown kernel `{s}`: expected auto, avx512, avx2 or portable"))
    }
}
