//! Data-parallel training across processes: a [`Communicator`] (all-reduce, broadcast,
//! barrier, in place on tensors) over an existing engine — MPI for CPU ranks (`--features
//! mpi`), NCCL for GPUs (`--features nccl`) — and how a process finds out it is one rank
//! of several ([`Launch`]: `mpirun`, or torchrun's environment).
//!
//! The trainer uses it for three things: every rank starts from rank 0's parameters
//! ([`broadcast_params`]), the gradients of a global batch are summed across ranks in
//! buckets ([`all_reduce_grads`]), and evaluation metrics are reduced. Everything else
//! (sharding, which rank writes) lives in the trainer.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use candle_core::backprop::GradStore;
use candle_core::{Device, Tensor, Var};

// In-place access to host tensors: MPI's (and the tests') collectives.
#[cfg(feature = "mpi")]
pub(crate) mod host;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
mod nccl;
pub mod rendezvous;

#[cfg(feature = "mpi")]
pub use self::mpi::MpiCommunicator;
#[cfg(feature = "nccl")]
pub use self::nccl::NcclCommunicator;

/// Collective operations among the ranks of one run. Tensors are contiguous, on this rank's
/// device, and changed in place; every rank must make the same calls in the same order.
pub trait Communicator: Send + Sync {
    /// This process's rank, `0..world_size`.
    fn rank(&self) -> usize;
    /// How many ranks take part.
    fn world_size(&self) -> usize;
    /// Replace `t` on every rank with the element-wise sum of every rank's `t`.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<()>;
    /// Replace `t` on every rank with rank `root`'s `t`.
    fn broadcast(&self, t: &Tensor, root: usize) -> Result<()>;
    /// Wait until every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// The engine underneath.
    fn engine(&self) -> Engine;
    /// Where the tensors it reduces live (the CPU for MPI, this rank's GPU for NCCL).
    fn device(&self) -> Device {
        Device::Cpu
    }

    /// Whether this rank writes checkpoints, metrics and logs.
    fn is_main(&self) -> bool {
        self.rank() == 0
    }

    /// End every rank of the run now, with exit status `code`: what a rank that failed
    /// calls. Returning the error instead would leave the other ranks waiting in their next
    /// collective forever. The default exits this process, which mpirun and `hone launch`
    /// answer by stopping the others.
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// What carries a communicator's collectives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// One process, no engine: every collective is the identity.
    Single,
    Mpi,
    Nccl,
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Engine::Single => "one process",
            Engine::Mpi => "MPI",
            Engine::Nccl => "NCCL",
        })
    }
}

/// Whether collectives on `comm` can be skipped: one process with no engine. (A single
/// rank of an engine still runs them, so that a one-rank NCCL or MPI run exercises the
/// engine.)
pub fn alone(comm: &dyn Communicator) -> bool {
    comm.engine() == Engine::Single
}

/// One process alone: every collective is the identity.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Communicator for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _t: &Tensor) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _t: &Tensor, _root: usize) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn engine(&self) -> Engine {
        Engine::Single
    }
}

/// How this process was started, read from the environment its launcher set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Launch {
    /// Not one of several ranks.
    Single,
    /// Under `mpirun` / `mpiexec` (Open MPI's `OMPI_COMM_WORLD_*` or MPICH's `PMI_*`).
    Mpi { rank: usize, world_size: usize },
    /// Under torchrun (or `hone launch` on GPUs): `RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
    /// `MASTER_ADDR`, `MASTER_PORT`.
    Torchrun {
        rank: usize,
        world_size: usize,
        local_rank: usize,
        master_addr: String,
        master_port: u16,
    },
}

