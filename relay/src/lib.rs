//! `xturn-relay` as a library: the parts of the `xturn` binary that other crates of the
//! workspace (the benchmark, the tests) drive directly. Today that is the AF_XDP fast
//! path ([`afxdp`]): frame rewriting, the ring/UMEM module and the forwarder loop; and the
//! batched UDP I/O ([`mmsg`]) of the socket path, which the benchmark uses too.

pub mod afxdp;
pub mod mmsg;
