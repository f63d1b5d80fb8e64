//! Process settings, from flags and the environment (DESIGN.md §12). Pipeline shape lives in
//! TOML; how the process runs lives here.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// How `caly serve` runs.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The pipeline every incoming call runs.
    #[arg(long, env = "CALY_PIPELINE", default_value = "pipelines/default.toml")]
    pub pipeline: PathBuf,
    /// Port to listen on (Railway sets `PORT`).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    pub port: u16,
    /// Address to bind.
    #[arg(long, env = "BIND", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    pub bind: IpAddr,
}

impl ServeArgs {
    /// The socket address to listen on.
    pub fn listen(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}
