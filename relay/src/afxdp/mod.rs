//! The AF_XDP fast path: frames the XDP program steered to an AF_XDP socket are relayed
//! by rewriting them in place in the UMEM.
//!
//! - [`frame`]: parsing and in-place rewriting of Ethernet/IP/UDP frames (ChannelData to
//!   UDP and back), safe code over byte buffers.
//! - [`ring`]: the one module with unsafe code: UMEM, AF_XDP sockets and their rings,
//!   behind a small API with an in-memory implementation for tests.
//! - [`forwarder`]: the per-thread loop, generic over the rings: metadata from the XDP
//!   program, the thread's `DataPlane` copy decides, frames are rewritten and sent on the
//!   egress interface's socket, the rest goes to a kernel-socket slow path.
//! - [`threads`]: the fast path inside the server (`--xdp`): the plan of queues per
//!   thread, the start-up (sockets bound and registered, forwarders built), the threads
//!   and their watchdog.

pub mod forwarder;
pub mod frame;
pub mod ring;
pub mod threads;
