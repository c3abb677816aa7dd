//! Threads of the server: named, pinned to a core, their panics caught for the log.

/// A named thread pinned to `core` (when the core list was known) running `f`.
pub fn spawn_pinned<F>(
    name: String,
    core: Option<core_affinity::CoreId>,
    f: F,
) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    std::thread::Builder::new().name(name).spawn(move || {
        if let Some(c) = core {
            core_affinity::set_for_current(c);
        }
        f()
    })
}

/// The panic message of a thread, for the log.
pub fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}