impl Launch {
    /// Read the launch from the process environment.
    pub fn from_env() -> Result<Self> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// Read the launch from `var` (the environment, or a map in tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let number = |key: &str| -> Result<Option<usize>> {
            var(key)
                .map(|v| {
                    v.trim().parse::<usize>().with_context(|| {
                        format!("environment variable {key}={v:?} is not a number")
                    })
                })
                .transpose()
        };
        let mpi = match (
            number("OMPI_COMM_WORLD_RANK")?,
            number("OMPI_COMM_WORLD_SIZE")?,
        ) {
            (Some(r), Some(w)) => Some((r, w)),
            _ => number("PMI_RANK")?.zip(number("PMI_SIZE")?),
        };
        if let Some((rank, world_size)) = mpi {
            return Ok(Launch::Mpi { rank, world_size });
        }
        let (Some(rank), Some(world_size)) = (number("RANK")?, number("WORLD_SIZE")?) else {
            return Ok(Launch::Single);
        };
        if rank >= world_size {
            bail!("RANK={rank} is not below WORLD_SIZE={world_size}")
        }
        let master_port = var("MASTER_PORT").context(
            "RANK and WORLD_SIZE are set but MASTER_PORT is not (torchrun sets all of them)",
        )?;
        Ok(Launch::Torchrun {
            rank,
            world_size,
            local_rank: number("LOCAL_RANK")?.unwrap_or(rank),
            master_addr: var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port: master_port.trim().parse().with_context(|| {
                format!("environment variable MASTER_PORT={master_port:?} is not a port")
            })?,
        })
    }

    /// This process's rank (0 when alone).
    pub fn rank(&self) -> usize {
        match self {
            Launch::Mpi { rank, .. } | Launch::Torchrun { rank, .. } => *rank,
            Launch::Single => 0,
        }
    }

    /// The CUDA device this rank should use: its local rank (one GPU per process).
    pub fn local_device_ordinal(&self) -> usize {
        match self {
            Launch::Torchrun { local_rank, .. } => *local_rank,
            Launch::Mpi { .. } => std::env::var("OMPI_COMM_WORLD_LOCAL_RANK")
                .or_else(|_| std::env::var("MPI_LOCALRANKID"))
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            Launch::Single => 0,
        }
    }

    /// The communicator this launch calls for, on `device` (MPI for CPU ranks, NCCL for
    /// CUDA ones). A single process gets [`SingleProcess`].
    pub fn communicator(&self, device: &Device) -> Result<Arc<dyn Communicator>> {
        match self {
            Launch::Single => Ok(Arc::new(SingleProcess)),
            Launch::Mpi { .. } if device.is_cuda() => nccl_over_mpi(device),
            Launch::Mpi { .. } => mpi_communicator(),
            Launch::Torchrun { .. } if !device.is_cuda() => bail!(
                "RANK/WORLD_SIZE are set (a torchrun-style launch), which hone uses for GPU ranks over NCCL; \
                 for CPU ranks start hone with `mpirun -n N hone ...` or `hone launch --nproc N -- ...`"
            ),
            Launch::Torchrun { .. } => self.nccl(device),
        }
    }

    #[cfg(feature = "nccl")]
    fn nccl(&self, device: &Device) -> Result<Arc<dyn Communicator>> {
        let Launch::Torchrun {
            rank,
            world_size,
            master_addr,
            master_port,
            ..
        } = self
        else {
            unreachable!("called for torchrun launches")
        };
        Ok(Arc::new(NcclCommunicator::from_rendezvous(
            device,
            *rank,
            *world_size,
            master_addr,
            *master_port,
        )?))
    }

    #[cfg(not(feature = "nccl"))]
    fn nccl(&self, _device: &Device) -> Result<Arc<dyn Communicator>> {
        bail!("this hone was built without NCCL: rebuild with `--features nccl` for data-parallel GPU training")
    }
}

/// CPU threads per rank when several ranks share this machine and no `--threads` was
/// given: the cores divided among them (each rank would otherwise start one per core).
pub fn threads_per_local_rank() -> Option<usize> {
    let local = [
        "OMPI_COMM_WORLD_LOCAL_SIZE",
        "MPI_LOCALNRANKS",
        "LOCAL_WORLD_SIZE",
    ]
    .iter()
    .find_map(|k| std::env::var(k).ok()?.parse::<usize>().ok())?;
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (local > 1).then(|| (cores / local).max(1))
}

#[cfg(feature = "mpi")]
fn mpi_communicator() -> Result<Arc<dyn Communicator>> {
    Ok(Arc::new(MpiCommunicator::init()?))
}

