//! [`Communicator`] over NCCL (cudarc's bindings), for GPU ranks: one GPU per rank, the
//! collectives on the device buffers candle already holds, on candle's own stream.

use std::cell::RefCell;
use std::sync::Mutex;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::backend::BackendStorage;
use candle_core::{CudaStorage, DType, Device, InplaceOp1, Layout, Tensor};
use cudarc::driver::CudaSlice;
use cudarc::nccl::safe::{Comm, Id, NcclType, ReduceOp};

use super::{check_dtype, rendezvous, Communicator, Engine};

/// An NCCL communicator on this rank's GPU.
pub struct NcclCommunicator {
    comm: Mutex<SendComm>,
    device: Device,
    rank: usize,
    world_size: usize,
    /// Under mpirun, MPI carried the unique id and is finalised only after NCCL is done.
    #[cfg(feature = "mpi")]
    _mpi: Option<super::MpiCommunicator>,
}

/// NCCL's handle; calls on it are serialised by the mutex.
struct SendComm(Comm);
// SAFETY: an NCCL communicator may be used from any thread as long as calls do not
// overlap, which the mutex around it ensures.
unsafe impl Send for SendComm {}

impl NcclCommunicator {
    /// Join a torchrun-style launch: rank 0 makes NCCL's unique id and hands it out at
    /// `MASTER_ADDR:MASTER_PORT` ([`rendezvous::exchange`]).
    pub fn from_rendezvous(
        device: &Device,
        rank: usize,
        world_size: usize,
        addr: &str,
        port: u16,
    ) -> Result<Self> {
        let id = match rank {
            0 => id_bytes(&Id::new().map_err(|e| anyhow!("NCCL: cannot make a unique id: {e:?}"))?),
            _ => Vec::new(),
        };
        let id = rendezvous::exchange(rank, world_size, addr, port, &id)?;
        Self::new(device, rank, world_size, &id)
    }

    /// Under mpirun: MPI carries NCCL's unique id from rank 0.
    #[cfg(feature = "mpi")]
    pub fn from_mpi(device: &Device, mpi: super::MpiCommunicator) -> Result<Self> {
        let (rank, world_size) = (mpi.rank(), mpi.world_size());
        let id = match rank {
            0 => id_bytes(&Id::new().map_err(|e| anyhow!("NCCL: cannot make a unique id: {e:?}"))?),
            _ => vec![0u8; 128],
        };
        let id = super::broadcast_bytes(&mpi, &id, 0)?;
        let mut me = Self::new(device, rank, world_size, &id)?;
        me._mpi = Some(mpi);
        Ok(me)
    }

    fn new(device: &Device, rank: usize, world_size: usize, id: &[u8]) -> Result<Self> {
        let Device::Cuda(cuda) = device else {
            bail!("NCCL needs a CUDA device, got {device:?}")
        };
        let internal: [std::ffi::c_char; 128] = id
            .iter()
            .map(|&b| b as std::ffi::c_char)
            .collect::<Vec<_>>()
            .try_into()
            .map_err(|v: Vec<_>| anyhow!("NCCL unique id of {} bytes, expected 128", v.len()))?;
        let comm = Comm::from_rank(cuda.cuda_stream(), rank, world_size, Id::uninit(internal))
            .map_err(|e| anyhow!("NCCL: rank {rank} of {world_size} cannot join: {e:?}"))?;
        Ok(Self {
            comm: Mutex::new(SendComm(comm)),
            device: device.clone(),
            rank,
            world_size,
            #[cfg(feature = "mpi")]
            _mpi: None,
        })
    }

    fn run(&self, t: &Tensor, op: Collective) -> Result<()> {
        check_dtype(t)?;
        if !t.device().same_device(&self.device) {
            bail!(
                "NCCL collective on {:?}, but this rank's device is {:?}",
                t.device(),
                self.device
            )
        }
        let guard = self.comm.lock().unwrap_or_else(|e| e.into_inner());
        let inplace = NcclOp {
            comm: &guard.0,
            op,
            error: RefCell::new(None),
        };
        t.inplace_op1(&inplace)?;
        match inplace.error.into_inner() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

fn id_bytes(id: &Id) -> Vec<u8> {
    id.internal().iter().map(|&c| c as u8).collect()
}

#[derive(Clone, Copy)]
enum Collective {
    Sum,
    Broadcast(usize),
}

struct NcclOp<'a> {
    comm: &'a Comm,
    op: Collective,
    error: RefCell<Option<anyhow::Error>>,
}

impl NcclOp<'_> {
    fn apply<T: NcclType + candle_core::cuda_backend::CudaDType>(
        &self,
        slice: &mut CudaSlice<T>,
        layout: &Layout,
    ) -> Result<()> {
        let Some((a, b)) = layout.contiguous_offsets() else {
            bail!("NCCL collective on a tensor that is not contiguous")
        };
        let mut view = slice.slice_mut(a..b);
        let status = match self.op {
            Collective::Sum => self.comm.all_reduce_in_place(&mut view, &ReduceOp::Sum),
            Collective::Broadcast(root) => self.comm.broadcast_in_place(&mut view, root as i32),
        };
        status.map_err(|e| anyhow!("NCCL: {e:?}"))?;
        Ok(())
    }
}

impl InplaceOp1 for NcclOp<'_> {
    fn name(&self) -> &'static str {
        "hone-nccl-collective"
    }

    fn cpu_fwd(&self, _: &mut candle_core::CpuStorage, _: &Layout) -> candle_core::Result<()> {
        candle_core::bail!("NCCL collectives run on CUDA tensors")
    }

    fn cuda_fwd(&self, storage: &mut CudaStorage, layout: &Layout) -> candle_core::Result<()> {
        let result = match storage.dtype() {
            DType::F32 => self.apply(storage.as_cuda_slice_mut::<f32>()?, layout),
            DType::F64 => self.apply(storage.as_cuda_slice_mut::<f64>()?, layout),
            DType::U8 => self.apply(storage.as_cuda_slice_mut::<u8>()?, layout),
            DType::BF16 => self.apply(storage.as_cuda_slice_mut::<half::bf16>()?, layout),
            DType::F16 => self.apply(storage.as_cuda_slice_mut::<half::f16>()?, layout),
            other => Err(anyhow!("NCCL collective on {other:?}")),
        };
        if let Err(e) = result {
            *self.error.borrow_mut() = Some(e);
        }
        Ok(())
    }
}

impl Communicator for NcclCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        self.run(t, Collective::Sum)
    }

    fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        self.run(t, Collective::Broadcast(root))
    }

    fn barrier(&self) -> Result<()> {
        // NCCL has no barrier: a one-element all-reduce, waited for.
        let t = Tensor::zeros(1, DType::F32, &self.device)?;
        self.all_reduce_sum(&t)?;
        self.device.synchronize().context("NCCL barrier")?;
        Ok(())
    }

    fn engine(&self) -> Engine {
        Engine::Nccl
    }

    fn device(&self) -> Device {
        self.device.clone()
    }
}
