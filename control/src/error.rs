//! Control-plane errors and the one mapping from them to STUN error codes.

/// Sub-reasons for 400, kept for logs and tests; all go on the wire as 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadRequest {
    Malformed,
    MissingCredentials,
    PasswordAlgorithms,
    MissingTransport,
    BothAddressFamilies,
    BadAddressFamily,
    ChannelNumber,
    ChannelInUse,
    PeerInUse,
    MissingPeer,
    UnknownMethod,
    ReservationWithEvenPort,
    /// RFC 6062: a TCP allocation asked over UDP, with DONT-FRAGMENT, EVEN-PORT or
    /// RESERVATION-TOKEN; Connect on a UDP allocation; ChannelBind on a TCP one;
    /// ConnectionBind over UDP, on a connection with an allocation, or naming no
    /// connection waiting for one.
    Tcp,
}

/// Errors a request can end in (RFC 8489 section 14.8, RFC 8656 section 19).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TurnError {
    #[error("try alternate server")]
    TryAlternate,
    #[error("bad request ({0:?})")]
    BadRequest(BadRequest),
    #[error("unauthenticated")]
    Unauthorized,
    #[error("forbidden peer address")]
    Forbidden,
    #[error("unknown comprehension-required attribute")]
    UnknownAttribute,
    #[error("allocation mismatch")]
    AllocationMismatch,
    #[error("stale nonce")]
    StaleNonce,
    #[error("address family not supported")]
    AddressFamilyNotSupported,
    #[error("wrong credentials")]
    WrongCredentials,
    #[error("unsupported transport protocol")]
    UnsupportedTransport,
    #[error("peer address family mismatch")]
    PeerAddressFamilyMismatch,
    #[error("connection already exists")]
    ConnectionAlreadyExists,
    #[error("connection timeout or failure")]
    ConnectionFailure,
    #[error("allocation quota reached")]
    AllocationQuotaReached,
    #[error("insufficient capacity")]
    InsufficientCapacity,
}

impl TurnError {
    /// The STUN error code and reason phrase that goes on the wire.
    pub fn code(self) -> (u16, &'static str) {
        match self {
            TurnError::TryAlternate => (300, "Try Alternate"),
            TurnError::BadRequest(_) => (400, "Bad Request"),
            TurnError::Unauthorized => (401, "Unauthenticated"),
            TurnError::Forbidden => (403, "Forbidden"),
            TurnError::UnknownAttribute => (420, "Unknown Attribute"),
            TurnError::AllocationMismatch => (437, "Allocation Mismatch"),
            TurnError::StaleNonce => (438, "Stale Nonce"),
            TurnError::AddressFamilyNotSupported => (440, "Address Family not Supported"),
            TurnError::WrongCredentials => (441, "Wrong Credentials"),
            TurnError::UnsupportedTransport => (442, "Unsupported Transport Protocol"),
            TurnError::PeerAddressFamilyMismatch => (443, "Peer Address Family Mismatch"),
            TurnError::ConnectionAlreadyExists => (446, "Connection Already Exists"),
            TurnError::ConnectionFailure => (447, "Connection Timeout or Failure"),
            TurnError::AllocationQuotaReached => (486, "Allocation Quota Reached"),
            TurnError::InsufficientCapacity => (508, "Insufficient Capacity"),
        }
    }
}

impl From<crate::wire::WireError> for TurnError {
    fn from(_: crate::wire::WireError) -> Self {
        TurnError::BadRequest(BadRequest::Malformed)
    }
}

impl From<crate::filter::Denied> for TurnError {
    fn from(_: crate::filter::Denied) -> Self {
        TurnError::Forbidden
    }
}