#[cfg(not(feature = "mpi"))]
fn mpi_communicator() -> Result<Arc<dyn Communicator>> {
    bail!("started by mpirun, but this hone was built without MPI: rebuild with `cargo build --release -p hone --features mpi`")
}

#[cfg(all(feature = "nccl", feature = "mpi"))]
fn nccl_over_mpi(device: &Device) -> Result<Arc<dyn Communicator>> {
    let mpi = MpiCommunicator::init()?;
    Ok(Arc::new(NcclCommunicator::from_mpi(device, mpi)?))
}

#[cfg(not(all(feature = "nccl", feature = "mpi")))]
fn nccl_over_mpi(_device: &Device) -> Result<Arc<dyn Communicator>> {
    bail!("GPU ranks under mpirun need a hone built with `--features mpi,nccl`; or launch them torchrun-style (`hone launch --nproc N -- ...`)")
}

/// Gradients travel in buckets of about this many bytes (PyTorch DDP's `bucket_cap_mb`
/// default): few enough messages that latency does not dominate, small enough that a
/// flattened copy of each costs little memory.
pub const BUCKET_BYTES: usize = 25 << 20;

/// Sum the gradients of `params` across ranks, in buckets of about `bucket_bytes`: each
/// bucket is the parameters' gradients flattened into one tensor (zeros for a parameter
/// this rank has no gradient for, as when its shard of the batch was empty), reduced in
/// one call, and split back. Every rank passes the same `params` in the same order.
pub fn all_reduce_grads(
    comm: &dyn Communicator,
    params: &[(&str, &Var)],
    grads: &mut GradStore,
    bucket_bytes: usize,
) -> Result<()> {
    if alone(comm) {
        return Ok(());
    }
    let mut start = 0;
    while start < params.len() {
        // One bucket: params[start..end], all of one dtype.
        let dtype = params[start].1.dtype();
        let mut end = start;
        let mut bytes = 0;
        while end < params.len()
            && params[end].1.dtype() == dtype
            && (end == start
                || bytes + params[end].1.elem_count() * dtype.size_in_bytes() <= bucket_bytes)
        {
            bytes += params[end].1.elem_count() * dtype.size_in_bytes();
            end += 1;
        }
        let bucket = &params[start..end];
        let flat: Vec<Tensor> = bucket
            .iter()
            .map(|(_, v)| match grads.get(v.as_tensor()) {
                Some(g) => g.to_dtype(dtype)?.flatten_all(),
                None => Tensor::zeros(v.elem_count(), dtype, v.device()),
            })
            .collect::<candle_core::Result<_>>()?;
        // A buffer of our own: the reduction writes into it (cat of one tensor would hand
        // back backward's own gradient, perhaps shared).
        let flat = match flat.len() {
            1 => flat[0].copy()?,
            _ => Tensor::cat(&flat, 0)?,
        };
        comm.all_reduce_sum(&flat)
            .with_context(|| format!("all-reduce of the gradients from `{}`", bucket[0].0))?;
        let mut offset = 0;
        for (_, v) in bucket {
            let n = v.elem_count();
            grads.insert(
                v.as_tensor(),
                flat.narrow(0, offset, n)?.reshape(v.shape())?,
            );
            offset += n;
        }
        start = end;
    }
    Ok(())
}

/// Give every rank rank 0's values of `params` (a fresh head's random initialisation, say),
/// so all ranks start equal.
pub fn broadcast_params(comm: &dyn Communicator, params: &[(String, Var)]) -> Result<()> {
    if alone(comm) {
        return Ok(());
    }
    for (name, v) in params {
        // Parameters are contiguous tensors of their own: the broadcast writes into them.
        if !v.is_contiguous() {
            bail!("cannot broadcast `{name}`: not contiguous")
        }
        comm.broadcast(v.as_tensor(), 0)
            .with_context(|| format!("broadcast of `{name}`"))?;
    }
    Ok(())
}

