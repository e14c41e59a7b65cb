//! The WASI capabilities a plugin does not get, and how an attempt to use
//! them is noticed.
//!
//! The WASI context is empty (no directories, environment, arguments or
//! sockets), so these calls could never reach anything. The host still
//! replaces the entry points of files and sockets to record the attempt:
//! when the batch then fails, the failure is reported as "capability
//! denied" with what was tried, instead of as whatever error the guest made
//! of the refusal.
//!
//! Reading the (empty) environment is not counted: Rust's panic handler
//! reads `RUST_BACKTRACE` on every panic, so every trap would be mistaken
//! for a denied capability. A plugin just sees no variables.

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::{TcpSocket, UdpSocket};

/// WASI version whose entry points are replaced; the linker serves older
/// 0.2.x imports from it too (semver-compatible lookup).
const WASI: &str = "0.2.12";

/// Something a plugin tried to reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Files and directories.
    Filesystem,
    /// TCP or UDP sockets.
    Network,
}

impl std::fmt::Display for Capability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Filesystem => "the filesystem",
            Self::Network => "the network",
        })
    }
}

/// The store state that notes a denied attempt (the plugin's `HostState`);
/// a trait, so this module need not import the plugin that links it.
pub(crate) trait NotesDenials: 'static {
    /// Records that the plugin tried to reach `capability`.
    fn denied(&mut self, capability: Capability);
}

/// Replaces the WASI entry points of denied capabilities. Call after the
/// WASI interfaces are linked.
pub(crate) fn deny<T: NotesDenials>(linker: &mut Linker<T>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(&format!("wasi:filesystem/preopens@{WASI}"))?.func_wrap("get-directories", |mut s, (): ()| {
        s.data_mut().denied(Capability::Filesystem);
        Ok((Vec::<(Resource<Descriptor>, String)>::new(),))
    })?;
    deny_socket::<T, TcpSocket>(linker, "tcp-create-socket", "create-tcp-socket")?;
    deny_socket::<T, UdpSocket>(linker, "udp-create-socket", "create-udp-socket")?;
    linker.allow_shadowing(false);
    Ok(())
}

/// Replaces a socket constructor with one that records the attempt and
/// answers `access-denied`, as the empty context would.
fn deny_socket<T: NotesDenials, R: 'static>(
    linker: &mut Linker<T>,
    interface: &str,
    func: &str,
) -> wasmtime::Result<()> {
    linker.instance(&format!("wasi:sockets/{interface}@{WASI}"))?.func_wrap(func, |mut s, (_,): (IpAddressFamily,)| {
        s.data_mut().denied(Capability::Network);
        Ok((Err::<Resource<R>, _>(ErrorCode::AccessDenied),))
    })
}
