//! `hone launch --nproc N -- COMMAND ...`: several ranks of one hone command on this machine,
//! the convenience torchrun's `--nproc-per-node` is. CPU ranks go through `mpirun` (MPI is
//! their engine); GPU ranks are started directly with torchrun's variables, one GPU each,
//! and meet through NCCL.

use std::process::{Child, Command, ExitStatus};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};

#[derive(Args, Debug)]
pub struct LaunchArgs {
    /// Ranks to start.
    #[arg(long, default_value_t = 2)]
    pub nproc: usize,
    /// The engine: MPI for CPU ranks, NCCL for GPU ranks (one GPU each).
    #[arg(long, value_enum, default_value_t = Engine::Mpi)]
    pub engine: Engine,
    /// Rank 0's rendezvous port (NCCL; torchrun's MASTER_PORT).
    #[arg(long, default_value_t = 29500)]
    pub master_port: u16,
    /// The hone command each rank runs, after `--`.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Engine {
    Mpi,
    Nccl,
}

pub fn run(args: LaunchArgs) -> Result<()> {
    if args.nproc == 0 {
        bail!("--nproc must be at least 1")
    }
    let exe = std::env::current_exe().context("cannot find the hone executable")?;
    let status = match args.engine {
        Engine::Mpi => {
            let mut mpirun = Command::new("mpirun");
            // Open MPI refuses root unless told (containers and CI run as root), counts
            // cores rather than hardware threads as slots, and binds each rank to one core
            // (hone's ranks run threads of their own).
            if is_root() {
                mpirun.arg("--allow-run-as-root");
            }
            mpirun
                .args(["--oversubscribe", "--bind-to", "none", "-n"])
                .arg(args.nproc.to_string())
                .arg(&exe)
                .args(&args.command);
            mpirun.status().map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow::anyhow!(
                    "mpirun not found: install Open MPI (scripts/install-mpi.sh) or start the ranks yourself"
                ),
                _ => anyhow::Error::new(e).context("cannot start mpirun"),
            })?
        }
        Engine::Nccl => {
            let children = (0..args.nproc)
                .map(|rank| {
                    Command::new(&exe)
                        .args(&args.command)
                        .env("RANK", rank.to_string())
                        .env("LOCAL_RANK", rank.to_string())
                        .env("WORLD_SIZE", args.nproc.to_string())
                        .env("LOCAL_WORLD_SIZE", args.nproc.to_string())
                        .env("MASTER_ADDR", "127.0.0.1")
                        .env("MASTER_PORT", args.master_port.to_string())
                        .spawn()
                        .with_context(|| format!("cannot start rank {rank}"))
                })
                .collect::<Result<Vec<_>>>()?;
            match wait_all_or_stop(children)? {
                Some(s) => s,
                None => return Ok(()),
            }
        }
    };
    if !status.success() {
        bail!("the ranks did not all succeed ({status})")
    }
    Ok(())
}

fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Wait for every rank; when one fails, stop the others, as torchrun does (they would wait
/// for it in their next collective forever). The first failure's status, or None.
fn wait_all_or_stop(mut children: Vec<Child>) -> Result<Option<ExitStatus>> {
    let mut running: Vec<usize> = (0..children.len()).collect();
    while !running.is_empty() {
        let mut still = Vec::new();
        for rank in running {
            match children[rank].try_wait()? {
                Some(status) if !status.success() => {
                    tracing::error!("rank {rank} exited with {status}: stopping the others");
                    for (other, child) in children.iter_mut().enumerate() {
                        if other != rank {
                            let _ = child.kill();
                            let _ = child.wait();
                        }
                    }
                    return Ok(Some(status));
                }
                Some(_) => {}
                None => still.push(rank),
            }
        }
        running = still;
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    Ok(None)
}
