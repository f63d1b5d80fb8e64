//! Telephony providers' wire formats. The graph knows nothing of them; a transport turns a
//! provider's messages into frames for `call_audio` and back.

mod call_log;
pub mod exotel;
pub mod outbound;
pub mod session;
