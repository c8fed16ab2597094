//! What a program that runs hone sets up once: where models run ([`DeviceSpec`]) and the
//! process-wide settings of the numeric libraries underneath ([`Runtime`]). The `hone`
//! binary does this in `main`; a server or another program embedding the library does the
//! same, explicitly.

use std::fmt;
use std::str::FromStr;

use anyhow::{bail, Result};
use candle_core::Device;
use serde::{Deserialize, Serialize};

/// Where a model runs: `cpu`, `cuda` (the first GPU) or `cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    #[default]
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// The candle device; asking for CUDA from a build without it is an error that says so.
    pub fn open(self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(ordinal) => {
                if !candle_core::utils::cuda_is_available() {
                    bail!("device `{self}` requested but this hone was built without CUDA (rebuild with `--features cuda`)")
                }
                Ok(Device::new_cuda(ordinal)?)
            }
        }
    }
}

impl FromStr for DeviceSpec {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda(0)),
            _ => match s.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(n)) => Ok(DeviceSpec::Cuda(n)),
                _ => bail!("unknown device `{s}` (expected cpu, cuda or cuda:N)"),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceSpec::Cpu => f.write_str("cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

impl Serialize for DeviceSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DeviceSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        crate::recipe::deserialize_from_str(d, "a device: cpu, cuda or cuda:N")
    }
}

/// Process-wide settings, applied by [`Runtime::init`] before any model runs.
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    /// Threads of the CPU kernels and matrix products (None: one per core).
    pub threads: Option<usize>,
}

impl Runtime {
    /// Apply the settings. Call it once, early: thread pools are built on first use.
    pub fn init(&self) -> Result<()> {
        // candle's own CPU thread pool spin-waits beside rayon's (which our kernels and the
        // GEMM use): with it off, a training step is 3-8% faster. A user's setting wins.
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
        if let Some(n) = self.threads {
            rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
                .map_err(|e| anyhow::anyhow!("cannot set {n} threads: {e}"))?;
        }
        Ok(())
    }
}

/// Runs `f` on one of rayon's worker threads, so that the kernels' parallel loops inside
/// it fork and join within the pool. Called from any other thread (a program's main
/// thread), every parallel loop hands its work to the pool and sleeps until it comes back:
/// two context switches per op, more than the arithmetic of a batch-1 forward pass.
/// Already on a worker, `f` runs in place.
pub fn on_thread_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let mut out = None;
    rayon::scope(|_| out = Some(f()));
    out.expect("rayon::scope runs its closure")
}

/// The process's peak resident memory so far (Linux's `VmHWM`), in bytes; None where the
/// system does not say. On a GPU this is host memory only.
pub fn peak_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Memory the system can give this process without swapping (Linux's `MemAvailable`, at
/// most the cgroup's limit less its usage), in bytes; None where the system does not say.
pub fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let host = kb * 1024;
    let read = |f: &str| -> Option<u64> {
        std::fs::read_to_string(format!("/sys/fs/cgroup/{f}"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    Some(match (read("memory.max"), read("memory.current")) {
        (Some(max), Some(current)) => host.min(max.saturating_sub(current)),
        _ => host,
    })
}

/// Let cuBLAS run f32 matrix products in TF32 on Ampere and newer GPUs (PyTorch's
/// `allow_tf32`): much faster, with a 10-bit mantissa. No effect on the CPU.
pub fn set_tf32(enabled: bool) {
    candle_core::cuda::set_gemm_reduced_precision_f32(enabled);
}