/// Sum a few numbers across ranks (evaluation counts, a logged loss), in f64.
pub fn all_reduce_f64(comm: &dyn Communicator, values: &mut [f64]) -> Result<()> {
    if alone(comm) || values.is_empty() {
        return Ok(());
    }
    let t = Tensor::from_slice(values, values.len(), &comm.device())?;
    comm.all_reduce_sum(&t)?;
    values.copy_from_slice(&t.to_vec1::<f64>()?);
    Ok(())
}

/// Rank `root`'s bytes on every rank (their lengths travel first).
pub fn broadcast_bytes(comm: &dyn Communicator, bytes: &[u8], root: usize) -> Result<Vec<u8>> {
    if alone(comm) {
        return Ok(bytes.to_vec());
    }
    let device = comm.device();
    let len = Tensor::from_slice(&[bytes.len() as f64], 1, &device)?;
    comm.broadcast(&len, root)?;
    let n = len.to_vec1::<f64>()?[0] as usize;
    let mut data = bytes.to_vec();
    data.resize(n, 0);
    let t = Tensor::from_vec(data, n, &device)?;
    comm.broadcast(&t, root)?;
    Ok(t.to_vec1::<u8>()?)
}

/// The contiguous part of `batch` that `rank` of `world_size` trains on: the shards, in rank
/// order, are the batch. Shard sizes differ by at most one.
pub fn shard<T>(batch: &[T], rank: usize, world_size: usize) -> &[T] {
    let n = batch.len();
    &batch[rank * n / world_size..(rank + 1) * n / world_size]
}

/// Tensor elements the collectives accept (the MPI and NCCL implementations check it).
#[cfg(any(feature = "mpi", feature = "nccl"))]
pub(crate) fn check_dtype(t: &Tensor) -> Result<()> {
    use candle_core::DType;
    match t.dtype() {
        DType::F32 | DType::F64 | DType::U8 | DType::BF16 | DType::F16 => Ok(()),
        other => bail!("collectives take f32, f64, bf16, f16 or u8 tensors, not {other:?}"),
    }
}

