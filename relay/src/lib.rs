//! `xturn-relay` as a library: the parts of the `xturn` binary that other crates of the
//! workspace (the benchmark, the tests) drive directly. Today that is the AF_XDP fast
//! path ([`afxdp`]): frame rewriting, the ring/UMEM module and the forwarder loop; and the
//! batched UDP I/O ([`mmsg`]) of the socket path, which the benchmark uses too; the
//! command line and configuration file ([`config`]) and the privilege drop
//! ([`privileges`]), here so that the fuzz targets (relay/fuzz) reach them.

pub mod afxdp;
pub mod config;
pub mod mmsg;
pub mod privileges;
