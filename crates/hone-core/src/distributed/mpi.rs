//! [`Communicator`] over MPI (the `mpi` crate on the system's Open MPI or MPICH), for CPU
//! ranks started by `mpirun`.

use std::sync::Mutex;

use anyhow::{bail, Context, Result};
use candle_core::Tensor;
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
// MPI's own trait of that name (rank, size), beside ours.
use mpi::traits::Communicator as _;
use mpi::Threading;

use super::host::{with_host_mut, HostBuf};
use super::{check_dtype, Communicator, Engine};

/// MPI's world communicator. MPI is finalised when this is dropped, so the program keeps it
/// until its ranks are done.
pub struct MpiCommunicator {
    /// Calls are serialised (MPI initialised with `MPI_THREAD_SERIALIZED`): the trainer
    /// calls from one thread, but a communicator is `Sync`.
    universe: Mutex<Universe>,
    rank: usize,
    world_size: usize,
}

impl MpiCommunicator {
    /// Initialise MPI (once per process).
    pub fn init() -> Result<Self> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .context("MPI is already initialised in this process")?;
        if threading < Threading::Serialized {
            bail!("this MPI library offers only {threading:?} threading; hone needs Serialized")
        }
        let world = universe.world();
        let (rank, world_size) = (world.rank() as usize, world.size() as usize);
        Ok(Self {
            universe: Mutex::new(universe),
            rank,
            world_size,
        })
    }

    fn world(&self) -> (std::sync::MutexGuard<'_, Universe>, SimpleCommunicator) {
        let guard = self.universe.lock().unwrap_or_else(|e| e.into_inner());
        let world = guard.world();
        (guard, world)
    }
}

impl Communicator for MpiCommunicator {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        check_dtype(t)?;
        let (_guard, world) = self.world();
        with_host_mut(t, |buf| {
            // MPI_IN_PLACE is not exposed by the crate: reduce from a copy.
            match buf {
                HostBuf::F32(v) => {
                    let send = v.to_vec();
                    world.all_reduce_into(&send[..], v, SystemOperation::sum());
                }
                HostBuf::F64(v) => {
                    let send = v.to_vec();
                    world.all_reduce_into(&send[..], v, SystemOperation::sum());
                }
                HostBuf::U8(v) => {
                    let send = v.to_vec();
                    world.all_reduce_into(&send[..], v, SystemOperation::sum());
                }
                HostBuf::Bf16(_) | HostBuf::F16(_) => {
                    bail!("MPI has no 16-bit float sum: reduce gradients in f32")
                }
            }
            Ok(())
        })
    }

    fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        check_dtype(t)?;
        let (_guard, world) = self.world();
        let root = world.process_at_rank(root as i32);
        with_host_mut(t, |buf| {
            match buf {
                HostBuf::F32(v) => root.broadcast_into(v),
                HostBuf::F64(v) => root.broadcast_into(v),
                HostBuf::U8(v) => root.broadcast_into(v),
                // The bits travel, whatever they mean.
                HostBuf::Bf16(v) => root.broadcast_into(bytemuck_u16(v)),
                HostBuf::F16(v) => root.broadcast_into(bytemuck_u16(v)),
            }
            Ok(())
        })
    }

    fn barrier(&self) -> Result<()> {
        let (_guard, world) = self.world();
        world.barrier();
        Ok(())
    }

    fn engine(&self) -> Engine {
        Engine::Mpi
    }

    fn abort(&self, code: i32) -> ! {
        // MPI_Abort ends every rank; without it this one would wait in MPI_Finalize (on
        // drop) while the others wait in their next collective.
        let (_guard, world) = self.world();
        world.abort(code)
    }
}

/// A 16-bit float slice as its bits.
fn bytemuck_u16<T: Copy>(v: &mut [T]) -> &mut [u16] {
    assert_eq!(std::mem::size_of::<T>(), 2);
    // SAFETY: T is a 2-byte plain value type (bf16 / f16, `repr(transparent)` over u16).
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u16>(), v.len()) }
}