/// Evaluation rows a rank scores: every `world_size`-th of `order`, from its rank, so the
/// ranks get rows of similar length when `order` is sorted by length.
pub fn strided<T: Copy>(order: &[T], rank: usize, world_size: usize) -> Vec<T> {
    order
        .iter()
        .copied()
        .skip(rank)
        .step_by(world_size.max(1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars<'a>(map: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            map.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn launch_is_read_from_each_launchers_variables() {
        assert_eq!(Launch::from_vars(vars(&[])).unwrap(), Launch::Single);
        assert_eq!(
            Launch::from_vars(vars(&[
                ("OMPI_COMM_WORLD_RANK", "1"),
                ("OMPI_COMM_WORLD_SIZE", "4")
            ]))
            .unwrap(),
            Launch::Mpi {
                rank: 1,
                world_size: 4
            }
        );
        assert_eq!(
            Launch::from_vars(vars(&[("PMI_RANK", "0"), ("PMI_SIZE", "2")])).unwrap(),
            Launch::Mpi {
                rank: 0,
                world_size: 2
            }
        );
        assert_eq!(
            Launch::from_vars(vars(&[
                ("RANK", "3"),
                ("WORLD_SIZE", "8"),
                ("LOCAL_RANK", "1"),
                ("MASTER_ADDR", "10.0.0.2"),
                ("MASTER_PORT", "29500")
            ]))
            .unwrap(),
            Launch::Torchrun {
                rank: 3,
                world_size: 8,
                local_rank: 1,
                master_addr: "10.0.0.2".into(),
                master_port: 29500
            }
        );
        let rank = |v: &[(&str, &str)]| Launch::from_vars(vars(v)).unwrap().rank();
        assert_eq!(rank(&[]), 0);
        assert_eq!(rank(&[("PMI_RANK", "1"), ("PMI_SIZE", "2")]), 1);
        assert_eq!(
            rank(&[("RANK", "3"), ("WORLD_SIZE", "8"), ("MASTER_PORT", "1")]),
            3
        );
        let err = Launch::from_vars(vars(&[("RANK", "0"), ("WORLD_SIZE", "2")])).unwrap_err();
        assert!(err.to_string().contains("MASTER_PORT"), "{err}");
        let err = Launch::from_vars(vars(&[
            ("RANK", "2"),
            ("WORLD_SIZE", "2"),
            ("MASTER_PORT", "1"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("RANK=2"), "{err}");
        let err = Launch::from_vars(vars(&[
            ("OMPI_COMM_WORLD_RANK", "x"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("OMPI_COMM_WORLD_RANK"), "{err}");
    }

    #[test]
    fn shards_partition_the_batch_in_rank_order() {
        for n in 0..12 {
            for world in 1..5 {
                let batch: Vec<usize> = (0..n).collect();
                let joined: Vec<usize> = (0..world)
                    .flat_map(|r| shard(&batch, r, world).to_vec())
                    .collect();
                assert_eq!(joined, batch);
                let sizes: Vec<usize> = (0..world).map(|r| shard(&batch, r, world).len()).collect();
                assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
            }
        }
        let order = [5, 1, 4, 2, 3];
        assert_eq!(strided(&order, 0, 2), vec![5, 4, 3]);
        assert_eq!(strided(&order, 1, 2), vec![1, 2]);
    }

    /// Two "ranks" in one process: a communicator that sums over a shared pair of copies.
    #[test]
    fn buckets_split_back_into_each_parameters_gradient() -> Result<()> {
        let dev = Device::Cpu;
        let a = Var::from_tensor(&Tensor::new(&[[1f32, 2.], [3., 4.]], &dev)?)?;
        let b = Var::from_tensor(&Tensor::new(&[5f32, 6., 7.], &dev)?)?;
        let c = Var::from_tensor(&Tensor::new(&[8f32], &dev)?)?;
        let params = vec![("a", &a), ("b", &b), ("c", &c)];
        let loss = (a.as_tensor().sqr()?.sum_all()? + (b.as_tensor() * 3.0)?.sum_all()?)?;
        let mut grads = loss.backward()?;
        // Doubling stands in for the sum over two equal ranks; a 12-byte bucket puts a, b
        // and c in separate buckets, a 1 MB one puts them in one.
        for bucket in [12, 1 << 20] {
            let mut g = grads.clone_shallow(&params);
            all_reduce_grads(&Doubling, &params, &mut g, bucket)?;
            assert_eq!(
                g.get(a.as_tensor()).unwrap().to_vec2::<f32>()?,
                [[4., 8.], [12., 16.]]
            );
            assert_eq!(
                g.get(b.as_tensor()).unwrap().to_vec1::<f32>()?,
                [6., 6., 6.]
            );
            // c had no gradient on this rank: zeros went in its place.
            assert_eq!(g.get(c.as_tensor()).unwrap().to_vec1::<f32>()?, [0.]);
        }
        grads.remove(c.as_tensor());
        Ok(())
    }

    struct Doubling;
    impl Communicator for Doubling {
        fn rank(&self) -> usize {
            0
        }
        fn world_size(&self) -> usize {
            2
        }
        fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
            crate::distributed::tests::scale_in_place(t, 2.0)
        }
        fn broadcast(&self, _t: &Tensor, _root: usize) -> Result<()> {
            Ok(())
        }
        fn barrier(&self) -> Result<()> {
            Ok(())
        }
        fn engine(&self) -> Engine {
            Engine::Mpi
        }
    }

    /// `t *= k` in place (a collective writes into the tensor it is given).
    fn scale_in_place(t: &Tensor, k: f64) -> Result<()> {
        let scaled = (t * k)?;
        t.slice_set(&scaled, 0, 0)?;
        Ok(())
    }

    trait CloneShallow {
        fn clone_shallow(&self, params: &[(&str, &Var)]) -> GradStore;
    }
    impl CloneShallow for GradStore {
        fn clone_shallow(&self, params: &[(&str, &Var)]) -> GradStore {
            let mut g = GradStore::default();
            for (_, v) in params {
                if let Some(t) = self.get(v.as_tensor()) {
                    g.insert(v.as_tensor(), t.clone());
                }
            }
            g
        }
    }
}
