//! Why the token could not be brought into service, and what that means for
//! trying again.

use crate::hsm::pin::PinError;
use crate::hsm::HsmError;

/// Why the token could not be brought into service.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Hsm(#[from] HsmError),
    #[error(transparent)]
    Pin(#[from] PinError),
    #[error("{0}")]
    SelfTest(String),
    #[error("cannot start the signing threads: {0}")]
    Threads(std::io::Error),
}

impl ConnectError {
    /// A refused or locked PIN: trying again could only burn the retry counter.
    pub fn is_pin_refused(&self) -> bool {
        matches!(
            self,
            ConnectError::Hsm(HsmError::WrongPin | HsmError::PinLocked)
        )
    }

    /// Whether reopening later may cure this (as opposed to a broken setup).
    pub fn is_connection_fault(&self) -> bool {
        matches!(self, ConnectError::Hsm(error) if error.is_connection_fault())
    }
}
