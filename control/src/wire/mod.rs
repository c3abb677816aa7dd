//! Wire formats shared by every xturn crate: STUN messages (RFC 8489), TURN attributes
//! (RFC 8656) and ChannelData. Views check untrusted input once in `new_checked` and never
//! panic afterwards; builders produce owned buffers.

pub mod attr;
pub mod channel_data;
pub mod classic;
pub mod integrity;
pub mod stun;

pub use channel_data::{looks_like_channel_data, ChannelData};
pub use integrity::IntegrityKind;
pub use stun::{
    looks_like_stun, message_type, split_type, Class, Message, MessageBuilder, Method,
    RawAttribute, TransactionId, HEADER_LEN, MAGIC_COOKIE,
};

/// Parse errors of the wire layer. `Copy`, no allocation: these happen on hostile input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    #[error("buffer shorter than the header or a length field says")]
    Truncated,
    #[error("not a STUN message (leading bits or magic cookie)")]
    NotStun,
    #[error("length field inconsistent with the datagram")]
    BadLength,
    #[error("malformed attribute value")]
    BadAttribute,
    #[error("no MESSAGE-INTEGRITY or MESSAGE-INTEGRITY-SHA256")]
    MissingIntegrity,
    #[error("message integrity check failed")]
    IntegrityMismatch,
    #[error("FINGERPRINT wrong or not last")]
    BadFingerprint,
}
